# SPDX-License-Identifier: GPL-2.0-or-later
"""
s390x guests of ``qemu-system-s390x`` (``target/s390x``), dumped as QEMU's
``target/s390x/arch_dump.c`` does: EM_S390, ELFCLASS64, big-endian; per vCPU
"CORE" NT_PRSTATUS and NT_FPREGSET, then the "LINUX" notes: prefix, control
registers, CPU timer, TOD clock comparator, TOD programmable register,
vector registers (low halves of 0-15, all of 16-31) and the guarded-storage
control block. (The protected-virtualization note and sections exist only
for a KVM guest in secure execution, which QEMU alone can ask the
Ultravisor for; a dump from a core cannot.)
"""

import struct
from typing import List, Optional, Tuple

from drgn import Object, Program, cast, container_of

from drgn_qemu.arch.base import ArchDumpInfo, GuestArch
from drgn_qemu.elf import ELFCLASS64, ELFDATA2MSB, NT_FPREGSET, NT_PRSTATUS, elf_note
from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "EM_S390",
    "s390_cpu",
    "S390X",
    "u64",
)

EM_S390 = 22
NT_S390_TIMER = 0x301
NT_S390_TODCMP = 0x302
NT_S390_TODPREG = 0x303
NT_S390_CTRS = 0x304
NT_S390_PREFIX = 0x305
NT_S390_VXRS_LOW = 0x309
NT_S390_VXRS_HIGH = 0x30A
NT_S390_GS_CB = 0x30B

# S390xElfPrstatus: pad1[32], pid, pad2[76], psw[2], gprs[16], acrs[16], pad3[16].
_PRSTATUS = ">32xI76x18Q16I16x"


def s390_cpu(cpu: Object) -> Object:
    """
    Return the ``S390CPU *`` of a ``CPUState *`` (``S390_CPU(cs)``).

    :param cpu: ``CPUState *``
    """
    return container_of(cpu, "S390CPU", "parent_obj")


def u64(obj: Object) -> int:
    """
    The value of an integer object, as the unsigned 64 bits QEMU prints.

    :param obj: an integer object
    """
    return int(obj.value_()) & 0xFFFFFFFFFFFFFFFF


class S390X(GuestArch):
    name = "s390x"
    uname_machine = "s390x"

    def matches(self, prog: Program) -> bool:
        """An ``S390CPU`` (``target/s390x``)."""
        try:
            prog.type("S390CPU")
            return True
        except LookupError:
            return False

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        machine = prog["current_machine"]
        try:
            ccw = cast("S390CcwMachineState *", machine)
            pv = bool(machine) and ccw.type_.type.has_member("pv") and bool(ccw.pv)
        except LookupError:
            pv = False
        if pv:
            raise UnsupportedError(
                "the guest runs in protected virtualization (secure execution): its "
                "registers are the Ultravisor's, which only a live QEMU can ask for"
            )
        return ArchDumpInfo(EM_S390, ELFCLASS64, ELFDATA2MSB)

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        # Only s390x writes the LINUX NT_S390_PREFIX note.
        if any(name == b"LINUX" and kind == NT_S390_PREFIX for name, kind, _ in notes):
            return ArchDumpInfo(EM_S390, ELFCLASS64, ELFDATA2MSB, page_size)
        return None

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        notes = []
        for cs in for_each_cpu(prog):
            env = s390_cpu(cs).env
            pid = cs.cpu_index.value_() + 1
            vregs = [[u64(env.vregs[i][j]) for j in (0, 1)] for i in range(32)]
            prstatus = struct.pack(
                _PRSTATUS,
                pid,
                u64(env.psw.mask),
                u64(env.psw.addr),
                *(u64(env.regs[i]) for i in range(16)),
                *(env.aregs[i].value_() for i in range(16)),
            )
            # get_freg(): floating-point register i is the high half of vector i.
            fpregset = struct.pack(">I4x16Q", env.fpc.value_(), *(v[0] for v in vregs[:16]))
            notes.append(elf_note(b"CORE", NT_PRSTATUS, prstatus, info.endian))
            notes.append(elf_note(b"CORE", NT_FPREGSET, fpregset, info.endian))
            linux = [
                (NT_S390_PREFIX, struct.pack(">I", env.psa.value_() & 0xFFFFFFFF)),
                (NT_S390_CTRS, struct.pack(">16Q", *(u64(env.cregs[i]) for i in range(16)))),
                (NT_S390_TIMER, struct.pack(">Q", u64(env.cputm))),
                (NT_S390_TODCMP, struct.pack(">Q", u64(env.ckc))),
                (NT_S390_TODPREG, struct.pack(">I", env.todpr.value_() & 0xFFFFFFFF)),
                (NT_S390_VXRS_LOW, struct.pack(">16Q", *(v[1] for v in vregs[:16]))),
                (NT_S390_VXRS_HIGH, struct.pack(">32Q", *(x for v in vregs[16:] for x in v))),
                (NT_S390_GS_CB, struct.pack(">4Q", *(u64(env.gscb[i]) for i in range(4)))),
            ]
            notes += [elf_note(b"LINUX", t, d, info.endian) for t, d in linux]
        return b"".join(notes)

    def describe_cpu(self, cpu: Object) -> str:
        env = s390_cpu(cpu).env
        return (
            f"psw=0x{u64(env.psw.mask):016x} 0x{u64(env.psw.addr):x} prefix=0x{env.psa.value_():x}"
        )
