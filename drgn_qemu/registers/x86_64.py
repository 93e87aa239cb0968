# SPDX-License-Identifier: GPL-2.0-or-later
"""
x86 registers as HMP prints them
--------------------------------

HMP's ``info registers`` for x86 guests, ``x86_cpu_dump_state()``: the
general registers, segments, descriptor tables, control and debug
registers, and with ``-a`` the FPU and SSE/AVX registers, 32-bit or 64-bit
as the vCPU runs. :mod:`drgn_qemu.arch.x86_64` writes the dump's notes.
"""

from typing import List

from drgn import Object

from drgn_qemu.arch.base import softfloat_exception_bits
from drgn_qemu.arch.x86_64 import (
    CC_A,
    CC_C,
    CC_O,
    CC_P,
    CC_S,
    CC_Z,
    FPUS_IE,
    FPUS_OE,
    FPUS_PE,
    FPUS_UE,
    FPUS_ZE,
    HF_LMA_MASK,
    HF_SMM_SHIFT,
    R_EAX,
    R_EBP,
    R_EBX,
    R_ECX,
    R_EDI,
    R_EDX,
    R_ESI,
    R_ESP,
    XSTATE_HI16_ZMM_MASK,
    XSTATE_OPMASK_MASK,
    XSTATE_SSE_MASK,
    XSTATE_YMM_MASK,
    XSTATE_ZMM_HI256_MASK,
    x86_cpu,
)
from drgn_qemu.executable import printed_format

__all__ = (
    "cpu_compute_eflags",
    "cpu_dump_state",
    "x86_cpu_dump_state",
)


# include/target/i386/cpu.h
HF_CPL_MASK = 3
HF_INHIBIT_IRQ_SHIFT = 3
HF_PE_MASK = 1 << 7
HF_CS64_MASK = 1 << 15
DF_MASK = 0x400
DESC_B_MASK = 1 << 22
DESC_L_MASK = 1 << 21
DESC_P_MASK = 1 << 15
DESC_DPL_SHIFT = 13
DESC_S_MASK = 1 << 12
DESC_CS_MASK = 1 << 11
DESC_C_MASK = DESC_E_MASK = 1 << 10
DESC_R_MASK = DESC_W_MASK = 1 << 9
DESC_A_MASK = 1 << 8
_SYS_TYPE_NAME = (
    ("Reserved", "TSS16-avl", "LDT", "TSS16-busy", "CallGate16", "TaskGate", "IntGate16",
     "TrapGate16", "Reserved", "TSS32-avl", "Reserved", "TSS32-busy", "CallGate32",
     "Reserved", "IntGate32", "TrapGate32"),
    ("<hiword>", "Reserved", "LDT", "Reserved", "Reserved", "Reserved", "Reserved",
     "Reserved", "Reserved", "TSS64-avl", "Reserved", "TSS64-busy", "CallGate64",
     "Reserved", "IntGate64", "TrapGate64"),
)  # fmt: skip


def cpu_compute_eflags(env: Object) -> int:
    """
    EFLAGS as QEMU's ``cpu_compute_eflags()`` gives it for a vCPU outside
    TCG's execution loop: ``env->eflags`` (into which leaving the loop
    folded the lazily computed condition codes) and the direction flag.

    :param env: ``CPUX86State *``
    """
    return (env.eflags.value_() | (env.df.value_() & DF_MASK)) & 0xFFFFFFFF


def _seg_cache(env: Object, name: str, sc: Object, hflags: int) -> str:
    flags = sc.flags.value_()
    if hflags & HF_CS64_MASK:
        line = f"{name:<3}={sc.selector.value_():04x} {sc.base.value_():016x} "
    else:
        line = f"{name:<3}={sc.selector.value_():04x} {sc.base.value_() & 0xFFFFFFFF:08x} "
    line += f"{sc.limit.value_():08x} {flags & 0x00FFFF00:08x}"
    if not hflags & HF_PE_MASK or not flags & DESC_P_MASK:
        return line
    line += f" DPL={(flags >> DESC_DPL_SHIFT) & 3} "
    if flags & DESC_S_MASK:
        if flags & DESC_CS_MASK:
            line += "CS64" if flags & DESC_L_MASK else ("CS32" if flags & DESC_B_MASK else "CS16")
            line += f" [{'C' if flags & DESC_C_MASK else '-'}{'R' if flags & DESC_R_MASK else '-'}"
        else:
            line += "DS  " if flags & DESC_B_MASK or hflags & HF_LMA_MASK else "DS16"
            line += f" [{'E' if flags & DESC_E_MASK else '-'}{'W' if flags & DESC_W_MASK else '-'}"
        line += f"{'A' if flags & DESC_A_MASK else '-'}]"
    else:
        line += _SYS_TYPE_NAME[1 if hflags & HF_LMA_MASK else 0][(flags >> 8) & 15]
    return line


