# SPDX-License-Identifier: GPL-2.0-or-later
"""
Monitor-style views
-------------------

The ``drgn_qemu.monitor`` module prints QEMU's state the way QEMU's human
monitor (HMP) does, from a core or a process whose monitor cannot answer.
"""

import math
from typing import List, Optional

from drgn import Object, Program, cast

from drgn_qemu.arch import detect_arch
from drgn_qemu.errors import (
    CorruptStructureError,
    NotFoundError,
    UnsupportedError,
    translate_errors,
)
from drgn_qemu.executable import printed_format
from drgn_qemu.helpers.accel import kvm_enabled
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu, qemu_get_cpu
from drgn_qemu.helpers.glib import DirectHashTable
from drgn_qemu.helpers.int128 import int128_get, int128_get64
from drgn_qemu.helpers.memory import (
    MAX_ALIAS_DEPTH,
    flatview_for_each_range,
    for_each_address_space,
    memory_region_name,
    memory_region_type,
)
from drgn_qemu.helpers.qom import (
    MAX_QOM_DEPTH,
    object_child_foreach,
    object_get_canonical_path_component,
    object_get_root,
    object_get_typename,
    object_resolve_path,
    qdev_get_machine,
    qom_type_names,
)
from drgn_qemu.helpers.queue import qtailq_for_each
from drgn_qemu.helpers.ramblock import (
    for_each_ram_block,
    ramblock_max_length,
    ramblock_name,
    ramblock_used_length,
)
from drgn_qemu.registers import cpu_dump_state

__all__ = (
    "cpu_model_from_type",
    "printed_format",
    "hmp_info_cpus",
    "hmp_info_mem",
    "hmp_info_memory_devices",
    "hmp_info_registers",
    "hmp_info_tlb",
    "hmp_info_mtree",
    "hmp_info_qom_tree",
    "hmp_info_ramblock",
    "size_to_str",
)


def size_to_str(val: int) -> str:
    """QEMU's ``size_to_str()``: 4096 -> "4 KiB"."""
    suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    _, exponent = math.frexp(val / (1000.0 / 1024.0))
    # C's division truncates toward zero: 0 bytes is "0 B", not a negative shift.
    i = max(exponent - 1, 0) // 10
    return f"{_g3(val / (1 << (i * 10)))} {suffixes[i]}B"


def _g3(x: float) -> str:
    # printf's "%0.3g".
    return f"{x:0.3g}"


@translate_errors("QEMU's state for 'info ramblock'")
def hmp_info_ramblock(prog: Program) -> str:
    """
    The RAM block table of HMP ``info ramblock`` (``ram_block_format()``):
    name, page size, offset, used and total length, and, in the QEMUs that
    print them (8.1 and later), host address and read-only. Which one the
    QEMU in the program is comes from its own executable: the format string
    its ``ram_block_format()`` prints the header with.
    """
    columns = _ramblock_columns(prog)
    header = f"{'Block Name':>24} {'PSize':>8}  {'Offset':>18} {'Used':>18} {'Total':>18}"
    lines = [header + (f" {'HVA':>18} {'RO':>3}" if columns == 7 else "")]
    for block in for_each_ram_block(prog):
        page_size = block.page_size.value_() if block.type_.type.has_member("page_size") else 4096
        line = (
            f"{ramblock_name(block):>24} {size_to_str(page_size):>8}  "
            f"0x{block.offset.value_():016x} 0x{ramblock_used_length(block):016x} "
            f"0x{ramblock_max_length(block):016x}"
        )
        if columns == 7:
            readonly = bool(block.mr.readonly) if block.mr else False
            line += f" 0x{block.host.value_():016x} {'ro' if readonly else 'rw':>3}"
        lines.append(line)
    return "\n".join(lines) + "\n"


