# SPDX-License-Identifier: GPL-2.0-or-later
"""
Coroutines
----------

The ``drgn_qemu.helpers.coroutine`` module reads QEMU's ucontext coroutines
(``util/coroutine-ucontext.c``): a ``CoroutineUContext`` that is not running
keeps its registers in the ``sigjmp_buf`` its last ``sigsetjmp()`` filled,
where glibc has mangled the stack, frame and instruction pointers with the
process's pointer guard (``PTR_MANGLE``: xor, then rotate left by 17 bits on
x86_64). The guard is in every thread's TCB, at ``fs_base + 0x30``.

With the registers, drgn unwinds the coroutine's stack with QEMU's debug
info (CFI), inlined frames included, as QEMU's gdb script ``qemu
coroutine`` only can in a live process. x86_64 hosts only.
"""

import struct
from typing import Dict, Iterator, List, Optional, Tuple

from drgn import FaultError, Object, Program, StackTrace, Thread, TypeMember, cast
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError, UnsupportedError

__all__ = (
    "co_tls_current",
    "coroutine_frames",
    "coroutine_get_registers",
    "coroutine_stack_trace",
    "glibc_pointer_guard",
    "glibc_ptr_demangle",
    "thread_pointer",
    "for_each_coroutine_caller",
)

_M64 = (1 << 64) - 1
# glibc's x86_64 __jmp_buf slots.
JB_RBX, JB_RBP, JB_R12, JB_R13, JB_R14, JB_R15, JB_RSP, JB_PC = range(8)
#: tcbhead_t.pointer_guard on x86_64.
POINTER_GUARD_OFFSET = 0x30
#: The longest chain of coroutine callers followed.
MAX_COROUTINE_DEPTH = 1024

# The registers of x86_64 Linux's struct pt_regs, in order: drgn unwinds
# from an object of that type.
_PT_REGS = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss"
).split()


def _check_x86_64(prog: Program) -> None:
    if prog.platform is None or prog.platform.arch.name != "X86_64":
        raise UnsupportedError("coroutine backtraces need an x86_64 QEMU host")


def thread_pointer(thread: Thread) -> int:
    """Return a thread's thread pointer, the TCB address (``fs_base`` on x86_64)."""
    return int(thread.stack_trace()[0].registers()["fs.base"])


@takes_program_or_default
def glibc_pointer_guard(prog: Program, thread: Optional[Thread] = None) -> int:
    """
    Return glibc's pointer guard (``THREAD_GET_POINTER_GUARD()``), read from
    the TCB of *thread* (default: the main thread; all threads share it).
    """
    _check_x86_64(prog)
    fs_base = thread_pointer(thread if thread is not None else prog.main_thread())
    try:
        return int.from_bytes(prog.read(fs_base + POINTER_GUARD_OFFSET, 8), "little")
    except FaultError:
        raise CorruptStructureError(
            f"cannot read the pointer guard from the TCB at fs_base 0x{fs_base:x}"
        ) from None


def glibc_ptr_demangle(value: int, guard: int) -> int:
    """Undo glibc's ``PTR_MANGLE()`` of a saved pointer (x86_64)."""
    value &= _M64
    return (((value >> 0x11) | (value << (64 - 0x11))) & _M64) ^ guard


def coroutine_get_registers(co: Object, guard: Optional[int] = None) -> Dict[str, int]:
    """
    Return the registers a suspended coroutine saved in its
    ``CoroutineUContext.env``: rbx, rbp, r12-r15, rsp and rip (demangled).

    :param co: ``Coroutine *`` (a ``CoroutineUContext`` in the ucontext backend)
    """
    prog = co.prog_
    _check_x86_64(prog)
    try:
        ctx = cast("CoroutineUContext *", co)
    except LookupError:
        raise UnsupportedError(
            "this QEMU has no CoroutineUContext: not the ucontext coroutine backend"
        ) from None
    if guard is None:
        guard = glibc_pointer_guard(prog)
    jb = [ctx.env[0].__jmpbuf[i].value_() & _M64 for i in range(8)]
    return {
        "rbx": jb[JB_RBX],
        "rbp": glibc_ptr_demangle(jb[JB_RBP], guard),
        "r12": jb[JB_R12],
        "r13": jb[JB_R13],
        "r14": jb[JB_R14],
        "r15": jb[JB_R15],
        "rsp": glibc_ptr_demangle(jb[JB_RSP], guard),
        "rip": glibc_ptr_demangle(jb[JB_PC], guard),
    }


def _regs_object(prog: Program, regs: Dict[str, int]) -> Object:
    u64 = prog.int_type("unsigned long", 8, False)
    pt_regs = prog.struct_type(
        "pt_regs", 8 * len(_PT_REGS), [TypeMember(u64, n, 64 * i) for i, n in enumerate(_PT_REGS)]
    )
    raw = struct.pack(f"<{len(_PT_REGS)}Q", *(regs.get(n, 0) for n in _PT_REGS))
    return Object.from_bytes_(prog, pt_regs, raw)


def coroutine_stack_trace(co: Object, guard: Optional[int] = None) -> StackTrace:
    """
    Return the stack trace of a suspended coroutine, unwound by drgn from
    the registers in its ``sigjmp_buf`` (:func:`coroutine_get_registers`).
    Its last frame is ``coroutine_trampoline``, the bottom of every
    coroutine stack; frames drgn finds past it are not the coroutine's.

    :param co: ``Coroutine *``
    """
    regs = coroutine_get_registers(co, guard)
    return co.prog_.stack_trace(_regs_object(co.prog_, regs))


def coroutine_frames(trace: StackTrace) -> List[Tuple[int, str]]:
    """The frames of a coroutine's trace, up to ``coroutine_trampoline``: (pc, description)."""
    out = []
    for frame in trace:
        out.append((frame.pc, str(frame)))
        if frame.name == "coroutine_trampoline":
            break
    return out


@takes_program_or_default
def co_tls_current(prog: Program, tp: int, tls_block: Tuple[int, int, int]) -> Object:
    """
    Return the coroutine a thread runs (the thread-local ``co_tls_current``,
    NULL outside coroutines).

    :param tp: the thread's :func:`thread_pointer`
    :param tls_block: the executable's ``PT_TLS`` segment: ``(p_vaddr,
        p_memsz, p_align)``; its TLS block sits right below the thread
        pointer (x86_64's TLS variant II)
    """
    symbol = prog.symbol("co_tls_current")
    bias = prog.main_module().loaded_file_bias or 0
    vaddr, memsz, align = tls_block
    align = max(align, 1)
    first_byte = -vaddr & (align - 1)
    offset = (memsz + first_byte + align - 1) // align * align
    address = tp - offset + (symbol.address - bias)
    return Object(prog, "Coroutine *", address=address).read_()


def for_each_coroutine_caller(co: Object) -> Iterator[Object]:
    """
    Iterate over the coroutines that entered *co* and each other (``co->caller``...).

    :param co: ``Coroutine *``
    """
    for _ in range(MAX_COROUTINE_DEPTH):
        co = co.caller.read_()
        if not co:
            return
        yield co
    raise CorruptStructureError(f"coroutine callers deeper than {MAX_COROUTINE_DEPTH}: cyclic")
