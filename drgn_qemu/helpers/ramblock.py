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

from typing import Iterator, Optional

from drgn import Object, Program, cast, sizeof
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError
from drgn_qemu.helpers.qom import object_dynamic_cast, object_get_typename, qom_type_names
from drgn_qemu.helpers.queue import DEFAULT_LIST_LIMIT, queue_for_each

__all__ = (
    "RAM_SHARED",
    "for_each_ram_block",
    "host_memory_backend_file_mem_path",
    "qemu_ram_get_fd_offset",
    "qemu_ram_is_shared",
    "qemu_ram_pagesize",
    "ramblock_backend",
    "ramblock_guest_memfd",
    "qemu_get_ram_block",
    "qemu_get_ram_ptr",
    "ram_addr_mask",
    "ramblock_max_length",
    "ramblock_name",
    "ramblock_ptr",
    "ramblock_used_length",
)

#: ``RAMBlock.flags`` bit of memory mapped shared (``share=on``, memfd,
#: files), ``include/exec/memory.h`` (the same bit in every QEMU).
RAM_SHARED = 1 << 1


@takes_program_or_default
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


@takes_program_or_default
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


@takes_program_or_default
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


@takes_program_or_default
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


def qemu_ram_is_shared(block: Object) -> bool:
    """
    Return whether a RAM block is mapped shared (``qemu_ram_is_shared()``:
    ``RAM_SHARED`` in ``block->flags``): ``share=on``, memfd, files.

    :param block: ``RAMBlock *``
    """
    return bool(block.flags.value_() & RAM_SHARED)


def qemu_ram_pagesize(block: Object) -> Optional[int]:
    """
    Return the host page size backing a RAM block (``qemu_ram_pagesize()``:
    ``block->page_size``; larger than the host's base page on hugetlbfs),
    or None for a QEMU without the member.

    :param block: ``RAMBlock *``
    """
    if not block.type_.type.has_member("page_size"):
        return None
    return block.page_size.value_()


def qemu_ram_get_fd_offset(block: Object) -> Optional[int]:
    """
    Return where a file-backed RAM block starts in its file
    (``qemu_ram_get_fd_offset()``: ``block->fd_offset``), or None for a
    QEMU without the member.

    :param block: ``RAMBlock *``
    """
    if not block.type_.type.has_member("fd_offset"):
        return None
    return block.fd_offset.value_()


def ramblock_guest_memfd(block: Object) -> bool:
    """
    Return whether a RAM block has a ``guest_memfd`` (a confidential
    guest's private memory, which is not in QEMU's address space; QEMU 9.1
    and later: ``block->guest_memfd >= 0``).

    :param block: ``RAMBlock *``
    """
    if not block.type_.type.has_member("guest_memfd"):
        return False
    return block.guest_memfd.value_() >= 0


def ramblock_backend(block: Object) -> Optional[Object]:
    """
    Return the ``-object memory-backend-*`` that owns a RAM block (the
    owner of ``block->mr``, a ``HostMemoryBackend``), as an ``Object *``,
    or None for RAM a device or the machine allocated itself.

    :param block: ``RAMBlock *``
    """
    if not block.type_.type.has_member("mr"):
        return None
    mr = block.mr.read_()
    if not mr or not mr.type_.type.has_member("owner"):
        return None
    owner = mr.owner.read_()
    if not owner:
        return None
    backend = object_dynamic_cast(owner, qom_type_names(owner.prog_, "memory-backend"))
    return backend if backend else None


def host_memory_backend_file_mem_path(backend: Object) -> Optional[str]:
    """
    Return the ``mem-path`` of a ``memory-backend-file``
    (``HostMemoryBackendFile.mem_path``), or None for another backend or
    where the debug info lacks the type.

    :param backend: ``Object *`` of a ``HostMemoryBackend``
    """
    if object_get_typename(backend) != "memory-backend-file":
        return None
    try:
        file_backend = cast("HostMemoryBackendFile *", backend)
    except LookupError:
        return None
    path = file_backend.mem_path.read_()
    return path.string_().decode(errors="surrogateescape") if path else None
