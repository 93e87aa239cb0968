# SPDX-License-Identifier: GPL-2.0-or-later
"""
Arm guests of ``qemu-system-aarch64`` (``target/arm``), dumped as QEMU's
``target/arm/arch_dump.c`` does, with the byte order of EL1
(``SCTLR_EL1.EE``) and the lowest guest RAM address as ``phys_base``:

- AArch64 vCPUs: EM_AARCH64, ELFCLASS64; per vCPU a "CORE" ``NT_PRSTATUS``
  (``struct elf_prstatus`` with ``user_pt_regs``), a "CORE" ``NT_PRFPREG``
  (``user_fpsimd_state``) and, with SVE, a "LINUX" ``NT_ARM_SVE``;
  kdump-compressed dumps use 64 KiB pages (the largest AArch64 page);
- 32-bit vCPUs (``-cpu cortex-a15``...): EM_ARM, ELFCLASS32; per vCPU a
  "CORE" ``NT_PRSTATUS`` (r0-r15 and CPSR) and, with VFP, a "LINUX"
  ``NT_ARM_VFP``; 4 KiB kdump pages.
"""

import struct
from typing import Dict, List, Optional, Tuple

from drgn import Object, Program, container_of

from drgn_qemu.arch import ArchDumpInfo, GuestArch, enum_constant
from drgn_qemu.elf import (
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    NT_PRFPREG,
    NT_PRSTATUS,
    elf_note,
    struct_order,
)
from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "AArch64",
    "EM_AARCH64",
    "EM_ARM",
    "aarch64_cpu_dump_state",
    "arm_cpu",
    "arm_cpu_dump_state",
    "arm_el_is_aa64",
    "arm_hcr_el2_eff",
    "cpsr_read",
    "fp_exception_el",
    "pstate_read",
    "sve_exception_el",
    "vfp_get_fpcr",
    "vfp_get_fpscr",
    "vfp_get_fpsr",
)

EM_AARCH64 = 183
NT_ARM_SVE = 0x405
NT_ARM_VFP = 0x400
EM_ARM = 40
CPSR_AIF = (1 << 6) | (1 << 7) | (1 << 8)
# FPSCR bits that are FPSR's (NZCV, QC, cumulative exceptions) and FPCR's.
FPSCR_FPSR_MASK = 0xF0000000 | (1 << 27) | 0x9F
FPSCR_FPCR_MASK = 0x9F00 | (7 << 16) | (1 << 19) | (3 << 20) | (3 << 22) | (7 << 24)
#: ``SVE_PT_REGS_SVE``: the note holds the full SVE registers.
SVE_PT_REGS_SVE = 1
SCR_NS = 1 << 0
SCR_EEL2 = 1 << 18
HCR_TGE = 1 << 27
HCR_E2H = 1 << 34
#: ``SCTLR_EE``: exceptions (and so the kernel) big-endian.
SCTLR_EE = 1 << 25
# FPSR bits (target/arm/cpu.h).
FPSR_IOC, FPSR_DZC, FPSR_OFC, FPSR_UFC, FPSR_IXC, FPSR_IDC = 1, 2, 4, 8, 16, 128
FPSR_QC = 1 << 27
FPCR_AH = 1 << 1
FPCR_FZ = 1 << 24

# aarch64_elf_prstatus: pad1[32], pr_pid, pad2[76], regs[31], sp, pc, pstate,
# pr_fpvalid, pad3[4].
_PRSTATUS = "32xI76x34QI4x"
# aarch64_user_vfp_state: vregs[64], fpsr, fpcr, pad[8].
_VFP = "64QII8x"


def arm_cpu(cpu: Object) -> Object:
    """Return the ``ARMCPU *`` of a ``CPUState *`` (``ARM_CPU(cs)``)."""
    return container_of(cpu, "ARMCPU", "parent_obj")


