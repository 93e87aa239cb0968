# SPDX-License-Identifier: GPL-2.0-or-later
"""
64-bit POWER guests of ``qemu-system-ppc64`` (``target/ppc``), dumped as
QEMU's ``target/ppc/arch_dump.c`` does: EM_PPC64, ELFCLASS64, little- or
big-endian as the vCPU takes interrupts (``ppc_interrupts_little_endian()``:
HID0's HILE, LPCR's ILE or MSR's ILE, by CPU model); per vCPU five "CORE"
notes: NT_PRSTATUS, NT_PRFPREG, NT_PPC_VMX, NT_PPC_VSX and NT_PPC_SPE.
kdump-compressed dumps of ``pseries`` machines use 64 KiB pages, as QEMU.
"""

import struct
from typing import Dict, List, Optional, Tuple

from drgn import Object, PlatformFlags, Program, cast, container_of, sizeof

from drgn_qemu import elf
from drgn_qemu.arch.base import ArchDumpInfo, GuestArch, dump_first_cpu
from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "cpu_read_xer",
    "EM_PPC64",
    "is_isa300",
    "powerpc_cpu",
    "PPC64",
    "ppc_bit",
    "ppc_cpu_class",
    "ppc_interrupts_little_endian",
    "vsr_doubleword",
)

EM_PPC64 = 21
NT_PPC_VMX = 0x100
NT_PPC_SPE = 0x101
NT_PPC_VSX = 0x102

SPR_LPCR = 0x13E
SPR_HID0 = 0x3F0
# The other SPRs HMP prints (target/ppc/cpu.h).
SPR_DSISR, SPR_DAR, SPR_SDR1, SPR_SRR0, SPR_SRR1 = 0x012, 0x013, 0x019, 0x01A, 0x01B
SPR_VRSAVE, SPR_SPRG0, SPR_PVR, SPR_HSRR0, SPR_HSRR1 = 0x100, 0x110, 0x11F, 0x13A, 0x13B
SPR_DECR, SPR_TBL, SPR_TBU = 0x016, 0x10C, 0x10D
MSR_HV = 60
MSR_ILE = 16


def ppc_bit(bit: int) -> int:
    """QEMU's ``PPC_BIT()``: bit 0 is the most significant of 64."""
    return 1 << (63 - bit)


HID0_HILE = ppc_bit(19)
HID0_POWER9_HILE = ppc_bit(4)
LPCR_ILE = ppc_bit(38)
XER_SO, XER_OV, XER_CA, XER_OV32, XER_CA32 = 31, 30, 29, 19, 18
VSCR_SAT = 0

# PPCElfPrstatus: pad1[32], pid, pad2[76], 44 registers, pad3[40].
_PRSTATUS = "32xI76x44Q40x"


def powerpc_cpu(cpu: Object) -> Object:
    """
    Return the ``PowerPCCPU *`` of a ``CPUState *`` (``POWERPC_CPU(cs)``).

    :param cpu: ``CPUState *``
    """
    return container_of(cpu, "PowerPCCPU", "parent_obj")


def ppc_cpu_class(cpu: Object) -> Object:
    """
    ``POWERPC_CPU_GET_CLASS(cpu)``: the ``PowerPCCPUClass`` of the vCPU's QOM object.

    :param cpu: ``PowerPCCPU *``
    """
    obj = cpu.parent_obj.parent_obj.parent_obj
    return cast("PowerPCCPUClass *", obj.member_("class"))


def is_isa300(flags2: int, prog: Program) -> bool:
    return bool(flags2 & prog["PPC2_ISA300"].value_())


def ppc_interrupts_little_endian(cpu: Object, hv: bool) -> bool:
    """
    Return whether the vCPU takes interrupts little-endian, as QEMU's function.

    :param cpu: ``PowerPCCPU *``
    """
    prog = cpu.prog_
    env = cpu.env
    pcc = ppc_cpu_class(cpu)
    if hv and env.has_hv_mode:
        hile = HID0_POWER9_HILE if is_isa300(pcc.insns_flags2.value_(), prog) else HID0_HILE
        return bool(env.spr[SPR_HID0].value_() & hile)
    if pcc.lpcr_mask.value_() & LPCR_ILE:
        return bool(env.spr[SPR_LPCR].value_() & LPCR_ILE)
    return bool((env.msr.value_() >> MSR_ILE) & 1)


def cpu_read_xer(env: Object) -> int:
    """
    Return XER as QEMU's ``cpu_read_xer()`` assembles it.

    :param env: ``CPUPPCState *``
    """
    xer = env.xer.value_()
    xer |= env.so.value_() << XER_SO | env.ov.value_() << XER_OV | env.ca.value_() << XER_CA
    if is_isa300(env.insns_flags2.value_(), env.prog_):
        xer |= env.ov32.value_() << XER_OV32 | env.ca32.value_() << XER_CA32
    return xer & 0xFFFFFFFFFFFFFFFF


