# SPDX-License-Identifier: GPL-2.0-or-later
"""
Guest memory mappings
---------------------

The ``drgn_qemu.mapping`` module keeps a list of guest memory mappings
(guest-physical to guest-virtual) exactly as QEMU's ``MemoryMappingList``
(``system/memory_mapping.c``) does when ``dump-guest-memory`` runs with
``paging=true``: the order of the list, the merging of each page a page
walk adds, and the ``begin``/``length`` filter, quirks included (a merge
that extends a mapping backwards moves its virtual start but not its
physical one), so that the program headers equal QEMU's.

QEMU scans the list from its head for each page; here the mappings that
can take a page are found by their virtual-minus-physical offset (both
kinds of merge need it equal), so a walk of many pages stays fast.
"""

import bisect
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

__all__ = ("MemoryMapping", "MemoryMappingList")

_MASK = (1 << 64) - 1


@dataclass
class MemoryMapping:
    """QEMU's ``MemoryMapping``: *length* bytes at *phys_addr*, seen at *virt_addr*."""

    phys_addr: int
    virt_addr: int
    length: int
    #: Creation order: among mappings at the same *phys_addr*, QEMU's list
    #: holds the newest first.
    seq: int = 0

    def _order(self) -> Tuple[int, int]:
        return (self.phys_addr, -self.seq)

    def _key(self) -> int:
        return (self.virt_addr - self.phys_addr) & _MASK


class MemoryMappingList:
    """QEMU's ``MemoryMappingList``, sorted by physical address."""

    def __init__(self) -> None:
        self._maps: List[MemoryMapping] = []
        self._orders: List[Tuple[int, int]] = []
        # Mappings by virt - phys, each list in the list's order.
        self._by_key: Dict[int, List[MemoryMapping]] = {}
        self._last: Optional[MemoryMapping] = None
        self._seq = 0

    def __len__(self) -> int:
        return len(self._maps)

    def __iter__(self) -> Iterator[MemoryMapping]:
        return iter(self._maps)

    def create_new_memory_mapping(self, phys_addr: int, virt_addr: int, length: int) -> None:
        """QEMU's ``create_new_memory_mapping()``: inserted before the first at or above it."""
        self._seq += 1
        m = MemoryMapping(phys_addr, virt_addr, length, self._seq)
        i = bisect.bisect_left(self._orders, m._order())
        self._maps.insert(i, m)
        self._orders.insert(i, m._order())
        self._index(m)
        self._last = m

    def _index(self, m: MemoryMapping) -> None:
        same = self._by_key.setdefault(m._key(), [])
        same.insert(bisect.bisect_left([x._order() for x in same], m._order()), m)

    def _unindex(self, m: MemoryMapping) -> None:
        same = self._by_key[m._key()]
        same.remove(m)
        if not same:
            del self._by_key[m._key()]

    def add_merge_sorted(self, phys_addr: int, virt_addr: int, length: int) -> None:
        """
        QEMU's ``memory_mapping_list_add_merge_sorted()``: grow the last
        mapping touched if the page continues it; else grow or merge into
        the first mapping of the list it continues or overlaps with the
        same virtual-to-physical offset (stopping at the first mapping past
        its end); else a new mapping.
        """
        if not self._maps:
            self.create_new_memory_mapping(phys_addr, virt_addr, length)
            return
        last = self._last
        if (
            last is not None
            and phys_addr == last.phys_addr + last.length
            and virt_addr == (last.virt_addr + last.length) & _MASK
        ):
            last.length += length
            return
        key = (virt_addr - phys_addr) & _MASK
        for m in self._by_key.get(key, ()):
            if m.phys_addr > phys_addr + length:
                break  # QEMU's scan stops at the first mapping past the page
            end = m.phys_addr + m.length
            if end == phys_addr:  # mapping_contiguous()
                m.length += length
                self._last = m
                return
            if phys_addr < end:  # mapping_have_same_region(), no conflict
                self._merge(m, virt_addr, length)
                self._last = m
                return
        self.create_new_memory_mapping(phys_addr, virt_addr, length)

    def _merge(self, m: MemoryMapping, virt_addr: int, length: int) -> None:
        """QEMU's ``memory_mapping_merge()``: its physical start stays."""
        self._unindex(m)
        if virt_addr < m.virt_addr:
            m.length += m.virt_addr - virt_addr
            m.virt_addr = virt_addr
        # hwaddr arithmetic: the page at the top of the address space ends at 0.
        if (virt_addr + length) & _MASK > (m.virt_addr + m.length) & _MASK:
            m.length = (virt_addr + length - m.virt_addr) & _MASK
        self._index(m)

    def filter(self, begin: int, length: int) -> None:
        """QEMU's ``memory_mapping_filter()``: clip to guest-physical ``[begin, begin + length)``."""
        kept = []
        for m in self._maps:
            if m.phys_addr >= begin + length or m.phys_addr + m.length <= begin:
                continue
            if m.phys_addr < begin:
                m.length -= begin - m.phys_addr
                if m.virt_addr:
                    m.virt_addr = (m.virt_addr + begin - m.phys_addr) & _MASK
                m.phys_addr = begin
            if m.phys_addr + m.length > begin + length:
                m.length -= m.phys_addr + m.length - begin - length
            kept.append(m)
        self._maps = kept
        self._orders = [m._order() for m in kept]
        self._by_key = {}
        for m in kept:
            self._by_key.setdefault(m._key(), []).append(m)
        self._last = None
