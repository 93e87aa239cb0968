# SPDX-License-Identifier: GPL-2.0-or-later
"""
Machine
-------

The ``drgn_qemu.helpers.machine`` module reads QEMU's machine
(``include/hw/boards.h``): the global ``current_machine``, a
``MachineState`` with the machine's settings, such as ``-machine
dump-guest-core`` and ``-smp``.
"""

from typing import Optional

from drgn import Object, Program
from drgn.helpers.common.prog import takes_program_or_default

__all__ = (
    "machine_confidential_guest_support",
    "machine_dump_guest_core",
    "machine_max_cpus",
    "machine_smp_cpus",
    "machine_state",
)


@takes_program_or_default
def machine_state(prog: Program) -> Optional[Object]:
    """
    Return ``current_machine`` (a ``MachineState *``), or None where the
    program has none or it is NULL (QEMU had not created its machine).
    """
    try:
        machine = prog["current_machine"].read_()
    except KeyError:
        return None
    return machine if machine else None


@takes_program_or_default
def machine_dump_guest_core(prog: Program) -> Optional[bool]:
    """
    Return whether guest RAM goes into QEMU's core dumps
    (``machine_dump_guest_core()``: ``-machine dump-guest-core``, on unless
    turned off, as libvirt does by default), or None where it is not known.
    """
    machine = machine_state(prog)
    if machine is None or not machine.type_.type.has_member("dump_guest_core"):
        return None
    return bool(machine.dump_guest_core)


def _smp(prog: Program, name: str) -> Optional[int]:
    machine = machine_state(prog)
    if machine is None or not machine.type_.type.has_member("smp"):
        return None
    smp = machine.smp
    if not smp.type_.has_member(name):
        return None
    return int(smp.member_(name).value_())


@takes_program_or_default
def machine_smp_cpus(prog: Program) -> Optional[int]:
    """
    Return the vCPUs the machine started with (``-smp cpus``,
    ``current_machine->smp.cpus``), or None where it is not known.
    """
    return _smp(prog, "cpus")


@takes_program_or_default
def machine_max_cpus(prog: Program) -> Optional[int]:
    """
    Return the most vCPUs the machine may have (``-smp maxcpus``,
    ``current_machine->smp.max_cpus``), or None where it is not known.
    """
    return _smp(prog, "max_cpus")


@takes_program_or_default
def machine_confidential_guest_support(prog: Program) -> Optional[str]:
    """
    Return the QOM type of the machine's confidential guest support
    (``current_machine->cgs``: ``sev-guest``, ``sev-snp-guest``,
    ``tdx-guest``, ``s390-pv-guest``, ``pef-guest``...), or None for an
    ordinary guest or a QEMU without it (before 6.0).
    """
    machine = machine_state(prog)
    if machine is None or not machine.type_.type.has_member("cgs"):
        return None
    cgs = machine.cgs.read_()
    if not cgs:
        return None
    from drgn_qemu.helpers.qom import object_get_typename

    return object_get_typename(cgs)