def pstate_read(env: Object) -> int:
    """Return PSTATE of a ``CPUARMState`` as QEMU's ``pstate_read()`` assembles it."""
    zf = 1 if env.ZF.value_() == 0 else 0
    value = (
        (env.NF.value_() & 0x80000000)
        | (zf << 30)
        | (env.CF.value_() << 29)
        | ((env.VF.value_() & 0x80000000) >> 3)
        | env.pstate.value_()
        | env.daif.value_()
    )
    if env.type_.has_member("btype"):
        value |= env.btype.value_() << 10
    return value & 0xFFFFFFFF


def _flags(env: Object, fpst: str) -> int:
    prog = env.prog_
    return env.vfp.fp_status[prog[fpst].value_()].float_exception_flags.value_()


def _exceptbits_from_host(prog: Program, host: int, ah: bool) -> int:
    """QEMU's ``vfp_exceptbits_from_host()``: softfloat flags to FPSR bits."""

    bits = 0
    if host & enum_constant(prog, "float_flag_invalid"):
        bits |= FPSR_IOC
    if host & enum_constant(prog, "float_flag_divbyzero"):
        bits |= FPSR_DZC
    if host & enum_constant(prog, "float_flag_overflow"):
        bits |= FPSR_OFC
    if host & (
        enum_constant(prog, "float_flag_underflow")
        | enum_constant(prog, "float_flag_output_denormal_flushed")
    ):
        bits |= FPSR_UFC
    if host & enum_constant(prog, "float_flag_inexact"):
        bits |= FPSR_IXC
    if host & enum_constant(prog, "float_flag_input_denormal_flushed"):
        bits |= FPSR_IDC
    if ah and host & enum_constant(prog, "float_flag_input_denormal_used"):
        bits |= FPSR_IDC
    if ah and host & enum_constant(prog, "float_flag_output_denormal_flushed"):
        bits |= FPSR_IXC
    return bits


def vfp_get_fpsr(env: Object) -> int:
    """
    Return FPSR as QEMU's ``vfp_get_fpsr()``: ``vfp.fpsr``, the exception
    flags softfloat has gathered since (``vfp_get_fpsr_from_host()``) and QC.
    Reads the ``CPUARMState.vfp`` layout with ``fpsr``, ``fpcr`` and
    ``fp_status[FPST_*]`` (QEMU 10).

    :raises UnsupportedError: for an older layout
    """
    prog = env.prog_
    vfp = env.vfp
    if not vfp.type_.has_member("fpsr") or not vfp.type_.has_member("fp_status"):
        raise UnsupportedError(
            "this QEMU keeps the Arm FP status in a layout drgn-qemu does not read "
            "(CPUARMState.vfp has no fpsr/fp_status members)"
        )
    fpcr = vfp.fpcr.value_()
    a32 = _flags(env, "FPST_A32") | _flags(env, "FPST_STD")
    denormal_flushed = int(prog["float_flag_input_denormal_flushed"].value_())
    denormal_used = int(prog["float_flag_input_denormal_used"].value_())
    a32 |= _flags(env, "FPST_A32_F16") & ~denormal_flushed
    a32 |= _flags(env, "FPST_STD_F16") & ~denormal_flushed
    a64 = _flags(env, "FPST_A64")
    a64 |= _flags(env, "FPST_A64_F16") & ~(denormal_flushed | denormal_used)
    if fpcr & (FPCR_FZ | FPCR_AH) != FPCR_FZ:
        a64 &= ~denormal_flushed
    fpsr = vfp.fpsr.value_()
    fpsr |= _exceptbits_from_host(prog, a64, bool(fpcr & FPCR_AH))
    fpsr |= _exceptbits_from_host(prog, a32, False)
    if any(vfp.qc[i].value_() for i in range(len(vfp.qc))):
        fpsr |= FPSR_QC
    return fpsr & 0xFFFFFFFF


def vfp_get_fpcr(env: Object) -> int:
    """Return FPCR as QEMU's ``vfp_get_fpcr()`` assembles it."""
    vfp = env.vfp
    fpcr = vfp.fpcr.value_() | (vfp.vec_len.value_() << 16) | (vfp.vec_stride.value_() << 20)
    if env.type_.has_member("v7m") and env.v7m.type_.has_member("ltpsize"):
        fpcr |= env.v7m.ltpsize.value_() << 16
    return fpcr & 0xFFFFFFFF


