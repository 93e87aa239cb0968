# SPDX-License-Identifier: GPL-2.0-or-later
"""
Stopping a live QEMU
--------------------

QMP ``dump-guest-memory`` stops the VM for the whole dump, so that guest
memory and the vCPUs' state come from one moment. The ``drgn_qemu.ptrace``
module does the same from outside QEMU, without its monitor: it stops every
thread of the process with ``PTRACE_SEIZE`` and ``PTRACE_INTERRUPT`` (the
vCPU threads too: under KVM, the kernel takes them out of ``KVM_RUN``), and
detaches when done. Being ptrace-stopped, the threads cannot be left stopped
by a dumper that dies: the kernel detaches a dead tracer's tracees, and they
run on. A process that was already stopped (``SIGSTOP``) stays stopped:
detaching puts it back in its group stop.
"""

import ctypes
import errno
import os
import time
from typing import Dict, List, Optional

from drgn_qemu.errors import DrgnQemuError

__all__ = ("ProcessStopped", "stop_process")

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
#: ``__WALL``: wait for any thread, not only children.
WALL = 0x40000000

_libc: Optional[ctypes.CDLL] = None


def _ptrace(request: int, tid: int, data: int = 0) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if _libc.ptrace(request, tid, None, ctypes.c_void_p(data)) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _tracer(tid: int) -> int:
    """The ``TracerPid`` of a thread (0: none)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcessStopped:
    """
    Every thread of process *pid* stopped by :func:`stop_process`, until
    :meth:`resume` (or the end of the ``with`` block).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tids: List[int] = []
        #: Signals a thread was about to take when it stopped: given back.
        self._signals: Dict[int, int] = {}
        self._start = 0.0
        #: Seconds the process was stopped, once resumed.
        self.seconds = 0.0
        #: Whether the process was stopped already (SIGSTOP, a job-control
        #: stop) before :meth:`stop`: it stays stopped after :meth:`resume`.
        self.was_stopped = False

    @property
    def threads(self) -> int:
        return len(self._tids)

    def _tasks(self) -> List[int]:
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))

    def _state(self) -> str:
        """The process's state letter in ``/proc/PID/stat`` (``T``: stopped)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "?"

    def stop(self) -> "ProcessStopped":
        self.was_stopped = self._state() == "T"
        self._start = time.monotonic()
        seen: Dict[int, bool] = {}
        try:
            # Threads may start while we stop the others: list again until
            # no new one appears (a stopped thread cannot start another).
            while True:
                new = [t for t in self._tasks() if t not in seen]
                if not new:
                    break
                for tid in new:
                    seen[tid] = True
                    try:
                        _ptrace(PTRACE_SEIZE, tid)
                    except OSError as e:
                        if e.errno == errno.ESRCH:  # it exited meanwhile
                            continue
                        raise self._error(tid, e) from None
                    self._tids.append(tid)
                    _ptrace(PTRACE_INTERRUPT, tid)
                    _, status = os.waitpid(tid, WALL)
                    if os.WIFSTOPPED(status) and status >> 16 != PTRACE_EVENT_STOP:
                        # Stopped delivering a signal (QEMU kicks vCPUs with
                        # them): deliver it when we let go, not lose it.
                        self._signals[tid] = os.WSTOPSIG(status)
        except BaseException:
            self.resume()
            raise
        return self

    def _error(self, tid: int, e: OSError) -> DrgnQemuError:
        tracer = _tracer(tid)
        if e.errno == errno.EPERM and tracer:
            return DrgnQemuError(
                f"cannot stop QEMU (process {self.pid}) for a consistent dump: process "
                f"{tracer} traces it already (a debugger?); detach it, or pass --no-stop"
            )
        return DrgnQemuError(
            f"cannot stop QEMU (process {self.pid}) for a consistent dump: {e.strerror}; "
            "pass --no-stop to dump it running"
        )

    def resume(self) -> None:
        """Detach from every thread: each runs on, or goes back to its group stop."""
        for tid in self._tids:
            try:
                _ptrace(PTRACE_DETACH, tid, self._signals.get(tid, 0))
            except OSError:
                pass  # it exited
        if self._tids:
            self.seconds = time.monotonic() - self._start
        self._tids = []

    def __enter__(self) -> "ProcessStopped":
        return self

    def __exit__(self, *exc: object) -> None:
        self.resume()


def stop_process(pid: int) -> ProcessStopped:
    """
    Stop every thread of process *pid* (``PTRACE_SEIZE`` and
    ``PTRACE_INTERRUPT``), for use as a context manager that resumes them.

    :raises DrgnQemuError: if the process cannot be traced (permissions,
        another tracer such as gdb)
    """
    return ProcessStopped(pid).stop()
