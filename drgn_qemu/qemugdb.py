# SPDX-License-Identifier: GPL-2.0-or-later
"""
QEMU's gdb commands
-------------------

The ``drgn_qemu.qemugdb`` module gives the views of QEMU's own gdb scripts
(``scripts/qemu-gdb.py``: ``qemu timers``, ``qemu coroutine``, ``qemu bt``)
from a core or a hung process, with drgn: coroutine stacks are unwound with
the debug info's CFI, where the gdb script can only follow frame pointers
in a core.
"""

from typing import Optional

from drgn import FaultError, MissingDebugInfoError, Object, Program, Thread

from drgn_qemu.elffile import read_tls_segment
from drgn_qemu.errors import CorruptStructureError, UnsupportedError, translate_errors
from drgn_qemu.executable import read_from_executable
from drgn_qemu.helpers.coroutine import (
    co_tls_current,
    coroutine_frames,
    coroutine_get_registers,
    coroutine_stack_trace,
    for_each_coroutine_caller,
    glibc_pointer_guard,
)
from drgn_qemu.helpers.timer import main_loop_tlg, timerlist_for_each_timer
from drgn_qemu.program import drgn_logging_silenced

__all__ = ("qemu_bt", "qemu_coroutine", "qemu_timers")

_CLOCK_NAMES = ("Realtime", "Virtual", "Host", "Virtual RT")


def _symbolize(prog: Program, address: int) -> str:
    """A code address as gdb prints a function pointer: ``0x... <name>``."""
    if not address:
        return "0x0"
    try:
        symbol = prog.symbol(address)
    except LookupError:
        return f"0x{address:x}"
    offset = address - symbol.address
    return f"0x{address:x} <{symbol.name}{f'+{offset}' if offset else ''}>"


@translate_errors("QEMU's state for 'qemu timers'")
def qemu_timers(prog: Program) -> str:
    """
    The main loop's timers, as QEMU's gdb command ``qemu timers`` prints
    them: per clock type its type and whether it is enabled, then each armed
    timer's expiry (ns), scale, callback and opaque pointer.
    """
    lines = []
    tlg = main_loop_tlg(prog)
    for i, name in enumerate(_CLOCK_NAMES):
        tl = tlg.tl[i].read_()
        clock = tl.clock.read_()
        lines.append(f"Processing {name} timers")
        enabled = "true" if clock.enabled else "false"
        lines.append(f"  clock {clock.type.format_(type_name=False)} is enabled:{enabled}")
        for timer in timerlist_for_each_timer(tl):
            lines.append(
                f"    timer {timer.expire_time.value_()}/{timer.scale.value_()} "
                f"(cb:{_symbolize(prog, timer.cb.value_())},opq:0x{timer.opaque.value_():x})"
            )
    return "\n".join(lines) + "\n"


@translate_errors("QEMU's state for 'qemu coroutine'")
def qemu_coroutine(prog: Program, address: int) -> str:
    """
    The backtrace of a suspended coroutine, as QEMU's gdb command ``qemu
    coroutine ADDR``: its saved registers (pointers demangled), then its
    stack, unwound by drgn, down to ``coroutine_trampoline``.
    """
    _load_libraries(prog)
    co = Object(prog, "Coroutine *", address)
    try:
        regs = coroutine_get_registers(co)
        trace = coroutine_stack_trace(co)
    except FaultError as e:
        raise CorruptStructureError(f"cannot read the coroutine at 0x{address:x}: {e}") from None
    lines = [
        f"Coroutine at 0x{address:x}: "
        + " ".join(f"{r}=0x{regs[r]:x}" for r in ("rip", "rsp", "rbp", "rbx"))
    ]
    for i, (_, text) in enumerate(coroutine_frames(trace)):
        lines.append(text if text.startswith("#") else f"#{i}  {text}")
    return "\n".join(lines) + "\n"


def _tls_block(prog: Program) -> Optional[tuple]:  # type: ignore[type-arg]
    return read_from_executable(prog, read_tls_segment)


def _load_libraries(prog: Program) -> None:
    """Load what debug info drgn finds for the libraries too: backtraces go through libc and GLib."""
    with drgn_logging_silenced():
        try:
            prog.load_debug_info(default=True)
        except MissingDebugInfoError:
            pass


@translate_errors("QEMU's state for 'qemu bt'")
def qemu_bt(prog: Program, thread: Optional[Thread] = None) -> str:
    """
    The backtrace of each QEMU thread (or of *thread*), and of the
    coroutines that entered the coroutine it runs, as QEMU's gdb command
    ``qemu bt`` does for one thread: the thread's stack, then "Coroutine at
    ..." and the stack of each ``caller`` of ``co_tls_current``.
    """
    _load_libraries(prog)
    tls = _tls_block(prog)
    guard = glibc_pointer_guard(prog)
    threads = [thread] if thread is not None else list(prog.threads())
    lines = []
    for t in threads:
        why = None
        try:
            stack = t.stack_trace()
        except (ValueError, LookupError, FaultError) as e:
            why = str(e)
        else:
            if not len(stack) or not stack[0].pc:
                why = "its program counter is 0 (a call through a null pointer?)"
        if why is not None:
            lines += [f"Thread {t.tid}" + (f" ({t.name})" if t.name else "") + ":",
                      f"  (no stack to unwind: {why})", ""]  # fmt: skip
            continue
        current = None
        if tls is not None:
            try:
                current = co_tls_current(prog, stack[0].registers()["fs.base"], tls)
            except (LookupError, FaultError, UnsupportedError):
                pass
        running = f", in coroutine 0x{current.value_():x}" if current else ""
        lines.append(f"Thread {t.tid}" + (f" ({t.name})" if t.name else "") + f"{running}:")
        lines.append(str(stack))
        if current:
            for caller in for_each_coroutine_caller(current):
                lines.append(f"Coroutine at 0x{caller.value_():x}:")
                try:
                    trace = coroutine_stack_trace(caller, guard)
                except (ValueError, LookupError, FaultError) as e:
                    # A context not saved yet (the thread was switching to
                    # or from it): the thread's own stack above has it.
                    lines.append(f"  (no saved context to unwind: {e})")
                    continue
                lines += [text for _, text in coroutine_frames(trace)]
        lines.append("")
    return "\n".join(lines) + "\n"