#: ``ram_block_format()``'s header formats: with host address and read-only
#: (QEMU 8.1 and later), and without.
_RAMBLOCK_FORMATS = (
    (7, b"%24s %8s  %18s %18s %18s %18s %3s\n"),
    (5, b"%24s %8s  %18s %18s %18s\n"),
)
#: ``hmp_info_cpus()``'s formats: with the CPU model (QEMU 10.1 and later), and without.
_CPUS_FORMATS = ((True, b" thread_id=%ld model=%s\n"), (False, b" thread_id=%ld\n"))


def _ramblock_columns(prog: Program) -> int:
    """The columns the program's QEMU prints in ``info ramblock``: 7, or 5 (older)."""
    return printed_format(prog, _RAMBLOCK_FORMATS, 7)


def cpu_model_from_type(cpu: Object) -> str:
    """
    The CPU model of a vCPU as QEMU's ``cpu_model_from_type()`` names it:
    its QOM type less the target's CPU type suffix (``qemu64-x86_64-cpu``:
    ``qemu64``). The target's type is the one directly under ``cpu``.
    """
    impl = cast("Object *", cpu).member_("class").type.read_()
    name = impl.name.string_().decode(errors="replace")
    cpu_names = qom_type_names(cpu.prog_, "cpu")
    target = None
    for _ in range(MAX_QOM_DEPTH):
        parent = impl.parent_type.read_()
        if not parent:
            break
        if parent.name.string_().decode(errors="replace") in cpu_names:
            target = impl.name.string_().decode(errors="replace")
            break
        impl = parent
    if target is not None and name.endswith("-" + target):
        return name[: -len(target) - 1]
    return name


@translate_errors("QEMU's state for 'info cpus'")
def hmp_info_cpus(prog: Program) -> str:
    """
    The vCPU list of HMP ``info cpus`` (``hmp_info_cpus()``): index, host
    thread and, in QEMUs that print it, the CPU model; ``*`` marks the
    monitor's current CPU, the first one by default.
    """
    model = printed_format(prog, _CPUS_FORMATS, True)
    lines = []
    for i, cpu in enumerate(for_each_cpu(prog)):
        mark = "*" if i == 0 else " "
        line = f"{mark} CPU #{cpu.cpu_index.value_()}: thread_id={cpu.thread_id.value_()}"
        lines.append(line + (f" model={cpu_model_from_type(cpu)}" if model else ""))
    return "\n".join(lines) + "\n"


_M64 = (1 << 64) - 1


def _mr_size(size: Object) -> int:
    """``MR_SIZE()``: the size less one, 0 for an empty region."""
    n = int128_get(size)
    return (n - 1) & _M64 if n else 0


def _mr_name(mr: Object) -> str:
    """``memory_region_name()`` as QEMU's ``printf("%s")`` shows it."""
    return memory_region_name(mr) or "(null)"


def _nv(obj: Object) -> str:
    return "nv-" if obj.type_.type.has_member("nonvolatile") and obj.nonvolatile else ""


def _mtree_print_mr(
    mr: Object,
    level: int,
    base: int,
    aliases: List[int],
    lines: List[str],
    depth: int = 0,
) -> None:
    """QEMU's ``mtree_print_mr()``, without owners or disabled regions."""
    if not mr:
        return
    if depth > MAX_ALIAS_DEPTH:
        raise CorruptStructureError(f"memory region tree deeper than {MAX_ALIAS_DEPTH}: cyclic")
    start = (base + mr.addr.value_()) & _M64
    end = (start + _mr_size(mr.size)) & _M64
    overflow = "[DETECTED OVERFLOW!] " if start < base or end < start else ""
    indent = "  " * level
    kind = f"(prio {mr.priority.value_()}, {_nv(mr)}{memory_region_type(mr)})"
    disabled = "" if mr.enabled else " [disabled]"
    if mr.alias:
        alias = mr.alias.read_()
        if alias.value_() not in aliases:
            aliases.append(alias.value_())
        if mr.enabled:
            offset = mr.alias_offset.value_()
            lines.append(
                f"{overflow}{indent}{start:016x}-{end:016x} {kind}: alias {_mr_name(mr)} "
                f"@{_mr_name(alias)} {offset:016x}-{(offset + _mr_size(mr.size)) & _M64:016x}"
                f"{disabled}"
            )
    elif mr.enabled:
        lines.append(f"{overflow}{indent}{start:016x}-{end:016x} {kind}: {_mr_name(mr)}{disabled}")
    # Subregions by address, higher priority first at the same address, as
    # QEMU's insertion into its print queue orders them.
    queue: List[Object] = []
    for sub in qtailq_for_each(mr.subregions, "subregions_link"):
        addr, prio = sub.addr.value_(), sub.priority.value_()
        for i, other in enumerate(queue):
            if addr < other.addr.value_() or (
                addr == other.addr.value_() and prio > other.priority.value_()
            ):
                queue.insert(i, sub)
                break
        else:
            queue.append(sub)
    for sub in queue:
        _mtree_print_mr(sub, level + 1, start, aliases, lines, depth + 1)


