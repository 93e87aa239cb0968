# SPDX-License-Identifier: GPL-2.0-or-later
"""
x86 guests of ``qemu-system-x86_64`` (``target/i386``), dumped as QEMU's
``target/i386/arch_dump.c`` does: EM_X86_64 with x86_64 ``elf_prstatus``
notes when the first vCPU is in long mode, else EM_386 with i386
``elf_prstatus`` (ELFCLASS32 unless RAM reaches past 4 GiB); then one "QEMU"
note per vCPU carrying ``QEMUCPUState``.
"""

import struct
from typing import Dict, List, Optional, Tuple

from drgn import Object, Program, container_of, sizeof

from drgn_qemu.arch.base import ArchDumpInfo, GuestArch
from drgn_qemu.elf import ELFCLASS32, ELFCLASS64, ELFDATA2LSB, NT_PRSTATUS, elf_note
from drgn_qemu.helpers.accel import kvm_enabled
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = (
    "EM_386",
    "EM_X86_64",
    "HF_LMA_MASK",
    "HF_SMM_MASK",
    "HF_SMM_SHIFT",
    "qemu_cpu_state",
    "X86_64",
    "x86_cpu",
)

EM_386 = 3
EM_X86_64 = 62
#: ``hflags`` bit: long mode active (``HF_LMA_SHIFT`` 14).
HF_LMA_MASK = 1 << 14
#: ``hflags`` bit: in system management mode.
HF_SMM_SHIFT = 19
HF_SMM_MASK = 1 << HF_SMM_SHIFT
#: ``CPU_NB_REGS`` of the 64-bit target.
_CPU_NB_REGS64 = 16
#: ``CPU_NB_EREGS64``: with APX's extended GPRs (QEMU 11).
_CPU_NB_EREGS64 = 32
#: ``__START_KERNEL_map``: where x86_64 Linux maps its image.
START_KERNEL_MAP = 0xFFFFFFFF80000000
#: ``QEMUCPUSTATE_VERSION``.
QEMUCPUSTATE_VERSION = 1

R_EAX, R_ECX, R_EDX, R_EBX, R_ESP, R_EBP, R_ESI, R_EDI = range(8)
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)

# x86_64_elf_prstatus: pad1[32], pid, pad2[76], 27 registers, pad3[8].
_PRSTATUS64 = struct.Struct("<32xI76x27Q8x")
# x86_elf_prstatus: pad1[24], pid, pad2[44], x86_user_regs_struct, pad3[4].
_PRSTATUS32 = struct.Struct("<24xI44x7I8H2I2H2I2H4x")
_SEGMENT = struct.Struct("<IIIIQ")


def x86_cpu(cpu: Object) -> Object:
    """
    Return the ``X86CPU *`` of a ``CPUState *`` (``X86_CPU(cs)``).

    :param cpu: ``CPUState *``
    """
    return container_of(cpu, "X86CPU", "parent_obj")


def _lma(env: Object) -> bool:
    return bool(env.hflags.value_() & HF_LMA_MASK)


def _prstatus64(env: Object, pid: int) -> bytes:
    regs = [r.value_() for r in env.regs]
    segs = env.segs
    return _PRSTATUS64.pack(
        pid,
        regs[15], regs[14], regs[13], regs[12], regs[R_EBP], regs[R_EBX],
        regs[11], regs[10], regs[9], regs[8], regs[R_EAX], regs[R_ECX],
        regs[R_EDX], regs[R_ESI], regs[R_EDI],
        0,  # orig_rax
        env.eip.value_(),
        segs[R_CS].selector.value_(),
        env.eflags.value_(),
        regs[R_ESP],
        segs[R_SS].selector.value_(),
        segs[R_FS].base.value_(),
        segs[R_GS].base.value_(),
        segs[R_DS].selector.value_(),
        segs[R_ES].selector.value_(),
        segs[R_FS].selector.value_(),
        segs[R_GS].selector.value_(),
    )  # fmt: skip


def _prstatus32(env: Object, pid: int) -> bytes:
    m32 = 0xFFFFFFFF
    m16 = 0xFFFF
    regs = [r.value_() & m32 for r in env.regs[:8]]
    sel = [s.selector.value_() & m16 for s in env.segs]
    return _PRSTATUS32.pack(
        pid,
        regs[R_EBX], regs[R_ECX], regs[R_EDX], regs[R_ESI], regs[R_EDI],
        regs[R_EBP], regs[R_EAX],
        sel[R_DS], 0, sel[R_ES], 0, sel[R_FS], 0, sel[R_GS], 0,
        0,  # orig_eax
        env.eip.value_() & m32,
        sel[R_CS], 0,
        env.eflags.value_() & m32,
        regs[R_ESP],
        sel[R_SS], 0,
    )  # fmt: skip


def _segment(seg: Object) -> bytes:
    return _SEGMENT.pack(
        seg.selector.value_(), seg.limit.value_(), seg.flags.value_(), 0, seg.base.value_()
    )


