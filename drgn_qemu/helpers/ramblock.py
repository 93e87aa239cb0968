# SPDX-License-Identifier: GPL-2.0-or-later
"""
RAM Blocks
----------

The ``drgn_qemu.helpers.ramblock`` module reads QEMU's ``RAMBlock`` list,
``ram_list.blocks`` (``include/exec/ramlist.h``, ``include/exec/ramblock.h``;
``exec.c`` before QEMU 5.2, ``softmmu/physmem.c`` and ``system/physmem.c``
after). The list has been a ``QTAILQ`` (before 2.3) and a ``QLIST`` (since),
and a block's size has been ``length`` (before 2.2) and
``used_length``/``max_length`` (since): both are told apart from the debug
info.
"""

from typing import Iterator

from drgn import Object, Program, sizeof

from drgn_qemu.errors import CorruptStructureError
from drgn_qemu.helpers.queue import DEFAULT_LIST_LIMIT, queue_for_each

__all__ = (
    "for_each_ram_block",
    "qemu_get_ram_block",
    "qemu_get_ram_ptr",
    "ram_addr_mask",
    "ramblock_max_length",
    "ramblock_name",
    "ramblock_ptr",
    "ramblock_used_length",
)


def for_each_ram_block(prog: Program, limit: int = DEFAULT_LIST_LIMIT) -> Iterator[Object]:
    """
    Iterate over all RAM blocks (``RAMBLOCK_FOREACH(block)`` over
    ``ram_list.blocks``).

    :return: Iterator of ``RAMBlock *`` objects.
    """
    return queue_for_each(prog["ram_list"].blocks, "next", limit)


def ramblock_name(block: Object) -> str:
    """
    Return the name of a RAM block (``qemu_ram_get_idstr()``: ``block->idstr``).

    :param block: ``RAMBlock *``
    """
    return block.idstr.string_().decode(errors="replace")


def ramblock_used_length(block: Object) -> int:
    """
    Return the bytes of a RAM block in use (``qemu_ram_get_used_length()``:
    ``block->used_length``, or ``block->length`` before QEMU 2.2).

    :param block: ``RAMBlock *``
    """
    if block.type_.type.has_member("used_length"):
        return block.used_length.value_()
    return block.length.value_()


def ramblock_max_length(block: Object) -> int:
    """
    Return the bytes reserved for a RAM block (``block->max_length``, or
    ``block->length`` before QEMU 2.2).

    :param block: ``RAMBlock *``
    """
    if block.type_.type.has_member("max_length"):
        return block.max_length.value_()
    return block.length.value_()


def ram_addr_mask(prog: Program) -> int:
    """
    Return the mask of a ``ram_addr_t`` (all ones in its width), for
    arithmetic that QEMU does in unsigned ``ram_addr_t``.
    """
    try:
        size = sizeof(prog.type("ram_addr_t"))
    except LookupError:
        size = 8
    return (1 << (8 * size)) - 1


def qemu_get_ram_block(prog: Program, ram_addr: int) -> Object:
    """
    Return the RAM block that contains a ``ram_addr_t`` address, like QEMU's
    ``qemu_get_ram_block()``.

    QEMU's test ``addr - block->offset < block->max_length`` is done in
    unsigned arithmetic: an address below a block's offset wraps around to a
    huge number and does not match. Python integers do not wrap, so this masks
    the difference to the width of ``ram_addr_t``.

    :param ram_addr: offset in QEMU's ``ram_addr_t`` space
    :return: ``RAMBlock *``
    :raises CorruptStructureError: if no block contains the address (QEMU
        aborts with "Bad ram offset")
    """
    mask = ram_addr_mask(prog)
    for block in for_each_ram_block(prog):
        if (ram_addr - block.offset.value_()) & mask < ramblock_max_length(block):
            return block
    raise CorruptStructureError(f"Bad ram offset {ram_addr:x}: no RAMBlock in ram_list contains it")


def ramblock_ptr(block: Object, offset: int) -> Object:
    """
    Return the host address of an offset in a RAM block (``ramblock_ptr()``:
    ``block->host + offset``).

    :param block: ``RAMBlock *``
    :param offset: offset in the block
    :return: ``uint8_t *`` in QEMU's address space
    """
    host = block.host.read_()
    if not host:
        raise CorruptStructureError(
            f"RAMBlock {ramblock_name(block)!r} at 0x{block.value_():x} has no host memory"
        )
    if not 0 <= offset < ramblock_max_length(block):
        raise CorruptStructureError(
            f"offset {offset:#x} is outside RAMBlock {ramblock_name(block)!r}"
        )
    return host + offset


def qemu_get_ram_ptr(prog: Program, ram_addr: int) -> Object:
    """
    Return the host address of a ``ram_addr_t`` address (``qemu_get_ram_ptr()``
    of QEMU before 2.5: the block that contains it, then ``block->host`` plus
    the offset in the block).

    :return: ``uint8_t *`` in QEMU's address space
    """
    block = qemu_get_ram_block(prog, ram_addr)
    offset = (ram_addr - block.offset.value_()) & ram_addr_mask(prog)
    return ramblock_ptr(block, offset)
