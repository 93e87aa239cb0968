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

from drgn import Object, Program, cast, container_of, sizeof

from drgn_qemu.arch import ArchDumpInfo, GuestArch, enumerator_name
from drgn_qemu.elf import ELFCLASS64, ELFDATA2MSB, NT_FPREGSET, NT_PRSTATUS, elf_note
from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.accel import tcg_enabled
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "EM_S390",
    "S390X",
    "calc_cc",
    "s390_cpu",
    "s390_cpu_dump_state",
    "s390_cpu_get_psw_mask",
    "s390_has_feat",
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
    """Return the ``S390CPU *`` of a ``CPUState *`` (``S390_CPU(cs)``)."""
    return container_of(cpu, "S390CPU", "parent_obj")


def _u64(obj: Object) -> int:
    return int(obj.value_()) & 0xFFFFFFFFFFFFFFFF


#: ``PSW_MASK_CC``: the condition code's bits of the PSW mask.
PSW_MASK_CC = 3 << 44
_M64 = (1 << 64) - 1


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _compare(a: int, b: int) -> int:
    return 0 if a == b else 1 if a < b else 2


def cc_op_name(prog: Program, cc_op: int) -> str:
    """The name of a TCG ``enum cc_op`` value, as QEMU's ``cc_name()``."""
    return enumerator_name(prog.type("enum cc_op"), cc_op) or "(null)"


def calc_cc(env: Object) -> int:
    """
    The condition code TCG keeps lazily as ``cc_op`` and its operands
    (QEMU's ``calc_cc()``), for the operations a stopped vCPU is usually
    left with: constants, comparisons, not-zero, logical add and subtract.

    :param env: ``CPUS390XState``
    :raises UnsupportedError: for the other operations, not computed yet
    """
    prog = env.prog_
    op = env.cc_op.value_()
    if op <= 3:
        return int(op)
    name = cc_op_name(prog, op)
    src, dst = _u64(env.cc_src), _u64(env.cc_dst)
    if name == "CC_OP_NZ":
        return int(dst != 0)
    if name in ("CC_OP_LTGT_32", "CC_OP_LTGT0_32"):
        return _compare(_signed(dst if name.endswith("0_32") else src, 32),
                        0 if name.endswith("0_32") else _signed(dst, 32))  # fmt: skip
    if name in ("CC_OP_LTGT_64", "CC_OP_LTGT0_64"):
        return _compare(_signed(dst if name.endswith("0_64") else src, 64),
                        0 if name.endswith("0_64") else _signed(dst, 64))  # fmt: skip
    if name == "CC_OP_LTUGTU_32":
        return _compare(src & 0xFFFFFFFF, dst & 0xFFFFFFFF)
    if name == "CC_OP_LTUGTU_64":
        return _compare(src, dst)
    if name in ("CC_OP_ADDU", "CC_OP_SUBU"):
        carry = (src + (1 if name == "CC_OP_SUBU" else 0)) & _M64
        return int(dst != 0) + 2 * carry
    raise UnsupportedError(
        f"computing the s390x condition code of TCG's {name} is not supported yet"
    )


def s390_cpu_get_psw_mask(env: Object) -> int:
    """The PSW mask with TCG's condition code put in (``s390_cpu_get_psw_mask()``)."""
    mask = _u64(env.psw.mask)
    if tcg_enabled(env.prog_):
        mask = (mask & ~PSW_MASK_CC) | (calc_cc(env) << 44)
    return mask


