# SPDX-License-Identifier: GPL-2.0-or-later
"""
Memory API
----------

The ``drgn_qemu.helpers.memory`` module reads QEMU's memory API
(``include/exec/memory.h``, ``system/memory.c``): ``MemoryRegion``,
``AddressSpace`` and the ``FlatView`` that QEMU renders from an address
space's region tree, with its array of ``FlatRange``.

Differences between QEMU versions are told apart from the debug info: a
``MemoryRegion`` points at its ``RAMBlock`` through ``ram_block`` since QEMU
2.5 and holds a ``ram_addr`` before that; ``ram_device`` (2.9) and
``nonvolatile`` (3.1) exist only in newer versions.
"""

from typing import Iterator, Tuple

from drgn import FaultError, Object, Program
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError, NotQemuError
from drgn_qemu.helpers.int128 import int128_get64
from drgn_qemu.helpers.qom import (
    object_dynamic_cast,
    object_get_canonical_path_component,
    qom_type_names,
)
from drgn_qemu.helpers.queue import qtailq_for_each
from drgn_qemu.helpers.ramblock import qemu_get_ram_block, ram_addr_mask, ramblock_ptr

__all__ = (
    "MAX_ALIAS_DEPTH",
    "MAX_FLAT_RANGES",
    "address_space_memory",
    "address_space_to_flatview",
    "flat_range_size",
    "flat_range_start",
    "flatview_for_each_range",
    "for_each_address_space",
    "memory_region_is_rom",
    "memory_region_is_romd",
    "memory_region_type",
    "memory_region_alias_target",
    "memory_region_get_ram_block",
    "memory_region_get_ram_ptr",
    "memory_region_has_ram_discard_manager",
    "memory_region_is_nonvolatile",
    "memory_region_is_ram",
    "memory_region_is_ram_device",
    "memory_region_name",
)

#: The most ranges a FlatView may have before it is declared corrupt.
MAX_FLAT_RANGES = 1 << 20
#: The longest chain of aliases followed before it is declared cyclic.
MAX_ALIAS_DEPTH = 256


@takes_program_or_default
def address_space_memory(prog: Program) -> Object:
    """
    Return QEMU's system memory address space, the global
    ``address_space_memory`` (an ``AddressSpace``).

    :raises NotQemuError: if the program has no such variable
    """
    try:
        return prog["address_space_memory"]
    except KeyError:
        raise NotQemuError(
            "the program has no 'address_space_memory': it is not a QEMU system "
            "emulator, or its debug info is not loaded"
        ) from None


def address_space_to_flatview(as_: Object) -> Object:
    """
    Return the current ``FlatView *`` of an address space
    (``address_space_to_flatview()``: ``as->current_map``).

    :param as_: ``AddressSpace`` or ``AddressSpace *``
    """
    view = as_.current_map.read_()
    if not view:
        raise CorruptStructureError(
            f"AddressSpace at 0x{_address(as_):x} has no current_map (no FlatView)"
        )
    return view


def flatview_for_each_range(view: Object, limit: int = MAX_FLAT_RANGES) -> Iterator[Object]:
    """
    Iterate over the ranges of a FlatView (``FOR_EACH_FLAT_RANGE(var, view)``:
    ``view->ranges[0 .. view->nr - 1]``).

    :param view: ``FlatView *``
    :param limit: most ranges accepted before the view is declared corrupt
    :return: Iterator of ``FlatRange *`` objects.
    """
    nr = view.nr.value_()
    if view.type_.type.has_member("nr_allocated"):
        allocated = view.nr_allocated.value_()
        if nr > allocated:
            raise CorruptStructureError(
                f"FlatView at 0x{view.value_():x} has nr {nr} > nr_allocated {allocated}"
            )
    if nr > limit:
        raise CorruptStructureError(
            f"FlatView at 0x{view.value_():x} has {nr} ranges (more than {limit})"
        )
    ranges = view.ranges.read_()
    if nr and not ranges:
        raise CorruptStructureError(f"FlatView at 0x{view.value_():x} has nr {nr} but no ranges")
    for i in range(nr):
        yield ranges + i


