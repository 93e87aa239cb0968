# SPDX-License-Identifier: GPL-2.0-or-later
"""
LoongArch guests of ``qemu-system-loongarch64`` (``target/loongarch``),
dumped as QEMU's ``target/loongarch/arch_dump.c`` does: EM_LOONGARCH,
ELFCLASS64, little-endian; per vCPU a "CORE" ``NT_PRSTATUS`` (r0-r31, ERA
and BADV, FP valid) and a "CORE" ``NT_PRFPREG`` (f0-f31, the condition
flags, FCSR).
"""

import struct
from typing import Dict, List, Optional, Tuple

from drgn import Object, Program, container_of

from drgn_qemu.arch.base import ArchDumpInfo, GuestArch
from drgn_qemu.elf import ELFCLASS64, ELFDATA2LSB, NT_PRFPREG, NT_PRSTATUS, elf_note, struct_order
from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "EM_LOONGARCH",
    "LoongArch64",
    "loongarch_cpu",
    "read_fcc",
)

EM_LOONGARCH = 258
# loongarch_elf_prstatus: pad1[32], pr_pid, pad2[76], gpr[32], pad1[1],
# csr_era, csr_badv, pad2[10], pr_fpvalid, pad3[4].
_PRSTATUS = "32xI76x32Q8xQQ80xI4x"
# loongarch_fpu_struct (packed, 268 bytes): fpr[32], fcc, fcsr.
_FPU = "32QQI"
#: The kernel's direct-mapped window holds the kernel image: its low 48 bits
#: are the physical address.
_DMW_MASK = (1 << 48) - 1


def loongarch_cpu(cpu: Object) -> Object:
    """
    Return the ``LoongArchCPU *`` of a ``CPUState *`` (``LOONGARCH_CPU(cs)``).

    :param cpu: ``CPUState *``
    """
    return container_of(cpu, "LoongArchCPU", "parent_obj")


def read_fcc(env: Object) -> int:
    """
    The eight condition flags as one word, as QEMU's ``read_fcc()``.

    :param env: ``CPULoongArchState *``
    """
    return sum((env.cf[i].value_() & 0xFF) << (8 * i) for i in range(8))


class LoongArch64(GuestArch):
    name = "loongarch64"
    uname_machine = "loongarch64"

    def matches(self, prog: Program) -> bool:
        """A ``LoongArchCPU`` (``target/loongarch``)."""
        try:
            prog.type("LoongArchCPU")
            return True
        except LookupError:
            return False

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        return ArchDumpInfo(EM_LOONGARCH, ELFCLASS64, ELFDATA2LSB)

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        order = struct_order(info.endian)
        notes = []
        for cs in for_each_cpu(prog):
            env = loongarch_cpu(cs).env
            prstatus = struct.pack(
                order + _PRSTATUS,
                cs.cpu_index.value_() + 1,
                *(env.gpr[i].value_() for i in range(32)),
                env.CSR_ERA.value_(),
                env.CSR_BADV.value_(),
                1,
            )
            # QEMU stores fcsr0 through cpu_to_dump64() into a 32-bit field:
            # the low half of the 64-bit value in the dump's byte order.
            fcsr = env.fcsr0.value_() & 0xFFFFFFFF
            fpu = struct.pack(
                order + _FPU,
                *(env.fpr[i].vreg.UD[0].value_() for i in range(32)),
                read_fcc(env),
                fcsr,
            )
            notes.append(elf_note(b"CORE", NT_PRSTATUS, prstatus, info.endian))
            notes.append(elf_note(b"CORE", NT_PRFPREG, fpu, info.endian))
        return b"".join(notes)

    def describe_cpu(self, cpu: Object) -> str:
        env = loongarch_cpu(cpu).env
        return f"pc=0x{env.pc.value_():x} sp=0x{env.gpr[3].value_():x}"

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        kinds = {(name, kind, len(d)) for name, kind, d in notes}
        if (b"CORE", NT_PRSTATUS, 480) in kinds and (b"CORE", NT_PRFPREG, 268) in kinds:
            return ArchDumpInfo(EM_LOONGARCH, ELFCLASS64, endian, page_size)
        return None

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        return vaddr & _DMW_MASK
