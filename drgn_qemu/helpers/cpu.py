# SPDX-License-Identifier: GPL-2.0-or-later
"""
CPUs
----

The ``drgn_qemu.helpers.cpu`` module walks QEMU's vCPUs
(``include/hw/core/cpu.h``): the global list of ``CPUState`` that
``CPU_FOREACH`` iterates, called ``cpus`` up to QEMU 8.x and ``cpus_queue``
since (found from the debug info, not the version).
"""

from typing import Iterator

from drgn import Object, Program
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError, NotQemuError
from drgn_qemu.helpers.machine import machine_max_cpus, machine_smp_cpus
from drgn_qemu.helpers.qom import object_dynamic_cast, object_get_typename, qom_type_names
from drgn_qemu.helpers.queue import queue_for_each

__all__ = (
    "MAX_CPUS",
    "check_cpu_list",
    "cpu_list_head",
    "first_cpu",
    "for_each_cpu",
    "qemu_get_cpu",
)

#: The most vCPUs a walk accepts before declaring the list corrupt.
MAX_CPUS = 1 << 16


@takes_program_or_default
def cpu_list_head(prog: Program) -> Object:
    """
    Return the head of QEMU's vCPU list: ``cpus_queue`` (QEMU 9.0 and later)
    or ``cpus`` (before), a ``QTAILQ_HEAD`` of ``CPUState``.

    :raises NotQemuError: if neither exists
    """
    for name in ("cpus_queue", "cpus"):
        try:
            return prog.variable(name)
        except LookupError:
            pass
    raise NotQemuError("QEMU's debug info has no vCPU list ('cpus_queue' or 'cpus')")


@takes_program_or_default
def for_each_cpu(prog: Program) -> Iterator[Object]:
    """
    Iterate over QEMU's vCPUs in order (``CPU_FOREACH(cpu)``).

    :return: Iterator of ``CPUState *`` objects.
    """
    return queue_for_each(cpu_list_head(prog), "node", MAX_CPUS)


@takes_program_or_default
def first_cpu(prog: Program) -> Object:
    """
    Return the first vCPU (``first_cpu``), or a null ``CPUState *`` if there
    is none.
    """
    for cpu in for_each_cpu(prog):
        return cpu
    return Object(prog, "CPUState *", 0)


@takes_program_or_default
def qemu_get_cpu(prog: Program, index: int) -> Object:
    """
    Return the vCPU whose ``cpu_index`` is *index* (``qemu_get_cpu()``), or a
    null ``CPUState *``.
    """
    for cpu in for_each_cpu(prog):
        if cpu.cpu_index.value_() == index:
            return cpu
    return Object(prog, "CPUState *", 0)


@takes_program_or_default
def check_cpu_list(prog: Program) -> None:
    """
    Check QEMU's vCPU list against what QEMU guarantees: each is a QOM
    ``cpu`` (where ``CPUState`` is a QOM object), its ``cpu_index`` is
    unique and below the machine's ``-smp maxcpus``, and there are no more
    vCPUs than that. A crashed QEMU's list may be damaged; its vCPU notes
    would then be made up.

    :raises CorruptStructureError: naming the first vCPU that fails
    """
    max_cpus = machine_max_cpus(prog)
    limit = max_cpus if max_cpus is not None else MAX_CPUS
    qom = prog.type("CPUState").has_member("parent_obj")
    seen = set()
    for cpu in for_each_cpu(prog):
        where = f"vCPU at 0x{cpu.value_():x}"
        if qom and not object_dynamic_cast(cpu, qom_type_names(cpu.prog_, "cpu")):
            raise CorruptStructureError(
                f"{where} in QEMU's vCPU list is not a CPU: its QOM type is "
                f"{object_get_typename(cpu)!r}"
            )
        index = cpu.cpu_index.value_()
        if not 0 <= index < limit:
            raise CorruptStructureError(
                f"{where} has cpu_index {index}, outside 0-{limit - 1}"
                + (" (the machine's -smp maxcpus)" if max_cpus is not None else "")
            )
        if index in seen:
            raise CorruptStructureError(f"{where} has cpu_index {index}, as another vCPU has")
        seen.add(index)
    # QEMU creates -smp cpus vCPUs (at least one) at start, and never has fewer.
    cpus = machine_smp_cpus(prog)
    if len(seen) < max(1, min(cpus or 0, limit)):
        raise CorruptStructureError(
            f"QEMU's vCPU list has {len(seen)} vCPUs, but the machine started with "
            + (f"-smp {cpus}" if cpus is not None else "at least one")
            + ": the list is damaged"
        )
