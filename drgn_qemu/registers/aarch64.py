# SPDX-License-Identifier: GPL-2.0-or-later
"""
Arm registers as HMP prints them
--------------------------------

HMP's ``info registers`` for Arm guests, as ``arm_cpu_dump_state()``
(``target/arm/cpu.c``) prints it: the AArch64 state (X registers, PSTATE,
then the FP/SIMD or SVE registers with ``-a``) or the AArch32 one. It reads
the ``CPUARMState`` whose registers :mod:`drgn_qemu.arch.aarch64` writes
into the dump's notes.
"""

from drgn import Object

from drgn_qemu.arch.aarch64 import (
    HCR_E2H,
    HCR_NV,
    HCR_NV1,
    HCR_NV2,
    HCR_TGE,
    PSTATE_C,
    PSTATE_N,
    PSTATE_V,
    PSTATE_Z,
    SCR_EEL2,
    SCR_NS,
    arm_cpu,
    arm_current_el,
    arm_feature,
    cpsr_read,
    has_sve,
    pstate_read,
    sve_vqm1_for_el,
    vfp_get_fpcr,
    vfp_get_fpscr,
    vfp_get_fpsr,
)
from drgn_qemu.errors import UnsupportedError

__all__ = (
    "aarch64_cpu_dump_state",
    "arm_cpu_dump_state",
    "arm_el_is_aa64",
    "arm_hcr_el2_eff",
    "arm_is_el2_enabled",
    "arm_is_secure_below_el3",
    "cpu_dump_state",
    "fp_exception_el",
    "sve_exception_el",
)


# HCR_EL2, SCR_EL3 and PSTATE bits (target/arm/cpu.h).
HCR_RW = 1 << 31
SCR_RW = 1 << 10
PSTATE_SP = 1
PSTATE_BTYPE = 3 << 10
CPSR_T = 1 << 5
ARM_CPU_MODE_MON = 0x16
_AARCH32_MODES = ("usr", "fiq", "irq", "svc", "???", "???", "mon", "abt",
                  "???", "???", "hyp", "und", "???", "???", "???", "sys")  # fmt: skip


def _field(value: int, shift: int, bits: int) -> int:
    return (value >> shift) & ((1 << bits) - 1)


def arm_is_secure_below_el3(env: Object) -> bool:
    """
    ``arm_is_secure_below_el3()``: EL3 exists and ``SCR_EL3.NS`` is clear.

    :param env: ``CPUARMState *``
    """
    return arm_feature(env, "ARM_FEATURE_EL3") and not env.cp15.scr_el3.value_() & SCR_NS


def arm_is_el2_enabled(env: Object) -> bool:
    """
    ``arm_is_el2_enabled()``: EL2 exists, and runs non-secure or with ``SCR_EL3.EEL2``.

    :param env: ``CPUARMState *``
    """
    return arm_feature(env, "ARM_FEATURE_EL2") and (
        not arm_is_secure_below_el3(env) or bool(env.cp15.scr_el3.value_() & SCR_EEL2)
    )


def arm_el_is_aa64(cpu: Object, el: int) -> bool:
    """
    ``arm_el_is_aa64()``: whether exception level *el* (1-3) is AArch64.

    :param cpu: ``ARMCPU *``
    """
    env = cpu.env
    aa64 = arm_feature(env, "ARM_FEATURE_AARCH64")
    if el == 3:
        return aa64
    if arm_feature(env, "ARM_FEATURE_EL3"):
        scr = env.cp15.scr_el3.value_()
        if scr & SCR_RW:
            rw = True
        elif scr & SCR_NS:  # arm_scr_rw_eff(): EL2 without AArch32
            rw = (
                arm_feature(env, "ARM_FEATURE_EL2")
                and _field(cpu.isar.id_aa64pfr0.value_(), 8, 4) < 2
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

    :param cpu: ``ARMCPU *``
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

    :param cpu: ``ARMCPU *``
    """
    env = cpu.env
    if not arm_feature(env, "ARM_FEATURE_V6"):
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
        arm_feature(env, "ARM_FEATURE_EL3")
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
    """
    QEMU's ``sve_exception_el()``: where an SVE instruction at *el* traps to, or 0.

    :param cpu: ``ARMCPU *``
    """
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
    if arm_feature(env, "ARM_FEATURE_EL3") and not _field(env.cp15.cptr_el[3].value_(), 8, 1):
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
    if arm_feature(env, "ARM_FEATURE_EL3") and el != 3:
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
    if has_sve(cpu) and sve_exception_el(cpu, el) == 0:
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
    if arm_feature(env, "ARM_FEATURE_EL3") and psr & 0x1F != ARM_CPU_MODE_MON:
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


def cpu_dump_state(cpu: Object) -> str:
    """
    HMP ``info registers`` of one vCPU, as this target's QEMU prints it.

    :param cpu: ``CPUState *``
    """
    return arm_cpu_dump_state(arm_cpu(cpu))