def qemu_cpu_state(env: Object) -> bytes:
    """
    Return the ``QEMUCPUState`` of a vCPU as QEMU's ``qemu_get_cpustate()``
    fills it. Its size and whether it ends with ``kernel_gs_base`` come from
    the ``QEMUCPUState`` type in QEMU's debug info where it is there.

    :param env: ``CPUX86State *``
    """
    prog = env.prog_
    try:
        state_type = prog.type("QEMUCPUState")
        size = sizeof(state_type)
        has_kernel_gs_base = state_type.unaliased().has_member("kernel_gs_base")
    except LookupError:
        size, has_kernel_gs_base = 440, True
    regs = [r.value_() for r in env.regs]
    order = [R_EAX, R_EBX, R_ECX, R_EDX, R_ESI, R_EDI, R_ESP, R_EBP, *range(8, 16)]
    out = struct.pack("<II", QEMUCPUSTATE_VERSION, size)
    out += struct.pack("<16Q", *(regs[i] for i in order))
    out += struct.pack("<QQ", env.eip.value_(), env.eflags.value_())
    segs = env.segs
    for i in (R_CS, R_DS, R_ES, R_FS, R_GS, R_SS):
        out += _segment(segs[i])
    for name in ("ldt", "tr", "gdt", "idt"):
        out += _segment(env.member_(name))
    out += struct.pack("<5Q", *(env.cr[i].value_() for i in range(5)))
    if has_kernel_gs_base:
        out += struct.pack("<Q", env.kernelgsbase.value_())
    return out.ljust(size, b"\0")


class X86_64(GuestArch):
    name = "x86_64"
    # qemu-system-x86_64 says x86_64 whatever mode the guest is in.
    uname_machine = "x86_64"
    vmcoreinfo_phys_base = {EM_X86_64: "NUMBER(phys_base)"}

    def matches(self, prog: Program) -> bool:
        """
        An ``X86CPU`` whose ``CPUX86State.regs`` holds 16 registers, or 32
        from QEMU 11 with Intel APX's R16-R31 (``CPU_NB_EREGS64``;
        ``qemu-system-i386`` has 8). The notes carry the 16 classic ones,
        as QEMU 11's ``arch_dump.c`` writes them.
        """
        try:
            prog.type("X86CPU")
            regs = prog.type("CPUX86State").member("regs").type
        except LookupError:
            return False
        return regs.length in (_CPU_NB_REGS64, _CPU_NB_EREGS64)

    def _first_lma(self, prog: Program) -> bool:
        cpu = first_cpu(prog)
        return bool(cpu) and _lma(x86_cpu(cpu).env)

    def cpu_get_dump_info(self, prog: Program, blocks: List[GuestPhysBlock]) -> ArchDumpInfo:
        if self._first_lma(prog):
            return ArchDumpInfo(EM_X86_64, ELFCLASS64, ELFDATA2LSB)
        above_4g = any(b.target_end > 0xFFFFFFFF for b in blocks)
        return ArchDumpInfo(EM_386, ELFCLASS64 if above_4g else ELFCLASS32, ELFDATA2LSB)

    def cpu_notes(self, prog: Program, info: ArchDumpInfo) -> bytes:
        # The prstatus flavour follows the first vCPU, as in QEMU.
        long_mode = info.machine == EM_X86_64
        cpus = [x86_cpu(cpu) for cpu in for_each_cpu(prog)]
        notes = []
        for cpu in cpus:
            pid = cpu.parent_obj.cpu_index.value_() + 1
            desc = _prstatus64(cpu.env, pid) if long_mode else _prstatus32(cpu.env, pid)
            notes.append(elf_note(b"CORE", NT_PRSTATUS, desc))
        for cpu in cpus:
            notes.append(elf_note(b"QEMU", 0, qemu_cpu_state(cpu.env)))
        return b"".join(notes)

    def max_phys_addr(self, prog: Program) -> Optional[int]:
        # X86CPU.phys_bits (-cpu ...,phys-bits=N; 40 under TCG by default):
        # QEMU refuses to start a machine whose RAM reaches past it.
        cpu = first_cpu(prog)
        if not cpu or not prog.type("X86CPU").has_member("phys_bits"):
            return None
        bits = x86_cpu(cpu).phys_bits.value_()
        return 1 << bits if 32 <= bits <= 52 else None

    def dump_info_from_notes(
        self, notes: List[Tuple[bytes, int, bytes]], endian: int, page_size: int
    ) -> Optional[ArchDumpInfo]:
        # Only x86 writes "QEMU" notes (QEMUCPUState); the prstatus says
        # which flavour (x86_64's is 336 bytes, i386's 144).
        if not any(name == b"QEMU" for name, _, _ in notes):
            return None
        prstatus = [d for name, kind, d in notes if name == b"CORE" and kind == NT_PRSTATUS]
        if prstatus and len(prstatus[0]) == 144:
            return ArchDumpInfo(EM_386, ELFCLASS32, ELFDATA2LSB, page_size)
        return ArchDumpInfo(EM_X86_64, ELFCLASS64, ELFDATA2LSB, page_size)

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        # The kernel image is mapped at __START_KERNEL_map + phys_base.
        if info.machine != EM_X86_64 or not vaddr >= START_KERNEL_MAP:
            return None
        return (vaddr - START_KERNEL_MAP + phys_base) & 0xFFFFFFFFFFFFFFFF

    def describe_cpu(self, cpu: Object) -> str:
        env = x86_cpu(cpu).env
        mode = "long mode" if _lma(env) else "not in long mode"
        return f"rip=0x{env.eip.value_():x} cr3=0x{env.cr[3].value_():x} {mode}"

    def cpu_registers_stale(self, cpu: Object) -> bool:
        # Under KVM, QEMU holds the registers as of its last synchronization.
        return (
            kvm_enabled(cpu.prog_)
            and cpu.type_.type.has_member("vcpu_dirty")
            and not cpu.vcpu_dirty
        )


CC_C, CC_P, CC_A, CC_Z, CC_S, CC_O = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
XSTATE_SSE_MASK, XSTATE_YMM_MASK = 1 << 1, 1 << 2
XSTATE_OPMASK_MASK, XSTATE_ZMM_HI256_MASK, XSTATE_HI16_ZMM_MASK = 1 << 5, 1 << 6, 1 << 7
FPUS_IE, FPUS_ZE, FPUS_OE, FPUS_UE, FPUS_PE = 0x1, 0x4, 0x8, 0x10, 0x20
