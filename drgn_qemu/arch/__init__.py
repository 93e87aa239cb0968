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

from typing import Dict, List, Tuple

from drgn import Program

from drgn_qemu.arch.base import ArchDumpInfo, CpuSummary, GuestArch, enum_constant, enumerator_name
from drgn_qemu.errors import UnsupportedError

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