def _mxcsr(env: Object) -> int:
    """
    ``env->mxcsr`` with the SSE exceptions softfloat has gathered
    (``update_mxcsr_from_sse_status()``).
    """
    flags = env.sse_status.float_exception_flags.value_()
    table = [
        (("float_flag_invalid",), FPUS_IE),
        (("float_flag_divbyzero",), FPUS_ZE),
        (("float_flag_overflow",), FPUS_OE),
        (("float_flag_underflow",), FPUS_UE),
        (("float_flag_inexact",), FPUS_PE),
        (("float_flag_output_denormal_flushed", "float_flag_output_denormal"), FPUS_UE | FPUS_PE),
    ]
    mxcsr = env.mxcsr.value_() | softfloat_exception_bits(env.prog_, flags, table)
    return mxcsr & 0xFFFFFFFF


#: How ``x86_cpu_dump_state()`` prints the vector registers, told by its
#: format string in QEMU's executable: QEMU 5.2 (``target/i386/helper.c``)
#: prints XMM registers only, as four 32-bit words run together; later ones
#: (``cpu-dump.c``, 7.2 and after as tested) YMM or ZMM views as XCR0 enables
#: them, and XMM as two 64-bit halves.
_XMM_FORMATS = [("xmm-32-digits", b"XMM%02d=%08x%08x%08x%08x")]


def x86_cpu_dump_state(cs: Object) -> str:
    """
    The registers of an x86 vCPU as QEMU's ``x86_cpu_dump_state()`` prints
    them for HMP ``info registers`` (``CPU_DUMP_FPU``): general registers
    and flags, segment caches, descriptor tables, control and debug
    registers, EFER, x87 and SSE/AVX registers.

    :param cs: ``CPUState *``
    """
    env = x86_cpu(cs).env
    hflags = env.hflags.value_()
    out = _general_registers(cs, env, hflags) + _system_registers(env, hflags)
    out += _fpu_registers(cs, env, hflags)
    return "\n".join(out) + "\n"


def _general_registers(cs: Object, env: Object, hflags: int) -> List[str]:
    """General registers, the instruction pointer, flags and state (``RAX=`` to ``RIP=``)."""
    eflags = cpu_compute_eflags(env)
    regs = [r.value_() for r in env.regs]
    bits = "".join(
        c if eflags & m else "-"
        for c, m in (("D", DF_MASK), ("O", CC_O), ("S", CC_S), ("Z", CC_Z), ("A", CC_A),
                     ("P", CC_P), ("C", CC_C))
    )  # fmt: skip
    status = (
        f"[{bits}] CPL={hflags & HF_CPL_MASK} II={(hflags >> HF_INHIBIT_IRQ_SHIFT) & 1} "
        f"A20={(env.a20_mask.value_() >> 20) & 1} SMM={(hflags >> HF_SMM_SHIFT) & 1} "
        f"HLT={cs.halted.value_()}"
    )
    out = []
    if hflags & HF_CS64_MASK:
        names = ["RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP"]
        order = [R_EAX, R_EBX, R_ECX, R_EDX, R_ESI, R_EDI, R_EBP, R_ESP]
        values = [regs[i] for i in order] + regs[8:16]
        names += ["R8 ", "R9 ", "R10", "R11", "R12", "R13", "R14", "R15"]
        for row in range(4):
            out.append(
                " ".join(f"{names[i]}={values[i]:016x}" for i in range(row * 4, row * 4 + 4))
            )
        out.append(f"RIP={env.eip.value_():016x} RFL={eflags:08x} {status}")
    else:
        names = ["EAX", "EBX", "ECX", "EDX", "ESI", "EDI", "EBP", "ESP"]
        order = [R_EAX, R_EBX, R_ECX, R_EDX, R_ESI, R_EDI, R_EBP, R_ESP]
        values = [regs[i] & 0xFFFFFFFF for i in order]
        out.append(" ".join(f"{names[i]}={values[i]:08x}" for i in range(4)))
        out.append(" ".join(f"{names[i]}={values[i]:08x}" for i in range(4, 8)))
        out.append(f"EIP={env.eip.value_() & 0xFFFFFFFF:08x} EFL={eflags:08x} {status}")
    return out