def _has_sve(cpu: Object) -> bool:
    # cpu_isar_feature(aa64_sve): ID_AA64PFR0_EL1.SVE, bits [35:32].
    return bool((cpu.isar.id_aa64pfr0.value_() >> 32) & 0xF)


def _feature(env: Object, name: str) -> bool:
    return bool(env.features.value_() & (1 << env.prog_[name].value_()))


def arm_current_el(env: Object) -> int:
    """The vCPU's exception level (``arm_current_el()``, A-profile)."""
    if env.aarch64.value_():
        return (env.pstate.value_() >> 2) & 3
    # AArch32: User mode is EL0; the others are EL1 under a 64-bit kernel.
    return 0 if env.uncached_cpsr.value_() & 0x1F == 0x10 else 1


def sve_vqm1_for_el(cpu: Object, el: int) -> int:
    """
    QEMU's ``sve_vqm1_for_el()``: the SVE vector length in quadwords, less
    one, that exception level *el* sees: the largest supported length that
    ZCR_EL1/2/3 (SMCR in streaming mode) allow. EL2 is taken as enabled when
    the CPU has it and runs non-secure or with SCR_EL3.EEL2.
    """
    env = cpu.env
    sm = bool(env.svcr.value_() & 1) if env.type_.has_member("svcr") else False
    cr = env.vfp.smcr_el if sm else env.vfp.zcr_el
    vq_map = (cpu.sme_vq if sm else cpu.sve_vq).map.value_()
    el3 = _feature(env, "ARM_FEATURE_EL3")
    scr = env.cp15.scr_el3.value_()
    el2 = _feature(env, "ARM_FEATURE_EL2") and (not el3 or bool(scr & (SCR_NS | SCR_EEL2)))
    hcr = env.cp15.hcr_el2.value_()
    in_host = el == 0 and el2 and hcr & (HCR_E2H | HCR_TGE) == HCR_E2H | HCR_TGE
    length = 15  # ARM_MAX_VQ - 1
    if el <= 1 and not in_host:
        length = min(length, cr[1].value_() & 0xF)
    if el <= 2 and el2:
        length = min(length, cr[2].value_() & 0xF)
    if el3:
        length = min(length, cr[3].value_() & 0xF)
    vq_map &= (1 << (length + 1)) - 1
    if vq_map:
        return vq_map.bit_length() - 1
    return (cpu.sme_vq.map.value_() & -cpu.sme_vq.map.value_()).bit_length() - 1


def cpsr_read(env: Object) -> int:
    """CPSR of an AArch32 vCPU as QEMU's ``cpsr_read()`` assembles it."""
    zf = 1 if env.ZF.value_() == 0 else 0
    condexec = env.condexec_bits.value_()
    value = (
        env.uncached_cpsr.value_()
        | (env.NF.value_() & 0x80000000)
        | (zf << 30)
        | (env.CF.value_() << 29)
        | ((env.VF.value_() & 0x80000000) >> 3)
        | (env.QF.value_() << 27)
        | (env.thumb.value_() << 5)
        | ((condexec & 3) << 25)
        | ((condexec & 0xFC) << 8)
        | (env.GE.value_() << 16)
        | (env.daif.value_() & CPSR_AIF)
    )
    return value & 0xFFFFFFFF


def vfp_get_fpscr(env: Object) -> int:
    """FPSCR as QEMU's ``vfp_get_fpscr()``: FPCR and FPSR bits together."""
    return (vfp_get_fpcr(env) & FPSCR_FPCR_MASK) | (vfp_get_fpsr(env) & FPSCR_FPSR_MASK)


def _has_vfp_simd(cpu: Object) -> bool:
    # cpu_isar_feature(aa32_vfp_simd): MVFR0.SIMDREG, bits [3:0].
    return bool(cpu.isar.mvfr0.value_() & 0xF)


def _round_up16(n: int) -> int:
    return (n + 15) & ~15