def s390_has_feat(cpu: Object, feature: str) -> bool:
    """
    Whether the CPU model has *feature* (an ``S390Feat`` name such as
    ``S390_FEAT_VECTOR``), as ``s390_has_feat()`` asks the first vCPU's
    model (``cpu->model->features``, a bitmap).
    """
    prog = cpu.prog_
    model = cpu.model.read_()
    if not model:
        return False
    bit = prog[feature].value_()
    words = model.features
    word_bits = 8 * sizeof(words[0])
    return bool(words[bit // word_bits].value_() >> (bit % word_bits) & 1)


def s390_cpu_dump_state(cpu: Object, first: Object) -> str:
    """
    The registers of an s390x vCPU as QEMU's ``s390_cpu_dump_state()``
    prints them with ``CPU_DUMP_FPU`` (HMP ``info registers``): the PSW (and,
    under TCG, the condition code or its lazy operation), R0-R15, the vector
    (or floating-point) registers, C0-C15.

    :param cpu: ``S390CPU *``
    :param first: the first vCPU (``S390CPU *``), whose model says whether
        there are vector registers
    """
    env = cpu.env
    prog = cpu.prog_
    out = [f"PSW=mask {s390_cpu_get_psw_mask(env):016x} addr {_u64(env.psw.addr):016x}"]
    op = env.cc_op.value_()
    if not tcg_enabled(prog):
        out.append("\n")
    elif op > 3:
        out.append(f" cc {cc_op_name(prog, op):>15}\n")
    else:
        out.append(f" cc {op:02x}\n")
    for i in range(16):
        out.append(f"R{i:02d}={_u64(env.regs[i]):016x}" + ("\n" if i % 4 == 3 else " "))
    if s390_has_feat(first, "S390_FEAT_VECTOR"):
        for i in range(32):
            hi, lo = _u64(env.vregs[i][0]), _u64(env.vregs[i][1])
            out.append(f"V{i:02d}={hi:016x}{lo:016x}" + ("\n" if i % 2 else " "))
    else:
        for i in range(16):
            # get_freg(): floating-point register i is the high half of vector i.
            out.append(f"F{i:02d}={_u64(env.vregs[i][0]):016x}" + ("\n" if i % 4 == 3 else " "))
    for i in range(16):
        out.append(f"C{i:02d}={_u64(env.cregs[i]):016x}" + ("\n" if i % 4 == 3 else " "))
    out.append("\n")
    return "".join(out)


class S390X(GuestArch):
    name = "s390x"
    page_size = 4096
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
            vregs = [[_u64(env.vregs[i][j]) for j in (0, 1)] for i in range(32)]
            prstatus = struct.pack(
                _PRSTATUS,
                pid,
                _u64(env.psw.mask),
                _u64(env.psw.addr),
                *(_u64(env.regs[i]) for i in range(16)),
                *(env.aregs[i].value_() for i in range(16)),
            )
            # get_freg(): floating-point register i is the high half of vector i.
            fpregset = struct.pack(">I4x16Q", env.fpc.value_(), *(v[0] for v in vregs[:16]))
            notes.append(elf_note(b"CORE", NT_PRSTATUS, prstatus, info.endian))
            notes.append(elf_note(b"CORE", NT_FPREGSET, fpregset, info.endian))
            linux = [
                (NT_S390_PREFIX, struct.pack(">I", env.psa.value_() & 0xFFFFFFFF)),
                (NT_S390_CTRS, struct.pack(">16Q", *(_u64(env.cregs[i]) for i in range(16)))),
                (NT_S390_TIMER, struct.pack(">Q", _u64(env.cputm))),
                (NT_S390_TODCMP, struct.pack(">Q", _u64(env.ckc))),
                (NT_S390_TODPREG, struct.pack(">I", env.todpr.value_() & 0xFFFFFFFF)),
                (NT_S390_VXRS_LOW, struct.pack(">16Q", *(v[1] for v in vregs[:16]))),
                (NT_S390_VXRS_HIGH, struct.pack(">32Q", *(x for v in vregs[16:] for x in v))),
                (NT_S390_GS_CB, struct.pack(">4Q", *(_u64(env.gscb[i]) for i in range(4)))),
            ]
            notes += [elf_note(b"LINUX", t, d, info.endian) for t, d in linux]
        return b"".join(notes)

    def cpu_dump_state(self, cpu: Object) -> str:
        first = first_cpu(cpu.prog_)
        return s390_cpu_dump_state(s390_cpu(cpu), s390_cpu(first if first else cpu))

    def describe_cpu(self, cpu: Object) -> str:
        env = s390_cpu(cpu).env
        return (
            f"psw=0x{_u64(env.psw.mask):016x} 0x{_u64(env.psw.addr):x} "
            f"prefix=0x{env.psa.value_():x}"
        )