def memory_region_name(mr: Object) -> str:
    """
    Return the name of a memory region (``memory_region_name()``:
    ``mr->name``, or for a region without one its name in its QOM parent),
    ``""`` if it has neither, or ``"?"`` if the name cannot be read (the name
    only labels a region, so a crashed process's damaged name should not stop
    a dump).

    :param mr: ``MemoryRegion *``
    """
    name = mr.name.read_()
    try:
        if name:
            return name.string_().decode(errors="replace")
        return object_get_canonical_path_component(mr) or ""
    except (FaultError, LookupError, CorruptStructureError):
        return "?"


def _flag(mr: Object, name: str) -> bool:
    """
    A ``bool`` member of a memory region. QEMU only ever stores 0 or 1 in
    one: any other byte is damage, and these flags decide what is dumped.
    """
    raw = mr.prog_.read_u8(mr.member_(name).address_)
    if raw > 1:
        raise CorruptStructureError(
            f"MemoryRegion at 0x{mr.value_():x} has {name} = {raw:#x}, which is not a bool"
        )
    return bool(raw)


def memory_region_is_ram(mr: Object) -> bool:
    """
    Return whether a memory region is RAM (``memory_region_is_ram()``:
    ``mr->ram``; ROM is RAM too).

    :param mr: ``MemoryRegion *``
    """
    return _flag(mr, "ram")


def memory_region_is_ram_device(mr: Object) -> bool:
    """
    Return whether a memory region is a RAM device, e.g. a VFIO BAR
    (``memory_region_is_ram_device()``: ``mr->ram_device``; False where
    QEMU has no such field).

    :param mr: ``MemoryRegion *``
    """
    return mr.type_.type.has_member("ram_device") and _flag(mr, "ram_device")


def memory_region_is_nonvolatile(mr: Object) -> bool:
    """
    Return whether a memory region is non-volatile, e.g. an NVDIMM
    (``memory_region_is_nonvolatile()``: ``mr->nonvolatile``; False where
    QEMU has no such field).

    :param mr: ``MemoryRegion *``
    """
    return mr.type_.type.has_member("nonvolatile") and _flag(mr, "nonvolatile")


def memory_region_has_ram_discard_manager(mr: Object) -> bool:
    """
    Return whether a memory region has a ``RamDiscardManager`` that decides
    which parts of it are populated, as virtio-mem does
    (``memory_region_has_ram_discard_manager()``: ``mr->rdm``).

    :param mr: ``MemoryRegion *``
    """
    return mr.type_.type.has_member("rdm") and bool(mr.rdm)


def memory_region_alias_target(mr: Object) -> Tuple[Object, int]:
    """
    Return the region an alias chain ends at and the offset of *mr*'s start
    in it: ``alias`` followed, each ``alias_offset`` added, as QEMU's
    ``memory_region_get_ram_ptr()`` and ``memory_region_type()`` follow it.
    A region that is no alias is its own target, at offset 0.

    :param mr: ``MemoryRegion *``
    :return: ``(MemoryRegion *, offset)``
    :raises CorruptStructureError: for a cyclic chain, or an alias of
        something that is not a ``MemoryRegion``
    """
    qom = mr.type_.type.has_member("parent_obj")
    offset = 0
    for depth in range(MAX_ALIAS_DEPTH + 1):
        alias = mr.alias.read_()
        if not alias:
            return mr, offset
        if depth == MAX_ALIAS_DEPTH:
            break
        if qom and not object_dynamic_cast(alias, qom_type_names(alias.prog_, "memory-region")):
            raise CorruptStructureError(
                f"MemoryRegion at 0x{mr.value_():x} is an alias of 0x{alias.value_():x}, "
                "which is not a MemoryRegion"
            )
        offset += mr.alias_offset.value_()
        mr = alias
    raise CorruptStructureError(
        f"MemoryRegion at 0x{mr.value_():x} has an alias chain longer than "
        f"{MAX_ALIAS_DEPTH}; it is cyclic"
    )