def sve_size_vq(vq: int) -> int:
    """Bytes of an NT_ARM_SVE note for vectors of *vq* quadwords (``sve_size_vq()``)."""
    preg_end = 16 + vq * 16 * 32 + vq * 2 * 17
    return _round_up16(_round_up16(preg_end) + 8)


def sve_note(cpu: Object, order: str) -> bytes:
    """
    The NT_ARM_SVE descriptor QEMU's ``aarch64_write_elf64_sve()`` writes:
    ``user_sve_header``, Z0-Z31, P0-P15 and FFR, FPSR and FPCR. As QEMU,
    the Z and P registers are copied as the host holds them.
    """
    prog = cpu.prog_
    env = cpu.env
    vq = sve_vqm1_for_el(cpu, arm_current_el(env)) + 1
    max_vq = cpu.sve_max_vq.value_()
    out = bytearray(sve_size_vq(vq))
    struct.pack_into(
        order + "IIHHHH", out, 0, sve_size_vq(vq), sve_size_vq(max_vq), vq * 16,
        max_vq * 16, SVE_PT_REGS_SVE, 0,
    )  # fmt: skip
    zregs = 16
    for i in range(32):
        at = zregs + vq * 16 * i
        out[at : at + vq * 16] = prog.read(env.vfp.zregs[i].d.address_, vq * 16)
    pregs = zregs + vq * 16 * 32
    for i in range(17):
        at = pregs + vq * 2 * i
        out[at : at + vq * 2] = prog.read(env.vfp.pregs[i].p.address_, vq * 2)
    fpsr = _round_up16(pregs + vq * 2 * 17)
    struct.pack_into(order + "II", out, fpsr, vfp_get_fpsr(env), vfp_get_fpcr(env))
    return bytes(out)


# HCR_EL2, SCR_EL3 and PSTATE bits (target/arm/cpu.h).
HCR_RW = 1 << 31
HCR_NV, HCR_NV1, HCR_NV2 = 1 << 42, 1 << 43, 1 << 45
SCR_RW = 1 << 10
PSTATE_SP = 1
PSTATE_BTYPE = 3 << 10
PSTATE_N, PSTATE_Z, PSTATE_C, PSTATE_V = 1 << 31, 1 << 30, 1 << 29, 1 << 28
CPSR_T = 1 << 5
ARM_CPU_MODE_MON = 0x16
_AARCH32_MODES = ("usr", "fiq", "irq", "svc", "???", "???", "mon", "abt",
                  "???", "???", "hyp", "und", "???", "???", "???", "sys")  # fmt: skip


def _field(value: int, shift: int, bits: int) -> int:
    return (value >> shift) & ((1 << bits) - 1)


def arm_is_secure_below_el3(env: Object) -> bool:
    """``arm_is_secure_below_el3()``: EL3 exists and ``SCR_EL3.NS`` is clear."""
    return _feature(env, "ARM_FEATURE_EL3") and not env.cp15.scr_el3.value_() & SCR_NS


def arm_is_el2_enabled(env: Object) -> bool:
    """``arm_is_el2_enabled()``: EL2 exists, and runs non-secure or with ``SCR_EL3.EEL2``."""
    return _feature(env, "ARM_FEATURE_EL2") and (
        not arm_is_secure_below_el3(env) or bool(env.cp15.scr_el3.value_() & SCR_EEL2)
    )


def arm_el_is_aa64(cpu: Object, el: int) -> bool:
    """``arm_el_is_aa64()``: whether exception level *el* (1-3) is AArch64."""
    env = cpu.env
    aa64 = _feature(env, "ARM_FEATURE_AARCH64")
    if el == 3:
        return aa64
    if _feature(env, "ARM_FEATURE_EL3"):
        scr = env.cp15.scr_el3.value_()
        if scr & SCR_RW:
            rw = True
        elif scr & SCR_NS:  # arm_scr_rw_eff(): EL2 without AArch32
            rw = (
                _feature(env, "ARM_FEATURE_EL2") and _field(cpu.isar.id_aa64pfr0.value_(), 8, 4) < 2
            )
        else:
            rw = bool(scr & SCR_EEL2)
        aa64 = aa64 and rw
    if el == 2:
        return aa64
    if arm_is_el2_enabled(env):
        aa64 = aa64 and bool(env.cp15.hcr_el2.value_() & HCR_RW)
    return aa64


