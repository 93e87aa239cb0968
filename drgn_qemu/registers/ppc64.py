# SPDX-License-Identifier: GPL-2.0-or-later
"""
POWER registers as HMP prints them
----------------------------------

``ppc_cpu_dump_state()`` of ``target/ppc``, for HMP's ``info registers`` on
ppc64 guests (NIP, LR, CTR, XER, MSR, the GPRs, CR, then the SPRs);
:mod:`drgn_qemu.arch.ppc64` reads the same ``CPUPPCState`` for the dump.
"""

from typing import List, Optional

from drgn import Object, Program

from drgn_qemu.arch.base import enumerator_name
from drgn_qemu.arch.ppc64 import (
    SPR_DAR,
    SPR_DECR,
    SPR_DSISR,
    SPR_HID0,
    SPR_HSRR0,
    SPR_HSRR1,
    SPR_LPCR,
    SPR_PVR,
    SPR_SDR1,
    SPR_SPRG0,
    SPR_SRR0,
    SPR_SRR1,
    SPR_TBL,
    SPR_TBU,
    SPR_VRSAVE,
    cpu_read_xer,
    powerpc_cpu,
    ppc_bit,
    ppc_cpu_class,
    vsr_doubleword,
)
from drgn_qemu.errors import UnsupportedError
from drgn_qemu.helpers.accel import kvm_enabled

__all__ = (
    "cpu_dump_state",
    "cpu_ppc_load_decr",
    "cpu_ppc_load_tbl",
    "ppc_cpu_dump_state",
    "qemu_clock_get_ns_virtual",
)


SPR_PTCR = 0x1D0
#: ``PPC_TIMER_BOOKE`` of ``ppc_tb_t.flags`` (include/hw/ppc/ppc.h).
PPC_TIMER_BOOKE = 1 << 0
LPCR_LD = ppc_bit(46)


def qemu_clock_get_ns_virtual(prog: Program) -> Optional[int]:
    """
    ``qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL)`` of a stopped VM without icount:
    ``timers_state.cpu_clock_offset``, frozen while the vCPUs are stopped.
    None while the VM ran (the clock then moved on with the host's, to a
    time the core does not say).
    """
    state = prog["timers_state"]
    if state.cpu_ticks_enabled.value_():
        return None
    return int(state.cpu_clock_offset.value_())