def _mtree_info_as(prog: Program, only: Optional[str]) -> List[str]:
    """QEMU's ``mtree_info_as()``: each root region with its address spaces, then aliases."""
    views: DirectHashTable[List[Object]] = DirectHashTable()
    for as_ in for_each_address_space(prog):
        root = as_.root.value_()
        same_root = views.lookup(root) or []
        # g_slist_insert_sorted() by name: after the names that sort before or equal.
        name = as_.name.string_()
        i = 0
        while i < len(same_root) and name > same_root[i].name.string_():
            i += 1
        same_root.insert(i, as_)
        views.insert(root, same_root)
    lines: List[str] = []
    aliases: List[int] = []
    for root, same_root in views.items():
        if only is not None and only not in _names(same_root):
            continue
        for as_ in same_root:
            lines.append(f"address-space: {as_.name.string_().decode(errors='replace')}")
        _mtree_print_mr(Object(prog, "MemoryRegion *", root), 1, 0, aliases, lines)
        lines.append("")
    i = 0
    while i < len(aliases):  # printing an alias may queue more
        mr = Object(prog, "MemoryRegion *", aliases[i])
        lines.append(f"memory-region: {_mr_name(mr)}")
        _mtree_print_mr(mr, 1, 0, aliases, lines)
        lines.append("")
        i += 1
    return lines


def _kvm_has_memory(prog: Program, as_: Object, start: int, size: int) -> bool:
    """
    KVM's ``kvm_accel_has_memory()``: a KVM memory slot of the address
    space is exactly this range (cut to ``kvm_max_slot_size``). The slot
    array's length is ``nr_slots_allocated`` of the listener, or
    ``KVMState.nr_slots`` in older QEMU.
    """
    s = prog["kvm_state"].read_()
    try:
        max_slot = prog["kvm_max_slot_size"].value_()
    except KeyError:
        max_slot = 0
    if max_slot:
        size = min(size, max_slot)
    for i in range(s.nr_as.value_()):
        kas = s.member_("as")[i]
        if kas.member_("as").value_() != as_.value_() or not kas.ml:
            continue
        ml = kas.ml.read_()
        if ml.type_.type.has_member("nr_slots_allocated"):
            nr = ml.nr_slots_allocated.value_()
        else:
            nr = s.nr_slots.value_()
        for j in range(nr):
            slot = ml.slots[j]
            if slot.start_addr.value_() == start and slot.memory_size.value_() == size:
                return True
        return False
    return False


def _names(spaces: List[Object]) -> List[str]:
    return [as_.name.string_().decode(errors="replace") for as_ in spaces]


