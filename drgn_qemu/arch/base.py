# SPDX-License-Identifier: GPL-2.0-or-later
"""
What every guest architecture module provides: :class:`GuestArch`, the
dump's ELF header choices (:class:`ArchDumpInfo`), and the enumerator
lookups the modules share.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from drgn import Object, Program, Type

from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "ArchDumpInfo",
    "CpuSummary",
    "dump_first_cpu",
    "GuestArch",
    "enum_constant",
    "enumerator_name",
    "softfloat_exception_bits",
)


@dataclass(frozen=True)
class ArchDumpInfo:
    """QEMU's ``ArchDumpInfo``: the vmcore's ELF header choices."""

    #: ``e_machine``.
    machine: int
    #: ``ELFCLASS32`` or ``ELFCLASS64``.
    elf_class: int
    #: ``ELFDATA2LSB`` or ``ELFDATA2MSB``.
    endian: int
    #: Page size of kdump-compressed dumps; 0 for the target's page size.
    page_size: int = 0
    #: The kernel's ``phys_base`` as QEMU guesses it (kdump header).
    phys_base: int = 0


def dump_first_cpu(prog: Program) -> Object:
    """
    QEMU's ``first_cpu``, whose state chooses the dump's ELF class and byte
    order in the targets' ``cpu_get_dump_info()``.

    :return: ``CPUState *``
    :raises UnsupportedError: if the QEMU has no vCPUs
    """
    cpu = first_cpu(prog)
    if not cpu:
        raise UnsupportedError("the QEMU program has no vCPUs")
    return cpu


@dataclass(frozen=True)
class CpuSummary:
    """One vCPU as the dump summary shows it."""

    #: ``CPUState.cpu_index``.
    index: int
    #: A short description of its state (instruction pointer, mode...).
    state: str
    #: Whether QEMU's copy of its registers may be older than the vCPU's
    #: (KVM, and QEMU had not synchronized them).
    stale: bool = False


class GuestArch:
    """What the dump needs to know about one guest architecture."""

    #: Name used by ``--arch``.
    name: str = ""
    #: Guest page size (``TARGET_PAGE_SIZE``): 4 KiB on each target dumped here.
    page_size: int = 4096
    #: ``utsname.machine`` of kdump-compressed dumps (``ELF_MACHINE_UNAME``).
    uname_machine: str = "Unknown"
    #: Per ELF machine, the VMCOREINFO number that gives the kernel's
    #: ``phys_base`` (QEMU's ``vmcoreinfo_update_phys_base()``).
    vmcoreinfo_phys_base: Dict[int, str] = {}

    def matches(self, prog: Program) -> bool:
        """Return whether *prog* is a QEMU for this target (from its debug info)."""
        raise NotImplementedError

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        """Choose the ELF machine, class and byte order, as QEMU's ``cpu_get_dump_info()``."""
        raise NotImplementedError

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        """Return the vCPU notes, in QEMU's order and byte layout."""
        raise NotImplementedError

    def describe_cpus(self, prog: Program) -> List[CpuSummary]:
        """Summarise each vCPU for the dump summary."""
        return [
            CpuSummary(cs.cpu_index.value_(), self.describe_cpu(cs), self.cpu_registers_stale(cs))
            for cs in for_each_cpu(prog)
        ]

    def describe_cpu(self, cpu: Object) -> str:
        """
        Describe a vCPU's state in a few words (instruction pointer, mode...).

        :param cpu: ``CPUState *``
        """
        raise NotImplementedError

    def cpu_registers_stale(self, cpu: Object) -> bool:
        """
        Return whether QEMU's copy of a vCPU's registers may be older than the
        vCPU's own.

        :param cpu: ``CPUState *``
        """
        return False

    def kdump_machine(self, info: ArchDumpInfo) -> str:
        """``utsname.machine`` of a kdump file when the guest kernel's is not known."""
        return self.uname_machine

    def max_phys_addr(self, prog: Program) -> Optional[int]:
        """
        Return the end of the guest-physical address space as the vCPUs
        see it (guest RAM must lie below), or None where it is not known.
        """
        return None

    def kernel_phys_base(self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str]) -> int:
        """
        Return the kernel's ``phys_base`` for a kdump header: from VMCOREINFO
        where QEMU's ``vmcoreinfo_update_phys_base()`` looks, else QEMU's
        guess (``info.phys_base``). Linux writes ``NUMBER(phys_base)`` in
        decimal and ``NUMBER(PHYS_OFFSET)`` in hex (QEMU parses both as
        hex); each is read as it is written.
        """
        key = self.vmcoreinfo_phys_base.get(info.machine)
        value = vmcoreinfo.get(key) if key else None
        if value is None:
            return info.phys_base
        try:
            number = int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            return info.phys_base
        return number & 0xFFFFFFFFFFFFFFFF

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        """
        Return the dump info of a vmcore whose vCPU notes (``(name, type,
        descriptor)``) are this target's, as its ``arch_dump.c`` writes them,
        or None: how a kdump file, which names no ELF machine, tells its
        architecture.
        """
        return None

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        """
        Return the guest-physical address of a Linux kernel image address
        (a ``SYMBOL()`` of VMCOREINFO), or None where this is not known.
        """
        return None


def enumerator_name(enum_type: Type, value: int) -> Optional[str]:
    """The name of *value* among the enumerators of *enum_type* (typedefs followed), or None."""
    for name, v in enum_type.unaliased().enumerators or ():
        if v == value:
            return str(name)
    return None


def enum_constant(prog: Program, *names: str) -> int:
    """
    Return the value of the first of *names* that QEMU's debug info has as an
    enumerator (their names change between versions), or 0 if none.
    """
    for name in names:
        try:
            return int(prog[name].value_())
        except KeyError:
            continue
    return 0


def softfloat_exception_bits(
    prog: Program, flags: int, table: Sequence[Tuple[Tuple[str, ...], int]]
) -> int:
    """
    A target's exception bits for softfloat's ``float_exception_flags``
    *flags*: the OR of the bits of each ``(flag names, bits)`` of *table*
    where *flags* has any of the named ``float_flag_*`` enumerators (a name
    this QEMU's debug info lacks counts as no flag: QEMU renames them).
    """
    bits = 0
    for names, target_bits in table:
        mask = 0
        for name in names:
            mask |= enum_constant(prog, name)
        if flags & mask:
            bits |= target_bits
    return bits