def arm_hcr_el2_eff(cpu: Object) -> int:
    """
    The bits of ``arm_hcr_el2_eff()`` (effective HCR_EL2) that the register
    dump and the FP trap checks read: TGE, E2H, NV, NV1, NV2. Zero when EL2
    is not enabled; E2H and the NV bits are RES0 for an AArch32 EL2.
    """
    env = cpu.env
    if not arm_is_el2_enabled(env):
        return 0
    hcr = env.cp15.hcr_el2.value_() & (HCR_TGE | HCR_E2H | HCR_NV | HCR_NV1 | HCR_NV2)
    if not arm_el_is_aa64(cpu, 2):
        hcr &= HCR_TGE
    return hcr


def fp_exception_el(cpu: Object, el: int) -> int:
    """
    QEMU's ``fp_exception_el()`` for an A-profile vCPU: the exception level
    an FP or SIMD instruction at *el* traps to (CPACR_EL1.FPEN, NSACR,
    CPTR_EL2, CPTR_EL3), or 0 when it does not trap.
    """
    env = cpu.env
    if not _feature(env, "ARM_FEATURE_V6"):
        return 0
    hcr = arm_hcr_el2_eff(cpu)
    secure = arm_is_secure_below_el3(env)
    if hcr & (HCR_E2H | HCR_TGE) != HCR_E2H | HCR_TGE:
        fpen = _field(env.cp15.cpacr_el1.value_(), 20, 2)
        if fpen in (0, 2) or (fpen == 1 and el == 0):
            if not arm_el_is_aa64(cpu, 3) and (el == 3 or secure):
                return 3
            if el <= 1:
                return 1
    if (
        _feature(env, "ARM_FEATURE_EL3")
        and not arm_el_is_aa64(cpu, 3)
        and el <= 2
        and not secure
        and not _field(env.cp15.nsacr.value_(), 10, 1)
    ):
        return 2 if el == 2 else 1
    if el <= 2:
        cptr2 = env.cp15.cptr_el[2].value_()
        if hcr & HCR_E2H:
            fpen = _field(cptr2, 20, 2)
            if fpen in (0, 2) or (fpen == 1 and el == 0 and hcr & HCR_TGE):
                return 2
        elif arm_is_el2_enabled(env) and _field(cptr2, 10, 1):
            return 2
    if _field(env.cp15.cptr_el[3].value_(), 10, 1):
        return 3
    return 0


def sve_exception_el(cpu: Object, el: int) -> int:
    """QEMU's ``sve_exception_el()``: where an SVE instruction at *el* traps to, or 0."""
    env = cpu.env
    hcr = env.cp15.hcr_el2.value_()
    el2 = arm_is_el2_enabled(env)
    in_host = el == 0 and el2 and hcr & (HCR_E2H | HCR_TGE) == HCR_E2H | HCR_TGE
    if el <= 1 and not in_host:
        zen = _field(env.cp15.cpacr_el1.value_(), 16, 2)
        if zen in (0, 2) or (zen == 1 and el == 0):
            return 1
    if el <= 2 and el2:
        cptr2 = env.cp15.cptr_el[2].value_()
        if hcr & HCR_E2H:
            zen = _field(cptr2, 16, 2)
            if zen in (0, 2) or (zen == 1 and el == 0 and hcr & HCR_TGE):
                return 2
        elif _field(cptr2, 8, 1):
            return 2
    if _feature(env, "ARM_FEATURE_EL3") and not _field(env.cp15.cptr_el[3].value_(), 8, 1):
        return 3
    return 0


def _has_sme(cpu: Object) -> bool:
    # cpu_isar_feature(aa64_sme): ID_AA64PFR1_EL1.SME, bits [27:24].
    return bool(_field(cpu.isar.id_aa64pfr1.value_(), 24, 4))


