# SPDX-License-Identifier: GPL-2.0-or-later
"""
Guest Physical Blocks
---------------------

The ``drgn_qemu.helpers.memory_mapping`` module computes the guest-physical
RAM blocks that QEMU's ``dump-guest-memory`` writes, exactly as
``guest_phys_blocks_append()`` does (``memory_mapping.c`` in QEMU 7.2,
``system/memory_mapping.c`` in 10.0): walk the ranges of
``address_space_memory``'s FlatView, skip those that are not RAM, are RAM
devices or are non-volatile, and merge a range into the block before it only
when it continues that block in guest-physical memory, in host-virtual memory
and in the same ``MemoryRegion``.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional

from drgn import Object, Program
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError
from drgn_qemu.helpers.memory import (
    address_space_memory,
    address_space_to_flatview,
    flat_range_size,
    flat_range_start,
    flatview_for_each_range,
    memory_region_get_ram_block,
    memory_region_has_ram_discard_manager,
    memory_region_is_nonvolatile,
    memory_region_is_ram,
    memory_region_is_ram_device,
    memory_region_name,
)
from drgn_qemu.helpers.qom import object_dynamic_cast, object_get_typename, qom_type_names
from drgn_qemu.helpers.ramblock import ramblock_name, ramblock_ptr, ramblock_used_length
from drgn_qemu.helpers.virtio_mem import ram_discard_manager_replay_populated
from drgn_qemu.ranges import MAX_GUEST_PHYS_ADDR

__all__ = (
    "GuestPhysBlock",
    "MAX_GUEST_PHYS_ADDR",
    "MAX_GUEST_PHYS_SIZE",
    "guest_phys_blocks",
    "guest_phys_blocks_merge_by_mr",
    "guest_phys_read",
)

#: A FlatRange larger than this (2^52 bytes, 4 PiB) is taken as corrupt.
MAX_GUEST_PHYS_SIZE = 1 << 52


@dataclass
class GuestPhysBlock:
    """
    One block of guest-physical RAM, mirroring QEMU's ``GuestPhysBlock``
    (``include/system/memory_mapping.h``).
    """

    #: First guest-physical address of the block.
    target_start: int
    #: Guest-physical address just past the block.
    target_end: int
    #: Host-virtual address of ``target_start`` in the QEMU process.
    host_addr: int
    #: Address of the ``MemoryRegion`` backing the block.
    mr: int
    #: Name of that memory region.
    mr_name: str = ""
    #: How many FlatRanges were merged into the block.
    ranges: int = 1

    @property
    def size(self) -> int:
        """Bytes in the block (``target_end - target_start``)."""
        return self.target_end - self.target_start


@takes_program_or_default
def guest_phys_blocks_merge_by_mr(prog: Program) -> bool:
    """
    Return whether this QEMU refuses to merge ranges of different memory
    regions into one block: true when its ``GuestPhysBlock`` has an ``mr``
    member (the check and the member came together), and when the type is
    not in the debug info.
    """
    try:
        return prog.type("GuestPhysBlock").has_member("mr")
    except LookupError:
        return True


@takes_program_or_default
def guest_phys_blocks(prog: Program, target_page_size: int = 4096) -> List[GuestPhysBlock]:
    """
    Return the guest-physical RAM blocks of ``address_space_memory``, as
    QEMU's ``guest_phys_blocks_append()`` computes them for
    ``dump-guest-memory``.

    :param target_page_size: guest page size (only used by QEMU before 2.5)
    :raises CorruptStructureError: if the FlatView is inconsistent (ranges
        out of order, sizes beyond :data:`MAX_GUEST_PHYS_SIZE`, ...)
    :raises UnsupportedError: for a region with a ``RamDiscardManager``
        other than virtio-mem
    """
    view = address_space_to_flatview(address_space_memory(prog))
    by_mr = guest_phys_blocks_merge_by_mr(prog)
    # MemoryRegion is a QOM object since QEMU 2.0: check that a range's
    # region is one, or damage would make RAM look like I/O and vanish.
    qom = prog.type("MemoryRegion").has_member("parent_obj")
    blocks: List[GuestPhysBlock] = []
    for fr in flatview_for_each_range(view):
        mr = fr.mr.read_()
        if not mr:
            raise CorruptStructureError(f"FlatRange at 0x{fr.value_():x} has no MemoryRegion")
        if qom and not object_dynamic_cast(mr, qom_type_names(mr.prog_, "memory-region")):
            raise CorruptStructureError(
                f"FlatRange at 0x{fr.value_():x} points at 0x{mr.value_():x}, which is not a "
                f"MemoryRegion (its QOM type is {object_get_typename(mr)!r})"
            )
        if not memory_region_is_ram(mr):
            # Only a ROM device has RAM but is not RAM: anything else with
            # a RAMBlock is RAM whose flag was damaged, not I/O to skip.
            if (
                mr.type_.type.has_member("ram_block")
                and mr.ram_block
                and not (mr.type_.type.has_member("rom_device") and mr.rom_device)
            ):
                raise CorruptStructureError(
                    f"MemoryRegion {memory_region_name(mr)!r} at 0x{mr.value_():x} has a "
                    "RAMBlock but is neither RAM nor a ROM device"
                )
            continue
        if memory_region_is_ram_device(mr) or memory_region_is_nonvolatile(mr):
            continue
        target_start = flat_range_start(fr)
        size = flat_range_size(fr)
        if size > MAX_GUEST_PHYS_SIZE or target_start + size > MAX_GUEST_PHYS_ADDR:
            raise CorruptStructureError(
                f"FlatRange at 0x{fr.value_():x} ({memory_region_name(mr)!r}) has an "
                f"impossible size {size:#x} at {target_start:#x} (guest-physical addresses "
                f"end at {MAX_GUEST_PHYS_ADDR:#x})"
            )
        offset_in_region = fr.offset_in_region.value_()
        if memory_region_has_ram_discard_manager(mr):
            # Special sparse regions (virtio-mem): only the populated parts.
            for offset, n in ram_discard_manager_replay_populated(mr, offset_in_region, size):
                section = _Section(fr, mr, target_start + offset - offset_in_region, n, offset)
                _add_section(blocks, section, by_mr, target_page_size)
        else:
            section = _Section(fr, mr, target_start, size, offset_in_region)
            _add_section(blocks, section, by_mr, target_page_size)
    return blocks


@dataclass(frozen=True)
class _Section:
    """QEMU's ``MemoryRegionSection`` of a RAM range, and the ``FlatRange`` it is from."""

    fr: Object
    mr: Object
    #: ``offset_within_address_space``: where it starts, guest-physical.
    target_start: int
    size: int
    offset_in_region: int