def _ns_to_tb(freq: int, ns: int) -> int:
    return (ns * freq // 1_000_000_000) & 0xFFFFFFFFFFFFFFFF  # muldiv64()


def cpu_ppc_load_tbl(env: Object, now: int) -> int:
    """
    The time base at virtual time *now* (``cpu_ppc_load_tbl()`` under TCG).

    :param env: ``CPUPPCState *``
    """
    tb_env = env.tb_env
    return (_ns_to_tb(tb_env.tb_freq.value_(), now) + tb_env.tb_offset.value_()) & (2**64 - 1)


def cpu_ppc_load_decr(cpu: Object, now: int) -> int:
    """
    The decrementer at virtual time *now* (``cpu_ppc_load_decr()`` under TCG).

    :param cpu: ``PowerPCCPU *``
    """
    env = cpu.env
    tb_env = env.tb_env
    n = _ns_to_tb(tb_env.decr_freq.value_(), now)
    nxt = tb_env.decr_next.value_() & (2**64 - 1)
    decr = 0 if nxt < n and tb_env.flags.value_() & PPC_TIMER_BOOKE else (nxt - n) & (2**64 - 1)
    if env.spr[SPR_LPCR].value_() & LPCR_LD:
        bits = ppc_cpu_class(cpu).lrg_decr_bits.value_()
        decr &= (1 << bits) - 1
        if decr >> (bits - 1):
            decr = (decr - (1 << bits)) & (2**64 - 1)  # sextract64()
        return decr
    return decr & 0xFFFFFFFF


def ppc_cpu_dump_state(cpu: Object) -> str:
    """
    The registers of a POWER vCPU as QEMU's ``ppc_cpu_dump_state()`` prints
    them with ``CPU_DUMP_FPU`` (HMP ``info registers``), for Book3S CPUs: NIP,
    LR, CTR, XER, MSR, HID0, hflags and MMU indexes, the time base and
    decrementer (QEMU's virtual clock, stopped with the VM), GPRs, CR, the
    reservation, FPRs and FPSCR, then the SPRs of the CPU's exception and
    MMU models.

    :param cpu: ``PowerPCCPU *``
    :raises UnsupportedError: for BookE and 40x vCPUs, not printed yet
    """
    prog = cpu.prog_
    env = cpu.env
    spr = env.spr
    out = [
        f"NIP {env.nip.value_():016x}   LR {env.lr.value_():016x} CTR {env.ctr.value_():016x} "
        f"XER {cpu_read_xer(env):016x} CPU#{cpu.parent_obj.cpu_index.value_()}\n",
    ]
    hflags = env.hflags.value_()
    iidx = (hflags >> prog["HFLAGS_IMMU_IDX"].value_()) & 7
    didx = (hflags >> prog["HFLAGS_DMMU_IDX"].value_()) & 7
    out.append(f"MSR {env.msr.value_():016x} HID0 {spr[SPR_HID0].value_():016x}  HF "
               f"{hflags & 0xFFFFFFFF:08x} iidx {iidx} didx {didx}\n")  # fmt: skip
    out.append(_time_base(cpu))
    out += _gprs_cr_fprs(env)
    out += _sprs(env)
    return "".join(out)


def _time_base(cpu: Object) -> str:
    """The ``TB ... DECR ...`` line (empty without a time base)."""
    prog = cpu.prog_
    env = cpu.env
    spr = env.spr
    u64 = 2**64 - 1
    if env.tb_env:
        if kvm_enabled(prog):
            tbl, decr = spr[SPR_TBL].value_(), spr[SPR_DECR].value_()
        else:
            now = qemu_clock_get_ns_virtual(prog)
            if now is None:
                raise UnsupportedError(
                    "the VM was running: its time base at the time of the core is not known"
                )
            tbl, decr = cpu_ppc_load_tbl(env, now), cpu_ppc_load_decr(cpu, now)
        tbu = (spr[SPR_TBU].value_() if kvm_enabled(prog) else tbl >> 32) & 0xFFFFFFFF
        return f"TB {tbu:08d} {tbl & u64:08d} DECR {decr & u64}\n"
    return ""


def _gprs_cr_fprs(env: Object) -> List[str]:
    """The GPRs, CR with the reservation, the FPRs and FPSCR."""
    prog = env.prog_
    u64 = 2**64 - 1
    out = []
    spe = env.flags.value_() & prog["POWERPC_FLAG_SPE"].value_()
    for i in range(32):
        gpr = env.gpr[i].value_() & u64
        if spe:
            gpr = (gpr & 0xFFFFFFFF) | (env.gprh[i].value_() & 0xFFFFFFFF) << 32
        out.append((f"GPR{i:02d}" if i % 4 == 0 else "") + f" {gpr:016x}"
                   + ("\n" if i % 4 == 3 else ""))  # fmt: skip
    crf = [env.crf[i].value_() for i in range(8)]
    marks = []
    for c in crf:
        a = "L" if c & 8 else "G" if c & 4 else "E" if c & 2 else "-"
        marks.append(f" {a}{'O' if c & 1 else ' '}")
    out.append("CR " + "".join(f"{c:01x}" for c in crf) + "  [" + "".join(marks)
               + f" ]     RES {env.reserve_length.value_():03x}@"
               f"{env.reserve_addr.value_() & u64:016x}\n")  # fmt: skip
    for i in range(32):
        fpr = vsr_doubleword(env, i, 0)
        out.append((f"FPR{i:02d}" if i % 4 == 0 else "") + f" {fpr:016x}"
                   + ("\n" if i % 4 == 3 else ""))  # fmt: skip
    out.append(f"FPSCR {env.fpscr.value_() & u64:016x}\n")
    return out


def _sprs(env: Object) -> List[str]:
    """The SPRs of the CPU's exception and MMU models."""
    prog = env.prog_
    spr = env.spr
    u64 = 2**64 - 1
    out = []

    def r(n: int) -> str:
        return f"{spr[n].value_() & u64:016x}"

    out.append(f" SRR0 {r(SPR_SRR0)}  SRR1 {r(SPR_SRR1)}    PVR {r(SPR_PVR)} "
               f"VRSAVE {r(SPR_VRSAVE)}\n")  # fmt: skip
    out.append(f"SPRG0 {r(SPR_SPRG0)} SPRG1 {r(SPR_SPRG0 + 1)}  SPRG2 {r(SPR_SPRG0 + 2)}  "
               f"SPRG3 {r(SPR_SPRG0 + 3)}\n")  # fmt: skip
    out.append(f"SPRG4 {r(SPR_SPRG0 + 4)} SPRG5 {r(SPR_SPRG0 + 5)}  SPRG6 {r(SPR_SPRG0 + 6)}  "
               f"SPRG7 {r(SPR_SPRG0 + 7)}\n")  # fmt: skip
    excp = enumerator_name(env.excp_model.type_, env.excp_model.value_()) or ""
    if excp in ("POWERPC_EXCP_POWER7", "POWERPC_EXCP_POWER8", "POWERPC_EXCP_POWER9",
                "POWERPC_EXCP_POWER10", "POWERPC_EXCP_POWER11"):  # fmt: skip
        out.append(f"HSRR0 {r(SPR_HSRR0)} HSRR1 {r(SPR_HSRR1)}\n")
    elif excp in ("POWERPC_EXCP_BOOKE", "POWERPC_EXCP_40x"):
        raise UnsupportedError(f"printing the registers of a {excp} vCPU is not supported yet")
    if env.flags.value_() & prog["POWERPC_FLAG_CFAR"].value_():
        out.append(f" CFAR {env.cfar.value_() & u64:016x}\n")
    if env.spr_cb[SPR_LPCR].name:
        out.append(f" LPCR {r(SPR_LPCR)}\n")
    mmu = enumerator_name(env.mmu_model.type_, env.mmu_model.value_()) or ""
    if mmu in ("POWERPC_MMU_32B", "POWERPC_MMU_SOFT_6xx", "POWERPC_MMU_64B", "POWERPC_MMU_2_03",
               "POWERPC_MMU_2_06", "POWERPC_MMU_2_07", "POWERPC_MMU_3_00"):  # fmt: skip
        line = ""
        if env.spr_cb[SPR_SDR1].name:
            line += f" SDR1 {r(SPR_SDR1)} "
        if env.spr_cb[SPR_PTCR].name:
            line += f" PTCR {r(SPR_PTCR)} "
        out.append(line + f"  DAR {r(SPR_DAR)}  DSISR {r(SPR_DSISR)}\n")
    elif mmu == "POWERPC_MMU_BOOKE206":
        raise UnsupportedError("printing the registers of a BookE 2.06 vCPU is not supported yet")
    return out


def cpu_dump_state(cpu: Object) -> str:
    """
    HMP ``info registers`` of one vCPU, as this target's QEMU prints it.

    :param cpu: ``CPUState *``
    """
    return ppc_cpu_dump_state(powerpc_cpu(cpu))
