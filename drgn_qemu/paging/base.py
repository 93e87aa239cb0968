# SPDX-License-Identifier: GPL-2.0-or-later
"""
Guest-physical memory as a page walk reads it: RAM, or zeros; I/O, or not.
"""

import bisect
from typing import Callable, List, Tuple

from drgn import Program

from drgn_qemu.helpers.memory import (
    address_space_memory,
    address_space_to_flatview,
    flat_range_size,
    flat_range_start,
    flatview_for_each_range,
    memory_region_is_ram,
    memory_region_is_romd,
)
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = ("GuestPhysReader", "IoRegions")


class GuestPhysReader:
    """
    Reads guest-physical memory as a vCPU's page walk does
    (``address_space_ldq()``): RAM through the dump's blocks, anything else
    as zeros.

    :param blocks: the guest-physical RAM blocks
    :param read: reads QEMU's memory, ``(host address, size) -> bytes``
    """

    def __init__(self, blocks: List[GuestPhysBlock], read: Callable[[int, int], bytes]) -> None:
        self._blocks = sorted(blocks, key=lambda b: b.target_start)
        self._starts = [b.target_start for b in self._blocks]
        self._read = read

    def read(self, paddr: int, size: int) -> bytes:
        """*size* bytes at guest-physical *paddr*, zeros where there is no RAM."""
        out = bytearray(size)
        end = paddr + size
        i = max(bisect.bisect_right(self._starts, paddr) - 1, 0)
        for block in self._blocks[i:]:
            if block.target_start >= end:
                break
            lo, hi = max(paddr, block.target_start), min(end, block.target_end)
            if lo < hi:
                out[lo - paddr : hi - paddr] = self._read(
                    block.host_addr + lo - block.target_start, hi - lo
                )
        return bytes(out)


class IoRegions:
    """
    QEMU's ``cpu_physical_memory_is_io()`` (``address_space_is_io()`` in
    10.2) for the system memory: whether a guest-physical address is
    neither RAM nor a ROM device in ROMD mode (unassigned memory is I/O).
    """

    def __init__(self, prog: Program) -> None:
        ranges: List[Tuple[int, int, bool]] = []
        view = address_space_to_flatview(address_space_memory(prog))
        for fr in flatview_for_each_range(view):
            mr = fr.mr.read_()
            start = flat_range_start(fr)
            ram = bool(mr) and (memory_region_is_ram(mr) or memory_region_is_romd(mr))
            ranges.append((start, start + flat_range_size(fr), ram))
        ranges.sort()
        self._ranges = ranges
        self._starts = [r[0] for r in ranges]

    def is_io(self, paddr: int) -> bool:
        """Whether *paddr* is I/O (or nothing), as a page walk sees it."""
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i < 0:
            return True
        start, end, ram = self._ranges[i]
        return not (start <= paddr < end and ram)
