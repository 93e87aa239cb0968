# SPDX-License-Identifier: GPL-2.0-or-later
"""
RISC-V guests of ``qemu-system-riscv64`` (``target/riscv``), dumped as
QEMU's ``target/riscv/arch_dump.c`` does: EM_RISCV, ELFCLASS64, little-endian
unless ``mstatus.UBE``; per vCPU one "CORE" ``NT_PRSTATUS`` (``struct
elf_prstatus`` with the kernel's ``user_regs_struct``: pc, then x1-x31).
"""

import struct
from typing import Dict, List, Optional, Tuple

from drgn import Object, Program, container_of, sizeof

from drgn_qemu.arch.base import ArchDumpInfo, GuestArch, dump_first_cpu
from drgn_qemu.elf import ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, NT_PRSTATUS, elf_note, struct_order
from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "EM_RISCV",
    "RISCV64",
    "riscv_cpu",
)

EM_RISCV = 243
#: ``MSTATUS_UBE``: user-mode accesses big-endian (QEMU's choice of byte order).
MSTATUS_UBE = 0x40
# riscv64_elf_prstatus: pad1[32], pr_pid, pad2[76], pc, regs[31], pad3[8].
_PRSTATUS = "32xI76x32Q8x"
_PRSTATUS_SIZE = 376


def riscv_cpu(cpu: Object) -> Object:
    """
    Return the ``RISCVCPU *`` of a ``CPUState *`` (``RISCV_CPU(cs)``).

    :param cpu: ``CPUState *``
    """
    return container_of(cpu, "RISCVCPU", "parent_obj")


MSTATUS_FS, MSTATUS_VS, MSTATUS_XS = 0x6000, 0x600, 0x18000
HSTATUS_VGEIN_SHIFT, HSTATUS_VGEIN_BITS = 12, 6
HSTATUS_VSXL, HSTATUS_VSBE = 0x300000000, 0x20
MIP_VSSIP, MIP_VSTIP, MIP_VSEIP, MIP_LCOFIP = 1 << 2, 1 << 6, 1 << 10, 1 << 13


class RISCV64(GuestArch):
    name = "riscv64"
    uname_machine = "riscv64"

    def matches(self, prog: Program) -> bool:
        """A ``RISCVCPU`` whose ``gpr`` are 64-bit (``qemu-system-riscv64``)."""
        try:
            prog.type("RISCVCPU")
            gpr = prog.type("CPURISCVState").member("gpr").type
        except LookupError:
            return False
        return sizeof(gpr.type) == 8

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        cpu = dump_first_cpu(prog)
        mstatus = riscv_cpu(cpu).env.mstatus.value_()
        endian = ELFDATA2MSB if mstatus & MSTATUS_UBE else ELFDATA2LSB
        return ArchDumpInfo(EM_RISCV, ELFCLASS64, endian)

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        order = struct_order(info.endian)
        notes = []
        for cs in for_each_cpu(prog):
            env = riscv_cpu(cs).env
            regs = [env.gpr[i].value_() for i in range(1, 32)]
            prstatus = struct.pack(
                order + _PRSTATUS, cs.cpu_index.value_() + 1, env.pc.value_(), *regs
            )
            notes.append(elf_note(b"CORE", NT_PRSTATUS, prstatus, info.endian))
        return b"".join(notes)

    def describe_cpu(self, cpu: Object) -> str:
        env = riscv_cpu(cpu).env
        return f"pc=0x{env.pc.value_():x} sp=0x{env.gpr[2].value_():x} priv={env.priv.value_()}"

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        # RISC-V writes nothing but a 376-byte NT_PRSTATUS per vCPU.
        kinds = {(name, kind, len(d)) for name, kind, d in notes}
        if kinds and all(k == (b"CORE", NT_PRSTATUS, _PRSTATUS_SIZE) for k in kinds):
            return ArchDumpInfo(EM_RISCV, ELFCLASS64, endian, page_size)
        return None

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        # Kernel image addresses: physical = virtual - va_kernel_pa_offset.
        try:
            offset = int(vmcoreinfo["NUMBER(va_kernel_pa_offset)"], 16)
        except (KeyError, ValueError):
            return None
        return (vaddr - offset) & 0xFFFFFFFFFFFFFFFF