def _add_section(
    blocks: List[GuestPhysBlock], section: _Section, by_mr: bool, target_page_size: int
) -> None:
    """QEMU's ``guest_phys_block_add_section()``: a new block, or the last one grown."""
    fr, mr, target_start, size = section.fr, section.mr, section.target_start, section.size
    offset_in_region = section.offset_in_region
    target_end = target_start + size
    block, offset = memory_region_get_ram_block(mr, target_page_size)
    offset += offset_in_region
    # QEMU's ramblock_ptr() asserts that the start is in the block; a
    # range running past its end would be read from other memory.
    used = ramblock_used_length(block)
    if offset + size > used:
        raise CorruptStructureError(
            f"FlatRange at 0x{fr.value_():x} ({memory_region_name(mr)!r}, guest-physical "
            f"{target_start:#x}-{target_end - 1:#x}) runs past the end of RAMBlock "
            f"{ramblock_name(block)!r} (offset {offset:#x} + size {size:#x} > used length "
            f"{used:#x})"
        )
    host_addr = ramblock_ptr(block, offset).value_()
    predecessor: Optional[GuestPhysBlock] = blocks[-1] if blocks else None
    if predecessor is not None:
        # The memory API guarantees monotonically increasing traversal.
        if predecessor.target_end > target_start:
            raise CorruptStructureError(
                f"FlatView ranges out of order: {target_start:#x} follows a block "
                f"ending at {predecessor.target_end:#x}"
            )
        if (
            predecessor.target_end < target_start
            or predecessor.host_addr + predecessor.size != host_addr
            or (by_mr and predecessor.mr != mr.value_())
        ):
            predecessor = None
    if predecessor is None:
        blocks.append(
            GuestPhysBlock(target_start, target_end, host_addr, mr.value_(), memory_region_name(mr))
        )
    else:
        predecessor.target_end = target_end
        predecessor.ranges += 1


@takes_program_or_default
def guest_phys_read(
    prog: Program,
    blocks: List[GuestPhysBlock],
    paddr: int,
    size: int,
    read: Optional[Callable[[int, int], bytes]] = None,
) -> bytes:
    """
    Read guest-physical memory through the guest RAM blocks that hold it
    (the RAM part of QEMU's ``cpu_physical_memory_read()``).

    :param blocks: from :func:`guest_phys_blocks`
    :param read: reads QEMU's memory, ``(host address, size) -> bytes``
        (default: ``prog.read``)
    :raises LookupError: if part of the range is not guest RAM
    """
    read = read if read is not None else prog.read
    out = []
    while size > 0:
        for block in blocks:
            if block.target_start <= paddr < block.target_end:
                n = min(size, block.target_end - paddr)
                out.append(read(block.host_addr + (paddr - block.target_start), n))
                paddr += n
                size -= n
                break
        else:
            raise LookupError(f"guest-physical address 0x{paddr:x} is not in guest RAM")
    return b"".join(out)