def _mtree_info_flatview(prog: Program, only: Optional[str]) -> List[str]:
    """QEMU's ``mtree_info_flatview()``: each FlatView, with the address spaces that share it."""
    views: DirectHashTable[List[Object]] = DirectHashTable()
    for as_ in for_each_address_space(prog):
        view = as_.current_map.value_()
        spaces = views.lookup(view)
        if spaces is None:
            spaces = []
            views.insert(view, spaces)
        spaces.append(as_)
    kvm = kvm_enabled(prog)
    lines: List[str] = []
    for counter, (view_addr, spaces) in enumerate(views.items()):
        if only is not None and only not in _names(spaces):
            continue
        view = Object(prog, "FlatView *", view_addr)
        lines.append(f"FlatView #{counter}")
        for as_ in spaces:
            root = as_.root.read_()
            line = f' AS "{as_.name.string_().decode(errors="replace")}", root: {_mr_name(root)}'
            if root.alias:
                line += f", alias {_mr_name(root.alias.read_())}"
            lines.append(line)
        root = view.root.read_()
        lines.append(f" Root memory region: {_mr_name(root) if root else '(none)'}")
        if view.nr.value_() <= 0:
            lines += ["  No rendered FlatView", ""]
            continue
        for fr in flatview_for_each_range(view):
            mr = fr.mr.read_()
            start = int128_get64(fr.addr.start)
            size = _mr_size(fr.addr.size)
            kind = "rom" if fr.readonly else memory_region_type(mr)
            line = (
                f"  {start:016x}-{(start + size) & _M64:016x} "
                f"(prio {mr.priority.value_()}, {_nv(fr)}{kind}): {_mr_name(mr)}"
            )
            offset = fr.offset_in_region.value_()
            if offset:
                line += f" @{offset:016x}"
            if kvm:
                for as_ in spaces:
                    if _kvm_has_memory(prog, as_, start, size + 1):
                        line += " KVM"
            lines.append(line)
        lines.append("")
    return lines


@translate_errors("QEMU's state for 'info mtree'")
def hmp_info_mtree(
    prog: Program, flatview: bool = False, address_space: Optional[str] = None
) -> str:
    """
    The memory tree of HMP ``info mtree`` (``mtree_info()``): each address
    space's region tree, then the regions aliases point into; with
    *flatview*, ``info mtree -f``: each rendered ``FlatView``. Address
    spaces and flat views come in the order QEMU's GHashTable of them
    gives, reproduced with :class:`~drgn_qemu.helpers.glib.DirectHashTable`.

    :param address_space: print only the tree (or flat view) of the address
        space of this name, and the aliases it reaches
    :raises LookupError: if there is no address space of that name
    """
    if address_space is not None:
        names = _names(list(for_each_address_space(prog)))
        if address_space not in names:
            raise NotFoundError(
                f"no address space {address_space!r} (there are: {', '.join(names)})"
            )
    if flatview:
        lines = _mtree_info_flatview(prog, address_space)
    else:
        lines = _mtree_info_as(prog, address_space)
    return "\n".join(lines) + "\n"


@translate_errors("QEMU's state for 'info qom-tree'")
def hmp_info_qom_tree(prog: Program, path: Optional[str] = None) -> str:
    """
    The QOM composition tree of HMP ``info qom-tree [PATH]``
    (``print_qom_composition()``): from the machine (or *path*), each object
    with its type, children sorted by name.
    """
    if path is None:
        obj = qdev_get_machine(prog)
    else:
        found = object_resolve_path(prog, path)
        if found is None:
            return f"Path '{path}' could not be resolved.\n"
        obj = found
    root = object_get_root(prog).value_()
    lines: List[str] = []

    def walk(o: Object, indent: int) -> None:
        if indent > 2 * MAX_QOM_DEPTH:
            raise CorruptStructureError(f"QOM tree deeper than {MAX_QOM_DEPTH}: cyclic")
        name = "" if o.value_() == root else (object_get_canonical_path_component(o) or "")
        lines.append(f"{' ' * indent}/{name} ({object_get_typename(o)})")
        children = [
            (object_get_canonical_path_component(c) or "", c) for c in object_child_foreach(o)
        ]
        children.sort(key=lambda nc: nc[0].encode())
        for _, child in children:
            walk(child, indent + 2)

    walk(obj, 0)
    return "\n".join(lines) + "\n"


