# SPDX-License-Identifier: GPL-2.0-or-later
"""
QOM
---

The ``drgn_qemu.helpers.qom`` module reads the QEMU Object Model
(``qom/object.c``): each ``Object`` has a class (whose ``TypeImpl`` names
its type), a parent, and a ``GHashTable`` of properties, among which
``child<...>`` properties hold the composition tree under ``/`` (``/machine``,
its devices, memory backends...) and ``link<...>`` properties point
elsewhere.
"""

from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from drgn import FaultError, Object, Program, cast
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError, NotQemuError
from drgn_qemu.executable import read_constant_string
from drgn_qemu.helpers.glib import g_hash_table_foreach

__all__ = (
    "MAX_QOM_DEPTH",
    "object_child_foreach",
    "object_dynamic_cast",
    "object_get_canonical_path",
    "object_get_canonical_path_component",
    "object_get_root",
    "object_get_typename",
    "object_implements",
    "object_property_foreach",
    "object_resolve_path",
    "qdev_get_machine",
    "qom_type_names",
)

#: The deepest composition tree accepted before it is declared cyclic.
MAX_QOM_DEPTH = 64


#: The QOM types the helpers check, each by today's name: the ``TypeInfo``
#: variable that registers it in QEMU's source and its member that holds the
#: spelling of the QEMU in hand, and every spelling QEMU has given it. Until
#: QEMU 6.0, ``TYPE_MEMORY_REGION`` was ``"qemu:memory-region"`` (and
#: ``TYPE_IOMMU_MEMORY_REGION`` ``"qemu:iommu-memory-region"``,
#: ``TYPE_RAM_DISCARD_MANAGER`` ``"qemu:ram-discard-manager"``); the others
#: have kept theirs since they were added.
QOM_TYPES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "memory-region": ("memory_region_info", "name", ("memory-region", "qemu:memory-region")),
    "cpu": ("cpu_type_info", "name", ("cpu",)),
    "memory-backend": ("host_memory_backend_info", "name", ("memory-backend",)),
    "virtio-mem": ("virtio_mem_info", "name", ("virtio-mem",)),
    # A VirtioPCIDeviceTypeInfo: its QOM type is the generic name.
    "virtio-mem-pci": ("virtio_mem_pci_info", "generic_name", ("virtio-mem-pci",)),
    "pc-dimm": ("pc_dimm_info", "name", ("pc-dimm",)),
    "nvdimm": ("nvdimm_info", "name", ("nvdimm",)),
}


@takes_program_or_default
def qom_type_names(prog: Program, qom_type: str) -> Tuple[str, ...]:
    """
    Return the names the QOM type known today as *qom_type* (a key of
    :data:`QOM_TYPES`) has in the QEMU of *prog*: the ``name`` of its
    ``TypeInfo`` (``memory_region_info.name``: ``TYPE_MEMORY_REGION``),
    read from QEMU's read-only data (the executable's, where the core left
    it out), first, then every spelling QEMU has used, so that a QEMU whose
    variable cannot be read is never taken for damage.
    """
    cache = prog.cache.setdefault("drgn_qemu_qom_type_names", {})
    names = cache.get(qom_type)
    if names is None:
        variable, member, spellings = QOM_TYPES[qom_type]
        found: Tuple[str, ...] = ()
        try:
            address = prog.variable(variable).member_(member).value_()
            if address:
                found = (read_constant_string(prog, address, 64),)
        except (LookupError, FaultError, AttributeError):
            pass  # a QEMU without that type, or without the variable
        names = tuple(dict.fromkeys(found + spellings))
        cache[qom_type] = names
    return names


def _object(obj: Object) -> Object:
    """An ``Object *`` for any QOM object pointer (its first member is the Object)."""
    return cast("Object *", obj)


def object_get_typename(obj: Object) -> str:
    """
    Return the QOM type name of an object (``object_get_typename()``: ``obj->class->type->name``).

    :param obj: ``Object *``
    """
    return str(_object(obj).member_("class").type.name.string_().decode(errors="replace"))


def object_dynamic_cast(obj: Object, typename: Union[str, Sequence[str]]) -> Object:
    """
    Return *obj* as an ``Object *`` if its type is *typename* or derives from
    it, else a null ``Object *`` (``object_dynamic_cast()``, without
    interfaces): walk ``obj->class->type`` up its ``parent_type`` links.

    :param obj: ``Object *`` (or any QOM object pointer)
    :param typename: a QOM type name, or the names one type has had (see
        :func:`qom_type_names`)
    """
    names = {typename.encode()} if isinstance(typename, str) else {n.encode() for n in typename}
    obj = _object(obj)
    impl = obj.member_("class").type.read_()
    for _ in range(MAX_QOM_DEPTH):
        if not impl:
            break
        if impl.name.string_() in names:
            return obj
        impl = impl.parent_type.read_()
    return Object(obj.prog_, "Object *", 0)