def memory_region_get_ram_block(mr: Object, target_page_size: int = 4096) -> Tuple[Object, int]:
    """
    Return the RAM block that holds a RAM memory region and the offset of the
    region's start in it, as QEMU's ``memory_region_get_ram_ptr()`` finds
    them: follow ``alias`` chains adding each ``alias_offset``, then take
    ``mr->ram_block`` (QEMU 2.5 and later) or look ``mr->ram_addr`` up in
    ``ram_list`` with ``qemu_get_ram_block()`` (older QEMU). Where the
    ``RAMBlock`` has an ``mr`` member, it must point back at the region.

    :param mr: ``MemoryRegion *``
    :param target_page_size: guest page size, for the ``TARGET_PAGE_MASK``
        that old QEMU applies to ``ram_addr``
    :return: ``(RAMBlock *, offset)``
    :raises CorruptStructureError: for a cyclic alias chain, a region
        without a block, or a block that belongs to another region
    """
    prog = mr.prog_
    mr, offset = memory_region_alias_target(mr)
    if mr.type_.type.has_member("ram_block"):
        block = mr.ram_block.read_()
        if not block:
            raise CorruptStructureError(
                f"MemoryRegion {memory_region_name(mr)!r} at 0x{mr.value_():x} has no ram_block"
            )
        if block.type_.type.has_member("mr") and block.mr.value_() != mr.value_():
            raise CorruptStructureError(
                f"MemoryRegion {memory_region_name(mr)!r} at 0x{mr.value_():x} points at a "
                f"RAMBlock (0x{block.value_():x}) that belongs to another region "
                f"(0x{block.mr.value_():x})"
            )
        return block, offset
    ram_addr = mr.ram_addr.value_() & ~(target_page_size - 1)
    block = qemu_get_ram_block(prog, ram_addr)
    return block, offset + ((ram_addr - block.offset.value_()) & ram_addr_mask(prog))


def memory_region_get_ram_ptr(mr: Object, target_page_size: int = 4096) -> Object:
    """
    Return the host address of the start of a RAM memory region, like QEMU's
    ``memory_region_get_ram_ptr()``: the region's RAM block (see
    :func:`memory_region_get_ram_block`), ``block->host`` plus the offset.

    :param mr: ``MemoryRegion *``
    :param target_page_size: guest page size, for the ``TARGET_PAGE_MASK``
        that old QEMU applies to ``ram_addr``
    :return: ``void *`` in QEMU's address space
    """
    block, offset = memory_region_get_ram_block(mr, target_page_size)
    return Object(mr.prog_, "void *", ramblock_ptr(block, offset).value_())


def _address(obj: Object) -> int:
    if obj.type_.unaliased().kind.name == "POINTER":
        return obj.value_()
    return obj.address_ or 0


def flat_range_start(fr: Object) -> int:
    """
    Return the guest address where a ``FlatRange *`` starts (``int128_get64(fr->addr.start)``).

    :param fr: ``FlatRange *``
    """
    return int128_get64(fr.addr.start)


def flat_range_size(fr: Object) -> int:
    """
    Return the size of a ``FlatRange *`` (``int128_get64(fr->addr.size)``).

    :param fr: ``FlatRange *``
    """
    return int128_get64(fr.addr.size)


@takes_program_or_default
def for_each_address_space(prog: Program) -> Iterator[Object]:
    """
    Iterate over QEMU's address spaces, the ``address_spaces`` list
    (``QTAILQ_FOREACH(as, &address_spaces, address_spaces_link)``).

    :return: Iterator of ``AddressSpace *`` objects.
    """
    try:
        head = prog["address_spaces"]
    except KeyError:
        raise NotQemuError("the program has no 'address_spaces' list") from None
    return qtailq_for_each(head, "address_spaces_link")


def memory_region_is_romd(mr: Object) -> bool:
    """
    Return whether a ROM device region is in ROMD mode, read as RAM
    (``memory_region_is_romd()``: ``mr->rom_device && mr->romd_mode``).

    :param mr: ``MemoryRegion *``
    """
    return _flag(mr, "rom_device") and _flag(mr, "romd_mode")


def memory_region_is_rom(mr: Object) -> bool:
    """
    Return whether a memory region is ROM (``memory_region_is_rom()``:
    ``mr->ram && mr->readonly``).

    :param mr: ``MemoryRegion *``
    """
    return _flag(mr, "ram") and _flag(mr, "readonly")


def memory_region_type(mr: Object) -> str:
    """
    Return the kind of a memory region as ``info mtree`` names it
    (``memory_region_type()``): ``ramd``, ``romd``, ``rom``, ``ram`` or
    ``i/o``; an alias has its target's kind.

    :param mr: ``MemoryRegion *``
    """
    mr, _ = memory_region_alias_target(mr)
    if memory_region_is_ram_device(mr):
        return "ramd"
    if memory_region_is_romd(mr):
        return "romd"
    if memory_region_is_rom(mr):
        return "rom"
    if memory_region_is_ram(mr):
        return "ram"
    return "i/o"
