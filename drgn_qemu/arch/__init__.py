# SPDX-License-Identifier: GPL-2.0-or-later
"""
Guest architectures
-------------------

Each guest architecture that drgn-qemu dumps is one module here, a subclass
of :class:`GuestArch` that knows how QEMU's ``target/*/arch_dump.c`` for that
target chooses the vmcore's ELF machine, class and byte order
(``cpu_get_dump_info()``) and writes its vCPU notes. :func:`detect_arch`
picks the module for a program; :func:`get_arch` looks one up by the name
given to ``--arch``. Adding a target is adding a module and listing it in
:func:`_registry`.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from drgn import Object, Program, Type

from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "ArchDumpInfo",
    "CpuSummary",
    "GuestArch",
    "arch_from_notes",
    "detect_arch",
    "enum_constant",
    "enumerator_name",
    "get_arch",
    "supported_arches",
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
    #: Guest page size (``TARGET_PAGE_SIZE``).
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

    def cpu_dump_state(self, cpu: Object) -> str:
        """
        Return a vCPU's registers as QEMU's ``cpu_dump_state()`` prints them
        for HMP ``info registers``.

        :param cpu: ``CPUState *``
        """
        raise UnsupportedError(f"printing {self.name} registers is not supported yet")

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


def _registry() -> Dict[str, GuestArch]:
    from drgn_qemu.arch import aarch64, loongarch64, ppc64, riscv64, s390x, x86_64

    arches: List[GuestArch] = [
        x86_64.X86_64(),
        aarch64.AArch64(),
        ppc64.PPC64(),
        s390x.S390X(),
        riscv64.RISCV64(),
        loongarch64.LoongArch64(),
    ]
    return {arch.name: arch for arch in arches}


def supported_arches() -> List[str]:
    """Return the names accepted by :func:`get_arch`."""
    return sorted(_registry())


def get_arch(name: str) -> GuestArch:
    """
    Return the guest architecture called *name*.

    :raises UnsupportedError: if drgn-qemu does not support it
    """
    try:
        return _registry()[name]
    except KeyError:
        raise UnsupportedError(
            f"unsupported guest architecture {name!r} (supported: {', '.join(supported_arches())})"
        ) from None


def arch_from_notes(
    notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
) -> Tuple[GuestArch, ArchDumpInfo]:
    """
    Return the guest architecture of a vmcore from its vCPU notes (see
    :meth:`GuestArch.dump_info_from_notes`).

    :raises UnsupportedError: if no supported target wrote such notes
    """
    for arch in _registry().values():
        info = arch.dump_info_from_notes(notes, endian, page_size)
        if info is not None:
            return arch, info
    raise UnsupportedError("the vmcore's vCPU notes are not those of a guest QEMU dumps")


def detect_arch(prog: Program) -> GuestArch:
    """
    Return the guest architecture of a QEMU program, recognised from its
    debug info (the target's CPU type), never from the executable's name.

    :raises UnsupportedError: if no supported target matches; ``--arch``
        overrides detection
    """
    for arch in _registry().values():
        if arch.matches(prog):
            return arch
    raise UnsupportedError(
        "could not detect the guest architecture from QEMU's debug info "
        f"(supported: {', '.join(supported_arches())}); name it with --arch"
    )
