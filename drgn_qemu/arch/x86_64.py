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

from drgn_qemu.arch import ArchDumpInfo, GuestArch, enum_constant
from drgn_qemu.elf import ELFCLASS32, ELFCLASS64, ELFDATA2LSB, NT_PRSTATUS, elf_note
from drgn_qemu.helpers.accel import kvm_enabled
from drgn_qemu.helpers.cpu import first_cpu, for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock
from drgn_qemu.program import printed_format

__all__ = ("EM_386", "EM_X86_64", "X86_64", "HF_LMA_MASK", "x86_cpu")

EM_386 = 3
EM_X86_64 = 62
#: ``hflags`` bit: long mode active (``HF_LMA_SHIFT`` 14).
HF_LMA_MASK = 1 << 14
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

    def cpu_dump_state(self, cpu: Object) -> str:
        return x86_cpu_dump_state(cpu)

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


# include/target/i386/cpu.h
HF_CPL_MASK = 3
HF_INHIBIT_IRQ_SHIFT = 3
HF_PE_MASK = 1 << 7
HF_CS64_MASK = 1 << 15
HF_SMM_SHIFT = 19
DF_MASK = 0x400
CC_C, CC_P, CC_A, CC_Z, CC_S, CC_O = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
DESC_B_MASK = 1 << 22
DESC_L_MASK = 1 << 21
DESC_P_MASK = 1 << 15
DESC_DPL_SHIFT = 13
DESC_S_MASK = 1 << 12
DESC_CS_MASK = 1 << 11
DESC_C_MASK = DESC_E_MASK = 1 << 10
DESC_R_MASK = DESC_W_MASK = 1 << 9
DESC_A_MASK = 1 << 8
XSTATE_SSE_MASK, XSTATE_YMM_MASK = 1 << 1, 1 << 2
XSTATE_OPMASK_MASK, XSTATE_ZMM_HI256_MASK, XSTATE_HI16_ZMM_MASK = 1 << 5, 1 << 6, 1 << 7
FPUS_IE, FPUS_ZE, FPUS_OE, FPUS_UE, FPUS_PE = 0x1, 0x4, 0x8, 0x10, 0x20
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
    """``env->mxcsr`` with the SSE exceptions softfloat has gathered (``update_mxcsr_from_sse_status()``)."""
    prog = env.prog_

    flags = env.sse_status.float_exception_flags.value_()
    mxcsr = env.mxcsr.value_()
    if flags & enum_constant(prog, "float_flag_invalid"):
        mxcsr |= FPUS_IE
    if flags & enum_constant(prog, "float_flag_divbyzero"):
        mxcsr |= FPUS_ZE
    if flags & enum_constant(prog, "float_flag_overflow"):
        mxcsr |= FPUS_OE
    if flags & enum_constant(prog, "float_flag_underflow"):
        mxcsr |= FPUS_UE
    if flags & enum_constant(prog, "float_flag_inexact"):
        mxcsr |= FPUS_PE
    if flags & enum_constant(
        prog, "float_flag_output_denormal_flushed", "float_flag_output_denormal"
    ):
        mxcsr |= FPUS_UE | FPUS_PE
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
    """
    env = x86_cpu(cs).env
    hflags = env.hflags.value_()
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
    return "\n".join(out) + "\n"
