"""
Guest architectures
-------------------

Each guest architecture that drgn-qemu dumps has one module here that knows
its ELF machine, class, byte order and page size, and how to recognise the
QEMU target from the debug info. :func:`detect_arch` picks the module for a
program; :func:`get_arch` looks one up by the name given to ``--arch``.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List

from drgn import Program

from drgn_qemu.errors import UnsupportedError

__all__ = ("GuestArch", "detect_arch", "get_arch", "supported_arches")


@dataclass(frozen=True)
class GuestArch:
    """What the dump needs to know about a guest architecture."""

    #: Name used by ``--arch``.
    name: str
    #: ``e_machine`` of the vmcore.
    elf_machine: int
    #: ``ELFCLASS32`` or ``ELFCLASS64``.
    elf_class: int
    #: ``ELFDATA2LSB`` or ``ELFDATA2MSB``.
    elf_data: int
    #: Guest page size (``TARGET_PAGE_SIZE``).
    page_size: int
    #: Returns whether a program is a QEMU for this target.
    matches: Callable[[Program], bool]


def _registry() -> Dict[str, GuestArch]:
    from drgn_qemu.arch import x86_64

    return {arch.name: arch for arch in (x86_64.ARCH,)}


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