def aarch64_cpu_dump_state(cpu: Object) -> str:
    """
    The registers of an AArch64 vCPU as QEMU's ``aarch64_cpu_dump_state()``
    prints them with ``CPU_DUMP_FPU`` (HMP ``info registers``): PC, X0-X30,
    SP, PSTATE with its flags, exception level and SP selection, SVCR and
    BTYPE where the CPU has SME and BTI, the NV bits, then FPCR and FPSR and
    the SIMD registers (Q, or SVE's P, FFR and Z), unless FP traps at the
    current exception level ("FPU disabled").

    :param cpu: ``ARMCPU *``
    :raises UnsupportedError: for SME streaming mode or its ZA array, not
        printed yet
    """
    env = cpu.env
    psr = pstate_read(env)
    el = arm_current_el(env)
    out = [f" PC={env.pc.value_():016x} "]
    for i in range(32):
        value = env.xregs[i].value_()
        if i == 31:
            out.append(f" SP={value:016x}\n")
        else:
            out.append(f"X{i:02d}={value:016x}" + (" " if (i + 2) % 3 else "\n"))
    ns = ""
    if _feature(env, "ARM_FEATURE_EL3") and el != 3:
        ns = "NS " if env.cp15.scr_el3.value_() & SCR_NS else "S "
    flags = "".join(c if psr & bit else "-" for c, bit in
                    (("N", PSTATE_N), ("Z", PSTATE_Z), ("C", PSTATE_C), ("V", PSTATE_V)))  # fmt: skip
    out.append(f"PSTATE={psr:08x} {flags} {ns}EL{el}{'h' if psr & PSTATE_SP else 't'}")
    sme = _has_sme(cpu)
    svcr = env.svcr.value_() if sme else 0
    if sme:
        out.append(f"  SVCR={svcr:08x} {'Z' if svcr & 2 else '-'}{'S' if svcr & 1 else '-'}")
    if _field(cpu.isar.id_aa64pfr1.value_(), 0, 4):  # aa64_bti
        out.append(f"  BTYPE={(psr & PSTATE_BTYPE) >> 10}")
    hcr = arm_hcr_el2_eff(cpu)
    out.append("".join(name for name, bit in ((" NV", HCR_NV), (" NV1", HCR_NV1), (" NV2", HCR_NV2))
                       if hcr & bit))  # fmt: skip
    if fp_exception_el(cpu, el):
        out.append("    FPU disabled\n")
        return "".join(out)
    out.append(f"     FPCR={vfp_get_fpcr(env):08x} FPSR={vfp_get_fpsr(env):08x}\n")
    if svcr & 3:
        raise UnsupportedError("printing the registers of a vCPU using SME is not supported yet")
    zregs = env.vfp.zregs
    if _has_sve(cpu) and sve_exception_el(cpu, el) == 0:
        zcr_len = sve_vqm1_for_el(cpu, el)
        for i in range(17):
            if i == 16:
                out.append("FFR=")
                eol = True
            else:
                out.append(f"P{i:02d}=")
                eol = {0: i % 8 == 7, 1: i % 6 == 5, 2: i % 3 == 2, 3: i % 3 == 2}.get(
                    zcr_len, True
                )
            for j in range(zcr_len // 4, -1, -1):
                digits = 16 if j * 4 + 4 <= zcr_len + 1 else (zcr_len % 4 + 1) * 4
                value = env.vfp.pregs[i].p[j].value_()
                out.append(f"{value:0{digits}x}" + (":" if j else "\n" if eol else " "))
        for i in range(32):
            d = zregs[i].d
            if zcr_len == 0:
                out.append(f"Z{i:02d}={d[1].value_():016x}:{d[0].value_():016x}"
                           + ("\n" if i & 1 else " "))  # fmt: skip
            else:
                out.append(f"Z{i:02d}=")
                for j in range(zcr_len, -1, -1):
                    out.append(f"{d[j * 2 + 1].value_():016x}:{d[j * 2].value_():016x}"
                               + (":" if j else "\n"))  # fmt: skip
    else:
        for i in range(32):
            d = zregs[i].d
            out.append(f"Q{i:02d}={d[1].value_():016x}:{d[0].value_():016x}"
                       + ("\n" if i & 1 else " "))  # fmt: skip
    return "".join(out)


def arm_cpu_dump_state(cpu: Object) -> str:
    """
    The registers of an Arm vCPU as QEMU's ``arm_cpu_dump_state()`` prints
    them for HMP ``info registers``: AArch64 state as
    :func:`aarch64_cpu_dump_state`; AArch32 (A-profile) R0-R15, PSR with its
    flags, Thumb, security state and mode, then the VFP registers and FPSCR.

    :param cpu: ``ARMCPU *``
    """
    env = cpu.env
    if env.aarch64.value_():
        return aarch64_cpu_dump_state(cpu)
    out = []
    for i in range(16):
        out.append(f"R{i:02d}={env.regs[i].value_() & 0xFFFFFFFF:08x}"
                   + ("\n" if i % 4 == 3 else " "))  # fmt: skip
    psr = cpsr_read(env)
    ns = ""
    if _feature(env, "ARM_FEATURE_EL3") and psr & 0x1F != ARM_CPU_MODE_MON:
        ns = "NS " if env.cp15.scr_el3.value_() & SCR_NS else "S "
    flags = "".join(c if psr & bit else "-" for c, bit in
                    (("N", PSTATE_N), ("Z", PSTATE_Z), ("C", PSTATE_C), ("V", PSTATE_V)))  # fmt: skip
    out.append(
        f"PSR={psr:08x} {flags} {'T' if psr & CPSR_T else 'A'} {ns}"
        f"{_AARCH32_MODES[psr & 0xF]}{32 if psr & 0x10 else 26}\n"
    )
    simdreg = cpu.isar.mvfr0.value_() & 0xF  # MVFR0.SIMDREG
    count = 32 if simdreg >= 2 else 16 if simdreg else 0
    for i in range(count):
        v = env.vfp.zregs[i >> 1].d[i & 1].value_()
        out.append(f"s{i * 2:02d}={v & 0xFFFFFFFF:08x} s{i * 2 + 1:02d}={v >> 32:08x} "
                   f"d{i:02d}={v:016x}\n")  # fmt: skip
    out.append(f"FPSCR: {vfp_get_fpscr(env):08x}\n")
    return "".join(out)


class AArch64(GuestArch):
    name = "aarch64"
    page_size = 4096
    # QEMU writes "Unknown" in kdump headers (ELF_MACHINE_UNAME is x86 and
    # s390x only); the kernel's name is more use to readers.
    uname_machine = "aarch64"
    vmcoreinfo_phys_base = {EM_AARCH64: "NUMBER(PHYS_OFFSET)"}

    def matches(self, prog: Program) -> bool:
        """An ``ARMCPU`` whose ``CPUARMState`` has AArch64's ``xregs``."""
        try:
            prog.type("ARMCPU")
            return prog.type("CPUARMState").has_member("xregs")
        except LookupError:
            return False

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        cpu = first_cpu(prog)
        if not cpu:
            raise UnsupportedError("the QEMU program has no vCPUs")
        env = arm_cpu(cpu).env
        endian = ELFDATA2MSB if env.cp15.sctlr_el[1].value_() & SCTLR_EE else ELFDATA2LSB
        lowest = min((b.target_start for b in blocks), default=None)
        if not _feature(env, "ARM_FEATURE_AARCH64"):
            phys_base = lowest if lowest is not None and lowest < 0xFFFFFFFF else 0
            return ArchDumpInfo(EM_ARM, ELFCLASS32, endian, page_size=1 << 12, phys_base=phys_base)
        return ArchDumpInfo(
            EM_AARCH64, ELFCLASS64, endian, page_size=1 << 16, phys_base=lowest or 0
        )

    def _arm32_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        """QEMU's ``arm_cpu_write_elf32_note()`` for each vCPU."""
        order = struct_order(info.endian)
        notes = []
        for cs in for_each_cpu(prog):
            cpu = arm_cpu(cs)
            env = cpu.env
            fpvalid = _has_vfp_simd(cpu)
            regs = [env.regs[i].value_() & 0xFFFFFFFF for i in range(16)]
            # arm_elf_prstatus: pad1[24], pr_pid, pad2[44], regs[17], pad[4], pr_fpvalid.
            prstatus = struct.pack(
                order + "24xI44x17I4xI", cs.cpu_index.value_() + 1, *regs, cpsr_read(env), fpvalid
            )
            notes.append(elf_note(b"CORE", NT_PRSTATUS, prstatus, info.endian))
            if fpvalid:
                dregs = [env.vfp.zregs[i >> 1].d[i & 1].value_() for i in range(32)]
                vfp = struct.pack(order + "32QI", *dregs, vfp_get_fpscr(env))
                notes.append(elf_note(b"LINUX", NT_ARM_VFP, vfp, info.endian))
        return b"".join(notes)

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        if info.machine == EM_ARM:
            return self._arm32_notes(prog, info)
        order = struct_order(info.endian)
        notes = []
        for cs in for_each_cpu(prog):
            cpu = arm_cpu(cs)
            env = cpu.env
            pid = cs.cpu_index.value_() + 1
            # AArch32 state: QEMU first copies the AArch32 registers into
            # xregs (aarch64_sync_32_to_64); we write its last AArch64 copy.
            a64 = bool(env.aarch64.value_())
            regs = [env.xregs[i].value_() for i in range(31)]
            sp = env.xregs[31].value_() if a64 else 0
            prstatus = struct.pack(
                order + _PRSTATUS, pid, *regs, sp, env.pc.value_(), pstate_read(env), 1
            )
            notes.append(elf_note(b"CORE", NT_PRSTATUS, prstatus, info.endian))
            vregs = []
            for i in range(32):
                lo, hi = (env.vfp.zregs[i].d[j].value_() for j in (0, 1))
                # Big-endian notes swap the halves (QEMU does, on any host).
                vregs += [hi, lo] if info.endian == ELFDATA2MSB else [lo, hi]
            vfp = struct.pack(order + _VFP, *vregs, vfp_get_fpsr(env), vfp_get_fpcr(env))
            notes.append(elf_note(b"CORE", NT_PRFPREG, vfp, info.endian))
            if _has_sve(cpu):
                notes.append(elf_note(b"LINUX", NT_ARM_SVE, sve_note(cpu, order), info.endian))
        return b"".join(notes)

    def cpu_dump_state(self, cpu: Object) -> str:
        return arm_cpu_dump_state(arm_cpu(cpu))

    def describe_cpu(self, cpu: Object) -> str:
        env = arm_cpu(cpu).env
        if env.aarch64.value_():
            pc, sp, state = env.pc.value_(), env.xregs[31].value_(), "AArch64"
        else:
            pc, sp, state = env.regs[15].value_(), env.regs[13].value_(), "AArch32"
        return f"pc=0x{pc:x} sp=0x{sp:x} {state} EL{arm_current_el(env)}"

    def kdump_machine(self, info: ArchDumpInfo) -> str:
        return "arm" if info.machine == EM_ARM else self.uname_machine

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        # AArch64's elf_prstatus is 392 bytes; a 32-bit vCPU's 148, with NT_ARM_VFP.
        kinds = {(name, kind, len(d)) for name, kind, d in notes}
        if any(k[:2] == (b"CORE", NT_PRSTATUS) and k[2] == 392 for k in kinds):
            return ArchDumpInfo(EM_AARCH64, ELFCLASS64, endian, page_size)
        if any(k[:2] == (b"LINUX", NT_ARM_VFP) for k in kinds):
            return ArchDumpInfo(EM_ARM, ELFCLASS32, endian, page_size)
        return None

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        # Kernel image addresses: physical = virtual - kimage_voffset.
        try:
            voffset = int(vmcoreinfo["NUMBER(kimage_voffset)"], 16)
        except (KeyError, ValueError):
            return None
        return (vaddr - voffset) & 0xFFFFFFFFFFFFFFFF