def vsr_doubleword(env: Object, i: int, n: int) -> int:
    """
    ``env->vsr[i].VsrD(n)``: doubleword *n* in the guest's (big-endian) numbering.

    :param env: ``CPUPPCState *``
    """
    platform = env.prog_.platform
    host_le = platform is None or bool(platform.flags & PlatformFlags.IS_LITTLE_ENDIAN)
    return int(env.vsr[i].u64[1 - n if host_le else n].value_())


class PPC64(GuestArch):
    name = "ppc64"
    uname_machine = "ppc64"

    def matches(self, prog: Program) -> bool:
        """A ``PowerPCCPU`` in a 64-bit target (``target_ulong`` nip of 8 bytes)."""
        try:
            prog.type("PowerPCCPU")
            return sizeof(prog.type("CPUPPCState").member("nip").type) == 8
        except (LookupError, ValueError):
            return False

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        cs = dump_first_cpu(prog)
        cpu = powerpc_cpu(cs)
        hv = bool(cpu.env.msr_mask.value_() & (1 << MSR_HV))
        le = ppc_interrupts_little_endian(cpu, hv)
        page_size = 0
        machine = prog["current_machine"]
        if machine:
            type_name = machine.parent_obj.member_("class").type.name.string_()
            if type_name.startswith(b"pseries-"):
                page_size = 1 << 16  # the largest page of a pseries kernel
        return ArchDumpInfo(
            EM_PPC64,
            elf.ELFCLASS64,
            elf.ELFDATA2LSB if le else elf.ELFDATA2MSB,
            page_size=page_size,
        )

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        order = elf.struct_order(info.endian)
        notes = []
        for cs in for_each_cpu(prog):
            env = powerpc_cpu(cs).env
            pid = cs.cpu_index.value_() + 1
            cr = 0
            for i in range(8):
                cr |= (env.crf[i].value_() & 15) << (4 * (7 - i))
            regs = [env.gpr[i].value_() for i in range(32)]
            regs += [
                env.nip.value_(),
                env.msr.value_(),
                0,  # orig_gpr3
                env.ctr.value_(),
                env.lr.value_(),
                cpu_read_xer(env),
                cr,
                0,  # softe
                0,  # trap
                0,  # dar
                0,  # dsisr
                0,  # result
            ]
            descs = [(elf.NT_PRSTATUS, struct.pack(order + _PRSTATUS, pid, *regs))]
            fprs = [vsr_doubleword(env, i, 0) for i in range(32)]
            descs.append((elf.NT_PRFPREG, struct.pack(order + "33Q", *fprs, env.fpscr.value_())))
            vmx = b""
            for i in range(32):
                # The AVR's 16 bytes as the guest sees them, most significant
                # first for a big-endian dump (QEMU byte-swaps on a
                # little-endian host), as held for a little-endian one.
                raw = prog.read(env.vsr[32 + i].address_, 16)
                vmx += raw[::-1] if info.endian == elf.ELFDATA2MSB else raw
            sat = env.vscr_sat.u64[0].value_() | env.vscr_sat.u64[1].value_()
            vscr = env.vscr.value_() | ((1 if sat else 0) << VSCR_SAT)
            vmx += bytes(12) + struct.pack(order + "I", vscr) + bytes(16)  # vscr, vrsave
            descs.append((NT_PPC_VMX, vmx))
            vsx = [vsr_doubleword(env, i, 1) for i in range(32)]
            descs.append((NT_PPC_VSX, struct.pack(order + "32Q", *vsx)))
            spe = bytes(128) + struct.pack(
                order + "QI", env.spe_acc.value_(), env.spe_fscr.value_()
            )
            descs.append((NT_PPC_SPE, spe))
            notes += [elf.elf_note(b"CORE", t, d, info.endian) for t, d in descs]
        return b"".join(notes)

    def describe_cpu(self, cpu: Object) -> str:
        env = powerpc_cpu(cpu).env
        return f"nip=0x{env.nip.value_():x} msr=0x{env.msr.value_():x} r1=0x{env.gpr[1].value_():x}"

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        # Only POWER writes NT_PPC_VMX.
        if any(name == b"CORE" and kind == NT_PPC_VMX for name, kind, _ in notes):
            return ArchDumpInfo(EM_PPC64, elf.ELFCLASS64, endian, page_size)
        return None

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        # The linear map at PAGE_OFFSET (0xc000000000000000) holds the kernel.
        if vaddr >> 60 != 0xC:
            return None
        return vaddr - 0xC000000000000000