@translate_errors("QEMU's state for 'info registers'")
def hmp_info_registers(prog: Program, all_cpus: bool = False, vcpu: Optional[int] = None) -> str:
    """
    The registers of HMP ``info registers [-a] [VCPU]``
    (``hmp_info_registers()``): of the first vCPU (the monitor's default),
    of vCPU *vcpu*, or of all, each after a ``CPU#N`` line.
    """
    arch = detect_arch(prog)
    if all_cpus:
        cpus = list(for_each_cpu(prog))
    elif vcpu is not None:
        cpu = qemu_get_cpu(prog, vcpu)
        if not cpu:
            return f"CPU#{vcpu} not available\n"
        cpus = [cpu]
    else:
        cpu = first_cpu(prog)
        if not cpu:
            return "No CPU available\n"
        cpus = [cpu]
    return "".join(f"\nCPU#{c.cpu_index.value_()}\n" + cpu_dump_state(arch, c) for c in cpus)


def _monitor_cpu(prog: Program, vcpu: Optional[int]) -> Object:
    """The vCPU an HMP command shows: *vcpu*, else the monitor's default, the first."""
    cpu = qemu_get_cpu(prog, vcpu) if vcpu is not None else first_cpu(prog)
    if not cpu:
        raise NotFoundError(f"CPU#{vcpu} not available" if vcpu is not None else "no CPU available")
    return cpu


def _page_view(prog: Program, vcpu: Optional[int], view: str) -> str:
    arch = detect_arch(prog)
    if arch.name not in ("x86_64", "riscv64") or (view == "tlb" and arch.name != "x86_64"):
        raise UnsupportedError(
            f"'info {view}' of a {arch.name} guest is not supported yet "
            f"({'x86 and riscv64' if view == 'mem' else 'x86'})"
        )
    from drgn_qemu.helpers.memory_mapping import guest_phys_blocks
    from drgn_qemu.paging.base import GuestPhysReader

    phys = GuestPhysReader(guest_phys_blocks(prog), prog.read)
    cpu = _monitor_cpu(prog, vcpu)
    if arch.name == "riscv64":
        from drgn_qemu.paging.riscv64 import hmp_info_mem_riscv

        return hmp_info_mem_riscv(cpu, phys)
    from drgn_qemu.paging.x86_64 import hmp_info_mem_x86, hmp_info_tlb_x86

    return (hmp_info_mem_x86 if view == "mem" else hmp_info_tlb_x86)(cpu, phys)


@translate_errors("the vCPU's page tables for 'info mem'")
def hmp_info_mem(prog: Program, vcpu: Optional[int] = None) -> str:
    """
    HMP ``info mem`` (``hmp_info_mem()``, x86 and riscv64): the virtual
    memory ranges the first vCPU (or vCPU *vcpu*) maps, with their
    protection. On a 5-level x86 guest, what a correct walk gives (QEMU's
    own prints nothing).
    """
    return _page_view(prog, vcpu, "mem")


@translate_errors("the vCPU's page tables for 'info tlb'")
def hmp_info_tlb(prog: Program, vcpu: Optional[int] = None) -> str:
    """
    HMP ``info tlb`` (``hmp_info_tlb()``, x86): every page the first vCPU
    (or vCPU *vcpu*) maps, with its physical address and flags.
    """
    return _page_view(prog, vcpu, "tlb")


@translate_errors("QEMU's memory devices")
def hmp_info_memory_devices(prog: Program) -> str:
    """
    The memory devices as HMP ``info memory-devices`` prints them
    (``hmp_info_memory_devices()``): pc-dimm, nvdimm and virtio-mem.
    """
    from drgn_qemu.helpers.memory_device import qmp_query_memory_devices

    lines = []
    for info in qmp_query_memory_devices(prog):
        lines.append(f'Memory device [{info.kind}]: "{info.id}"')
        for name, value in info.fields.items():
            if name in ("addr", "memaddr"):
                text = f"0x{value:x}"
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            lines.append(f"  {name}: {text}")
    return "".join(line + "\n" for line in lines)
