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

from drgn_qemu.arch.base import ArchDumpInfo, GuestArch, dump_first_cpu, softfloat_exception_bits
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
from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "AArch64",
    "arm_cpu",
    "arm_current_el",
    "arm_feature",
    "cpsr_read",
    "EM_AARCH64",
    "EM_ARM",
    "exceptbits_from_host",
    "fp_status_flags",
    "has_sve",
    "pstate_read",
    "sve_note",
    "sve_size_vq",
    "sve_vqm1_for_el",
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
    """
    Return the ``ARMCPU *`` of a ``CPUState *`` (``ARM_CPU(cs)``).

    :param cpu: ``CPUState *``
    """
    return container_of(cpu, "ARMCPU", "parent_obj")


def pstate_read(env: Object) -> int:
    """
    Return PSTATE of a ``CPUARMState`` as QEMU's ``pstate_read()`` assembles it.

    :param env: ``CPUARMState *``
    """
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


def fp_status_flags(env: Object, fpst: str) -> int:
    """
    The exception flags of the ``float_status`` *fpst* names (an ``FPST_*``).

    :param env: ``CPUARMState *``
    """
    prog = env.prog_
    return env.vfp.fp_status[prog[fpst].value_()].float_exception_flags.value_()


def exceptbits_from_host(prog: Program, host: int, ah: bool) -> int:
    """QEMU's ``vfp_exceptbits_from_host()``: softfloat flags to FPSR bits."""
    table = [
        (("float_flag_invalid",), FPSR_IOC),
        (("float_flag_divbyzero",), FPSR_DZC),
        (("float_flag_overflow",), FPSR_OFC),
        (("float_flag_underflow", "float_flag_output_denormal_flushed"), FPSR_UFC),
        (("float_flag_inexact",), FPSR_IXC),
        (("float_flag_input_denormal_flushed",), FPSR_IDC),
    ]
    if ah:
        table += [(("float_flag_input_denormal_used",), FPSR_IDC),
                  (("float_flag_output_denormal_flushed",), FPSR_IXC)]  # fmt: skip
    return softfloat_exception_bits(prog, host, table)


def vfp_get_fpsr(env: Object) -> int:
    """
    Return FPSR as QEMU's ``vfp_get_fpsr()``: ``vfp.fpsr``, the exception
    flags softfloat has gathered since (``vfp_get_fpsr_from_host()``) and QC.
    Reads the ``CPUARMState.vfp`` layout with ``fpsr``, ``fpcr`` and
    ``fp_status[FPST_*]`` (QEMU 10).

    :raises UnsupportedError: for an older layout
    :param env: ``CPUARMState *``
    """
    prog = env.prog_
    vfp = env.vfp
    if not vfp.type_.has_member("fpsr") or not vfp.type_.has_member("fp_status"):
        raise UnsupportedError(
            "this QEMU keeps the Arm FP status in a layout drgn-qemu does not read "
            "(CPUARMState.vfp has no fpsr/fp_status members)"
        )
    fpcr = vfp.fpcr.value_()
    a32 = fp_status_flags(env, "FPST_A32") | fp_status_flags(env, "FPST_STD")
    denormal_flushed = int(prog["float_flag_input_denormal_flushed"].value_())
    denormal_used = int(prog["float_flag_input_denormal_used"].value_())
    a32 |= fp_status_flags(env, "FPST_A32_F16") & ~denormal_flushed
    a32 |= fp_status_flags(env, "FPST_STD_F16") & ~denormal_flushed
    a64 = fp_status_flags(env, "FPST_A64")
    a64 |= fp_status_flags(env, "FPST_A64_F16") & ~(denormal_flushed | denormal_used)
    if fpcr & (FPCR_FZ | FPCR_AH) != FPCR_FZ:
        a64 &= ~denormal_flushed
    fpsr = vfp.fpsr.value_()
    fpsr |= exceptbits_from_host(prog, a64, bool(fpcr & FPCR_AH))
    fpsr |= exceptbits_from_host(prog, a32, False)
    if any(vfp.qc[i].value_() for i in range(len(vfp.qc))):
        fpsr |= FPSR_QC
    return fpsr & 0xFFFFFFFF


def vfp_get_fpcr(env: Object) -> int:
    """
    Return FPCR as QEMU's ``vfp_get_fpcr()`` assembles it.

    :param env: ``CPUARMState *``
    """
    vfp = env.vfp
    fpcr = vfp.fpcr.value_() | (vfp.vec_len.value_() << 16) | (vfp.vec_stride.value_() << 20)
    if env.type_.has_member("v7m") and env.v7m.type_.has_member("ltpsize"):
        fpcr |= env.v7m.ltpsize.value_() << 16
    return fpcr & 0xFFFFFFFF


def has_sve(cpu: Object) -> bool:
    # cpu_isar_feature(aa64_sve): ID_AA64PFR0_EL1.SVE, bits [35:32].
    """
    Whether the CPU has SVE (``cpu_isar_feature(aa64_sve, cpu)``).

    :param cpu: ``ARMCPU *``
    """
    return bool((cpu.isar.id_aa64pfr0.value_() >> 32) & 0xF)


def arm_feature(env: Object, name: str) -> bool:
    """
    QEMU's ``arm_feature()``: whether the CPU has the ``ARM_FEATURE_*`` *name*.

    :param env: ``CPUARMState *``
    """
    return bool(env.features.value_() & (1 << env.prog_[name].value_()))


def arm_current_el(env: Object) -> int:
    """
    The vCPU's exception level (``arm_current_el()``, A-profile).

    :param env: ``CPUARMState *``
    """
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

    :param cpu: ``ARMCPU *``
    """
    env = cpu.env
    sm = bool(env.svcr.value_() & 1) if env.type_.has_member("svcr") else False
    cr = env.vfp.smcr_el if sm else env.vfp.zcr_el
    vq_map = (cpu.sme_vq if sm else cpu.sve_vq).map.value_()
    el3 = arm_feature(env, "ARM_FEATURE_EL3")
    scr = env.cp15.scr_el3.value_()
    el2 = arm_feature(env, "ARM_FEATURE_EL2") and (not el3 or bool(scr & (SCR_NS | SCR_EEL2)))
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
    """
    CPSR of an AArch32 vCPU as QEMU's ``cpsr_read()`` assembles it.

    :param env: ``CPUARMState *``
    """
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
    """
    FPSCR as QEMU's ``vfp_get_fpscr()``: FPCR and FPSR bits together.

    :param env: ``CPUARMState *``
    """
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

    :param cpu: ``ARMCPU *``
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


HCR_NV, HCR_NV1, HCR_NV2 = 1 << 42, 1 << 43, 1 << 45
PSTATE_N, PSTATE_Z, PSTATE_C, PSTATE_V = 1 << 31, 1 << 30, 1 << 29, 1 << 28


class AArch64(GuestArch):
    name = "aarch64"
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
        cpu = dump_first_cpu(prog)
        env = arm_cpu(cpu).env
        endian = ELFDATA2MSB if env.cp15.sctlr_el[1].value_() & SCTLR_EE else ELFDATA2LSB
        lowest = min((b.target_start for b in blocks), default=None)
        if not arm_feature(env, "ARM_FEATURE_AARCH64"):
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
            if has_sve(cpu):
                notes.append(elf_note(b"LINUX", NT_ARM_SVE, sve_note(cpu, order), info.endian))
        return b"".join(notes)

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