def _system_registers(env: Object, hflags: int) -> List[str]:
    """Segment caches, descriptor tables, control and debug registers, EFER."""
    out = []
    for i, name in enumerate(("ES", "CS", "SS", "DS", "FS", "GS")):
        out.append(_seg_cache(env, name, env.segs[i], hflags))
    out.append(_seg_cache(env, "LDT", env.ldt, hflags))
    out.append(_seg_cache(env, "TR", env.tr, hflags))
    cr = [env.cr[i].value_() for i in range(5)]
    dr = [env.dr[i].value_() for i in range(8)]
    if hflags & HF_LMA_MASK:
        out.append(f"GDT=     {env.gdt.base.value_():016x} {env.gdt.limit.value_():08x}")
        out.append(f"IDT=     {env.idt.base.value_():016x} {env.idt.limit.value_():08x}")
        out.append(
            f"CR0={cr[0] & 0xFFFFFFFF:08x} CR2={cr[2]:016x} CR3={cr[3]:016x} "
            f"CR4={cr[4] & 0xFFFFFFFF:08x}"
        )
        out.append("".join(f"DR{i}={dr[i]:016x} " for i in range(4)))
        out.append(f"DR6={dr[6]:016x} DR7={dr[7]:016x}")
    else:
        out.append(
            f"GDT=     {env.gdt.base.value_() & 0xFFFFFFFF:08x} {env.gdt.limit.value_():08x}"
        )
        out.append(
            f"IDT=     {env.idt.base.value_() & 0xFFFFFFFF:08x} {env.idt.limit.value_():08x}"
        )
        out.append(" ".join(f"CR{i}={cr[i] & 0xFFFFFFFF:08x}" for i in (0, 2, 3, 4)))
        # TARGET_FMT_lx: target_ulong, 16 digits in qemu-system-x86_64.
        out.append("".join(f"DR{i}={dr[i]:016x} " for i in range(4)))
        out.append(f"DR6={dr[6]:016x} DR7={dr[7]:016x}")
    out.append(f"EFER={env.efer.value_():016x}")
    return out


def _fpu_registers(cs: Object, env: Object, hflags: int) -> List[str]:
    """x87 state and registers, then XMM, YMM or ZMM registers as XCR0 enables them."""
    out = []
    fptag = 0
    for i in range(8):
        fptag |= (0 if env.fptags[i].value_() else 1) << i
    fpstt = env.fpstt.value_()
    fsw = (env.fpus.value_() & ~0x3800) | (fpstt & 7) << 11
    out.append(
        f"FCW={env.fpuc.value_():04x} FSW={fsw & 0xFFFF:04x} [ST={fpstt}] FTW={fptag:02x} "
        f"MXCSR={_mxcsr(env):08x}"
    )
    fpr = [
        f"FPR{i}={env.fpregs[i].d.low.value_():016x} {env.fpregs[i].d.high.value_():04x}"
        for i in range(8)
    ]
    out += [f"{fpr[i]} {fpr[i + 1]}" for i in range(0, 8, 2)]
    xcr0 = env.xcr0.value_()
    avx512 = XSTATE_OPMASK_MASK | XSTATE_ZMM_HI256_MASK | XSTATE_HI16_ZMM_MASK
    avx512 |= XSTATE_YMM_MASK | XSTATE_SSE_MASK
    avx = XSTATE_YMM_MASK | XSTATE_SSE_MASK

    def q(i: int, n: int) -> int:
        return int(env.xmm_regs[i]._q_ZMMReg[n].value_())

    nb = 16 if hflags & HF_CS64_MASK else 8
    if printed_format(cs.prog_, _XMM_FORMATS, "xmm-ymm-zmm") == "xmm-32-digits":
        # XMM registers only, 32 digits each, whatever XCR0 says.
        xmm = [f"XMM{i:02d}={q(i, 1):016x}{q(i, 0):016x}" for i in range(nb)]
        out += [f"{xmm[i]} {xmm[i + 1]}" for i in range(0, len(xmm), 2)]
    elif xcr0 & avx512 == avx512:
        ops = [f"Opmask{i:02d}={env.opmask_regs[i].value_():016x}" for i in range(8)]
        out += [" ".join(ops[i : i + 4]) for i in (0, 4)]
        for i in range(32 if hflags & HF_CS64_MASK else 8):
            out.append(f"ZMM{i:02d}=" + " ".join(f"{q(i, n):016x}" for n in range(7, -1, -1)))
    elif xcr0 & avx == avx:
        for i in range(16 if hflags & HF_CS64_MASK else 8):
            out.append(f"YMM{i:02d}=" + " ".join(f"{q(i, n):016x}" for n in range(3, -1, -1)))
    else:
        xmm = [f"XMM{i:02d}={q(i, 1):016x} {q(i, 0):016x}" for i in range(nb)]
        out += [f"{xmm[i]} {xmm[i + 1]}" for i in range(0, len(xmm), 2)]
    return out


def cpu_dump_state(cpu: Object) -> str:
    """
    HMP ``info registers`` of one vCPU, as this target's QEMU prints it.

    :param cpu: ``CPUState *``
    """
    return x86_cpu_dump_state(cpu)