def object_implements(obj: Object, interface: str) -> bool:
    """
    Return whether an object's type, or one of its parents, declares the
    QOM interface *interface* (``TypeImpl.interfaces``, as registered by
    ``type_init``; ``object_dynamic_cast()`` to an interface type).

    :param obj: ``Object *``
    """
    impl = _object(obj).member_("class").type.read_()
    for _ in range(MAX_QOM_DEPTH):
        if not impl:
            return False
        count = impl.num_interfaces.value_()
        if not 0 <= count <= len(impl.interfaces):
            raise CorruptStructureError(f"QOM type at 0x{impl.value_():x} has {count} interfaces")
        for i in range(count):
            name = impl.interfaces[i].typename.read_()
            if name and name.string_() == interface.encode():
                return True
        impl = impl.parent_type.read_()
    raise CorruptStructureError(f"QOM type parents deeper than {MAX_QOM_DEPTH}: cyclic")


def object_property_foreach(obj: Object) -> Iterator[Object]:
    """
    Iterate over the properties an object holds itself (its ``properties``
    ``GHashTable``, in GLib's order), as ``ObjectProperty *`` objects.

    :param obj: ``Object *``
    """
    prog = obj.prog_
    for _, value in g_hash_table_foreach(_object(obj).properties):
        yield Object(prog, "ObjectProperty *", value)


def _is_child(prop: Object) -> bool:
    return prop.type.string_().startswith(b"child<")


def object_child_foreach(obj: Object) -> Iterator[Object]:
    """
    Iterate over the children of an object in the composition tree
    (``object_child_foreach()``: its ``child<>`` properties, in GLib's
    order), as ``Object *`` objects.

    :param obj: ``Object *``
    """
    for prop in object_property_foreach(obj):
        if _is_child(prop):
            yield cast("Object *", prop.opaque)


def object_get_canonical_path_component(obj: Object) -> Optional[str]:
    """
    Return the name an object has in its parent
    (``object_get_canonical_path_component()``), or None without a parent.

    :param obj: ``Object *``
    """
    obj = _object(obj)
    parent = obj.parent.read_()
    if not parent:
        return None
    for prop in object_property_foreach(parent):
        if _is_child(prop) and prop.opaque.value_() == obj.value_():
            return str(prop.name.string_().decode(errors="replace"))
    raise CorruptStructureError(
        f"QOM object at 0x{obj.value_():x} is not among its parent's children"
    )


@takes_program_or_default
def object_get_root(prog: Program) -> Object:
    """
    Return the root of the composition tree, ``/`` (``object_get_root()``),
    found as the parent of the machine.
    """
    machine = qdev_get_machine(prog)
    root = _object(machine).parent.read_()
    if not root:
        raise CorruptStructureError("the machine has no parent: no QOM root")
    return root


@takes_program_or_default
def qdev_get_machine(prog: Program) -> Object:
    """Return the machine object, ``current_machine``, as an ``Object *`` (``qdev_get_machine()``)."""
    try:
        machine = prog["current_machine"].read_()
    except KeyError:
        raise NotQemuError("the program has no 'current_machine'") from None
    if not machine:
        raise CorruptStructureError("current_machine is NULL: QEMU had not created its machine")
    return _object(machine)


def object_get_canonical_path(obj: Object) -> Optional[str]:
    """
    Return the path of an object from ``/`` (``object_get_canonical_path()``).

    :param obj: ``Object *``
    """
    obj = _object(obj)
    root = object_get_root(obj.prog_)
    if obj.value_() == root.value_():
        return "/"
    parts: List[str] = []
    for _ in range(MAX_QOM_DEPTH):
        component = object_get_canonical_path_component(obj)
        if component is None:
            return None
        parts.insert(0, component)
        obj = obj.parent.read_()
        if obj.value_() == root.value_():
            return "/" + "/".join(parts)
    raise CorruptStructureError(f"QOM parents deeper than {MAX_QOM_DEPTH}: cyclic")


def _resolve_component(obj: Object, part: str) -> Optional[Object]:
    for prop in object_property_foreach(obj):
        if prop.name.string_().decode(errors="replace") != part:
            continue
        kind = prop.type.string_()
        if kind.startswith(b"child<"):
            return cast("Object *", prop.opaque)
        if kind.startswith(b"link<"):
            link = cast("LinkProperty *", prop.opaque)
            target = link.targetp[0].read_() if link.targetp else None
            return target if target else None
        return None
    return None


@takes_program_or_default
def object_resolve_path(prog: Program, path: str) -> Optional[Object]:
    """
    Return the object at an absolute QOM path such as
    ``/machine/unattached/device[0]`` (``object_resolve_path()``, following
    ``child<>`` and ``link<>`` properties), or None.
    """
    if not path.startswith("/"):
        raise ValueError("only absolute QOM paths (from /) are resolved")
    obj: Optional[Object] = object_get_root(prog)
    for part in path.split("/"):
        if not part:
            continue
        assert obj is not None
        obj = _resolve_component(obj, part)
        if obj is None:
            return None
    return obj
