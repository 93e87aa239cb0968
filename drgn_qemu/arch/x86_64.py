"""
x86_64 guests (``qemu-system-x86_64``, ``target/i386``).
"""

from drgn import Program

from drgn_qemu.arch import GuestArch
from drgn_qemu.elf import ELFCLASS64, ELFDATA2LSB

__all__ = ("ARCH", "EM_X86_64")

#: AMD x86-64 (``e_machine``).
EM_X86_64 = 62
#: ``CPU_NB_REGS`` of a 64-bit x86 target.
_CPU_NB_REGS64 = 16


def is_x86_64_qemu(prog: Program) -> bool:
    """
    Return whether a program is QEMU's x86_64 system emulator: it has an
    ``X86CPU`` type whose ``CPUX86State.regs`` holds 16 registers
    (``qemu-system-i386`` has 8).
    """
    try:
        regs = prog.type("CPUX86State").member("regs").type
    except LookupError:
        return False
    return regs.length == _CPU_NB_REGS64


ARCH = GuestArch(
    name="x86_64",
    elf_machine=EM_X86_64,
    elf_class=ELFCLASS64,
    elf_data=ELFDATA2LSB,
    page_size=4096,
    matches=is_x86_64_qemu,
)
