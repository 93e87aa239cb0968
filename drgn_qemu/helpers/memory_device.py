# SPDX-License-Identifier: GPL-2.0-or-later
"""
Memory devices
--------------

The ``drgn_qemu.helpers.memory_device`` module reads QEMU's memory devices
(``hw/mem/memory-device.c``): the devices that implement the QOM interface
``memory-device`` and hold RAM of their own in the machine's device memory
region, such as ``pc-dimm`` and ``nvdimm`` (``hw/mem/pc-dimm.c``) and
``virtio-mem-pci`` (``hw/virtio/virtio-mem-pci.c``), as QMP
``query-memory-devices`` lists them.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

from drgn import Object, Program, cast
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError, UnsupportedError
from drgn_qemu.helpers.int128 import int128_get64
from drgn_qemu.helpers.qom import (
    MAX_QOM_DEPTH,
    object_child_foreach,
    object_dynamic_cast,
    object_get_canonical_path,
    object_get_typename,
    object_implements,
    qdev_get_machine,
    qom_type_names,
)

__all__ = (
    "MemoryDeviceInfo",
    "for_each_memory_device",
    "memory_device_get_addr",
    "qmp_query_memory_devices",
)


@dataclass
class MemoryDeviceInfo:
    """One entry of QMP ``query-memory-devices``: its kind and fields, in QEMU's order."""

    #: ``dimm``, ``nvdimm`` or ``virtio-mem``.
    kind: str
    id: str
    fields: Dict[str, Union[int, str, bool]] = field(default_factory=dict)


def _device_realized(obj: Object) -> bool:
    return bool(cast("DeviceState *", obj).realized)


@takes_program_or_default
def for_each_memory_device(prog: Program) -> Iterator[Object]:
    """
    Iterate over the realized memory devices under the machine, depth
    first as ``memory_device_build_list()`` finds them (before sorting), as
    ``Object *``.
    """
    stack = [(qdev_get_machine(prog), 0)]
    while stack:
        obj, depth = stack.pop()
        if depth > MAX_QOM_DEPTH:
            raise CorruptStructureError(f"QOM tree deeper than {MAX_QOM_DEPTH}: cyclic")
        if depth and object_implements(obj, "memory-device") and _device_realized(obj):
            yield obj
        children = list(object_child_foreach(obj))
        stack.extend((c, depth + 1) for c in reversed(children))


def _virtio_mem(obj: Object) -> Optional[Object]:
    if object_dynamic_cast(obj, qom_type_names(obj.prog_, "virtio-mem-pci")):
        return cast("VirtIOMEMPCI *", obj).vdev.address_of_()
    return None


def memory_device_get_addr(obj: Object) -> int:
    """
    A memory device's guest-physical address (its class's ``get_addr()``).

    :param obj: ``Object *``
    """
    vmem = _virtio_mem(obj)
    if vmem is not None:
        return int(vmem.addr.value_())
    if object_dynamic_cast(obj, qom_type_names(obj.prog_, "pc-dimm")):
        return int(cast("PCDIMMDevice *", obj).addr.value_())
    raise UnsupportedError(f"memory device of type {object_get_typename(obj)!r} is not read")


def _memdev(backend: Object) -> Tuple[str, int]:
    """(canonical path, size) of a ``HostMemoryBackend *``."""
    path = object_get_canonical_path(backend) or ""
    return path, int128_get64(backend.mr.size)


@takes_program_or_default
def qmp_query_memory_devices(prog: Program) -> List[MemoryDeviceInfo]:
    """
    The memory devices as QMP ``query-memory-devices`` reports them
    (``qmp_query_memory_devices()``): sorted by address, each with the
    fields its class fills in.
    """
    out = []
    devices = sorted(for_each_memory_device(prog), key=memory_device_get_addr)
    for obj in devices:
        dev = cast("DeviceState *", obj)
        dev_id = dev.id.string_().decode(errors="replace") if dev.id else ""
        vmem = _virtio_mem(obj)
        if vmem is not None:
            path, max_size = _memdev(vmem.memdev.read_())
            out.append(MemoryDeviceInfo("virtio-mem", dev_id, {
                "memaddr": vmem.addr.value_(), "node": vmem.node.value_(),
                "requested-size": vmem.requested_size.value_(), "size": vmem.size.value_(),
                "max-size": max_size, "block-size": vmem.block_size.value_(), "memdev": path,
            }))  # fmt: skip
            continue
        dimm = cast("PCDIMMDevice *", obj)
        kind = "nvdimm" if object_dynamic_cast(obj, qom_type_names(obj.prog_, "nvdimm")) else "dimm"
        path, size = _memdev(dimm.hostmem.read_())
        klass = cast("DeviceClass *", obj.member_("class"))
        out.append(MemoryDeviceInfo(kind, dev_id, {
            "addr": dimm.addr.value_(), "slot": dimm.slot.value_(), "node": dimm.node.value_(),
            "size": size, "memdev": path, "hotplugged": bool(dev.hotplugged),
            "hotpluggable": bool(klass.hotpluggable),
        }))  # fmt: skip
    return out
