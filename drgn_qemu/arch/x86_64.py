"""
x86 guests of ``qemu-system-x86_64`` (``target/i386``), dumped as QEMU's
``target/i386/arch_dump.c`` does: EM_X86_64 with x86_64 ``elf_prstatus``
notes when the first vCPU is in long mode, else EM_386 with i386
``elf_prstatus`` (ELFCLASS32 unless RAM reaches past 4 GiB); then one "QEMU"
note per vCPU carrying ``QEMUCPUState``.
"""

import struct
from typing import Dict, List, Optional

from drgn import Object, Program, container_of, sizeof

from drgn_qemu.arch import ArchDumpInfo, CpuSummary, GuestArch
from drgn_qemu.elf import ELFCLASS32, ELFCLASS64, ELFDATA2LSB, elf_note
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock

__all__ = ("EM_386", "EM_X86_64", "X86_64", "HF_LMA_MASK", "x86_cpu")

EM_386 = 3
EM_X86_64 = 62
NT_PRSTATUS = 1
#: ``hflags`` bit: long mode active (``HF_LMA_SHIFT`` 14).
HF_LMA_MASK = 1 << 14
#: ``CPU_NB_REGS`` of the 64-bit target.
_CPU_NB_REGS64 = 16
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
    """Return the ``X86CPU *`` of a ``CPUState *`` (``X86_CPU(cs)``)."""
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
    page_size = 4096
    # qemu-system-x86_64 says x86_64 whatever mode the guest is in.
    uname_machine = "x86_64"
    vmcoreinfo_phys_base = {EM_X86_64: "NUMBER(phys_base)"}

    def matches(self, prog: Program) -> bool:
        """
        An ``X86CPU`` whose ``CPUX86State.regs`` holds 16 registers
        (``qemu-system-i386`` has 8).
        """
        try:
            prog.type("X86CPU")
            regs = prog.type("CPUX86State").member("regs").type
        except LookupError:
            return False
        return regs.length == _CPU_NB_REGS64

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

    def kernel_paddr(
        self, info: ArchDumpInfo, vmcoreinfo: Dict[str, str], phys_base: int, vaddr: int
    ) -> Optional[int]:
        # The kernel image is mapped at __START_KERNEL_map + phys_base.
        if info.machine != EM_X86_64 or not vaddr >= START_KERNEL_MAP:
            return None
        return (vaddr - START_KERNEL_MAP + phys_base) & 0xFFFFFFFFFFFFFFFF

    def describe_cpus(self, prog: Program) -> List[CpuSummary]:
        try:
            kvm = bool(prog["kvm_allowed"])
        except KeyError:
            kvm = False
        out = []
        for cs in for_each_cpu(prog):
            env = x86_cpu(cs).env
            mode = "long mode" if _lma(env) else "not in long mode"
            stale = kvm and cs.type_.type.has_member("vcpu_dirty") and not cs.vcpu_dirty
            out.append(
                CpuSummary(
                    cs.cpu_index.value_(),
                    f"rip=0x{env.eip.value_():x} cr3=0x{env.cr[3].value_():x} {mode}",
                    stale,
                )
            )
        return out
