# SPDX-License-Identifier: GPL-2.0-or-later
"""
virtio-mem
----------

The ``drgn_qemu.helpers.virtio_mem`` module reads a virtio-mem device
(``hw/virtio/virtio-mem.c``, ``include/hw/virtio/virtio-mem.h``): a memory
region of which only the blocks the guest plugged hold guest memory, as
the device's bitmap (``VirtIOMEM.bitmap``, one bit per ``block_size``)
says. It is the memory region's ``RamDiscardManager``, and QEMU's
``dump-guest-memory`` (6.2 and later) writes only its plugged parts.
"""

from typing import Iterator, Tuple

from drgn import Object, cast

from drgn_qemu.errors import CorruptStructureError, UnsupportedError
from drgn_qemu.helpers.qom import object_dynamic_cast, object_get_typename, qom_type_names

__all__ = (
    "plugged_runs",
    "ram_discard_manager_replay_populated",
    "virtio_mem_bitmap",
    "virtio_mem_for_each_plugged_section",
)

#: Most bits a virtio-mem bitmap can have here: 2^24 blocks (of at least
#: 1 MiB, 16 TiB of device memory); more is damage.
MAX_BITMAP_BITS = 1 << 24


def virtio_mem_bitmap(vmem: Object) -> int:
    """
    Return the plugged-blocks bitmap of a virtio-mem device as one integer
    (bit *n* set: block *n* is plugged).

    :param vmem: ``VirtIOMEM *``
    :raises CorruptStructureError: for an impossible size
    """
    bits = vmem.bitmap_size.value_()
    if not 0 <= bits <= MAX_BITMAP_BITS:
        raise CorruptStructureError(
            f"virtio-mem device at 0x{vmem.value_():x} has a bitmap of {bits} blocks"
        )
    words = (bits + 63) // 64
    data = vmem.prog_.read(vmem.bitmap.value_(), words * 8) if words else b""
    # The host's unsigned long words, least significant bit first: little-endian x86.
    return int.from_bytes(data, "little") & ((1 << bits) - 1)


def virtio_mem_for_each_plugged_section(
    vmem: Object, offset: int, size: int
) -> Iterator[Tuple[int, int]]:
    """
    Iterate over the plugged parts of ``[offset, offset + size)`` of a
    virtio-mem device's memory region, as ``(offset, size)`` in the region
    (``virtio_mem_for_each_plugged_section()``: runs of plugged blocks, each
    cut to the section).

    :param vmem: ``VirtIOMEM *``
    """
    block = vmem.block_size.value_()
    if block <= 0 or block & (block - 1):
        raise CorruptStructureError(
            f"virtio-mem device at 0x{vmem.value_():x} has block size {block:#x}"
        )
    return plugged_runs(virtio_mem_bitmap(vmem), block, offset, size)


def plugged_runs(bitmap: int, block: int, offset: int, size: int) -> Iterator[Tuple[int, int]]:
    """
    The loop of ``virtio_mem_for_each_plugged_section()`` over a bitmap
    given as an integer: each run of set bits from the block of *offset*
    on, as ``(offset, size)`` cut to ``[offset, offset + size)``; it stops
    at the first run past the end.
    """
    end = offset + size
    bit = offset // block
    bitmap >>= bit
    while bitmap:
        skip = (bitmap & -bitmap).bit_length() - 1  # to the next plugged block
        bit += skip
        bitmap >>= skip
        run = (~bitmap & (bitmap + 1)).bit_length() - 1  # plugged blocks in a row
        start, stop = max(bit * block, offset), min((bit + run) * block, end)
        if stop <= start:
            break
        yield start, stop - start
        bit += run
        bitmap >>= run


def ram_discard_manager_replay_populated(
    mr: Object, offset: int, size: int
) -> Iterator[Tuple[int, int]]:
    """
    Iterate over the populated parts of ``[offset, offset + size)`` of a
    memory region with a ``RamDiscardManager`` (``mr->rdm``), as QEMU's
    ``ram_discard_manager_replay_populated()`` reports them, as ``(offset,
    size)`` in the region.

    :param mr: ``MemoryRegion *``
    :raises UnsupportedError: for a manager other than virtio-mem
    """
    rdm = mr.rdm.read_()
    if not object_dynamic_cast(rdm, qom_type_names(rdm.prog_, "virtio-mem")):
        raise UnsupportedError(
            f"memory region at 0x{mr.value_():x} has a RamDiscardManager of type "
            f"{object_get_typename(rdm)!r}; only virtio-mem's is read"
        )
    return virtio_mem_for_each_plugged_section(cast("VirtIOMEM *", rdm), offset, size)
