# SPDX-License-Identifier: GPL-2.0-or-later
"""
s390x registers as HMP prints them
----------------------------------

For s390x guests, HMP's ``info registers`` is ``s390_cpu_dump_state()``:
the PSW, whose condition code TCG keeps as a pending operation
(:func:`calc_cc` computes it as QEMU does), then the general, floating-point
or vector, and control registers. The vCPU notes of the dump are in
:mod:`drgn_qemu.arch.s390x`.
"""

from drgn import Object, Program, sizeof

from drgn_qemu.arch.base import enumerator_name
from drgn_qemu.arch.s390x import s390_cpu, u64
from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.accel import tcg_enabled
from drgn_qemu.helpers.cpu import first_cpu

__all__ = (
    "calc_cc",
    "cc_op_name",
    "cpu_dump_state",
    "s390_cpu_dump_state",
    "s390_cpu_get_psw_mask",
    "s390_has_feat",
)


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
    src, dst = u64(env.cc_src), u64(env.cc_dst)
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
    """
    The PSW mask with TCG's condition code put in (``s390_cpu_get_psw_mask()``).

    :param env: ``CPUS390XState *``
    """
    mask = u64(env.psw.mask)
    if tcg_enabled(env.prog_):
        mask = (mask & ~PSW_MASK_CC) | (calc_cc(env) << 44)
    return mask


def s390_has_feat(cpu: Object, feature: str) -> bool:
    """
    Whether the CPU model has *feature* (an ``S390Feat`` name such as
    ``S390_FEAT_VECTOR``), as ``s390_has_feat()`` asks the first vCPU's
    model (``cpu->model->features``, a bitmap).

    :param cpu: ``S390CPU *``
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
    out = [f"PSW=mask {s390_cpu_get_psw_mask(env):016x} addr {u64(env.psw.addr):016x}"]
    op = env.cc_op.value_()
    if not tcg_enabled(prog):
        out.append("\n")
    elif op > 3:
        out.append(f" cc {cc_op_name(prog, op):>15}\n")
    else:
        out.append(f" cc {op:02x}\n")
    for i in range(16):
        out.append(f"R{i:02d}={u64(env.regs[i]):016x}" + ("\n" if i % 4 == 3 else " "))
    if s390_has_feat(first, "S390_FEAT_VECTOR"):
        for i in range(32):
            hi, lo = u64(env.vregs[i][0]), u64(env.vregs[i][1])
            out.append(f"V{i:02d}={hi:016x}{lo:016x}" + ("\n" if i % 2 else " "))
    else:
        for i in range(16):
            # get_freg(): floating-point register i is the high half of vector i.
            out.append(f"F{i:02d}={u64(env.vregs[i][0]):016x}" + ("\n" if i % 4 == 3 else " "))
    for i in range(16):
        out.append(f"C{i:02d}={u64(env.cregs[i]):016x}" + ("\n" if i % 4 == 3 else " "))
    out.append("\n")
    return "".join(out)


def cpu_dump_state(cpu: Object) -> str:
    """
    HMP ``info registers`` of one vCPU, as this target's QEMU prints it
    (``s390_cpu_dump_state()``, which compares with the first vCPU).

    :param cpu: ``CPUState *``
    """
    first = first_cpu(cpu.prog_)
    return s390_cpu_dump_state(s390_cpu(cpu), s390_cpu(first if first else cpu))
