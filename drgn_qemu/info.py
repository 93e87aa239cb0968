# SPDX-License-Identifier: GPL-2.0-or-later
"""
Triage
------

What an engineer wants first from a crashed or hung QEMU, before any dump:
the ``drgn_qemu.info`` module gathers it (:func:`qemu_info`) and prints it
(:func:`format_info`, or as JSON). QEMU's version and build, the machine,
accelerator and run state, for a crash the signal and the crashing thread's
backtrace with its QEMU coroutine, the guest RAM and vCPUs, and what a dump
would contain (VMCOREINFO, RAM missing from the core and why).
"""

import mmap
import os
import signal
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from drgn import Program, ProgramFlags

from drgn_qemu.elf import read_elf_headers, struct_order
from drgn_qemu.elffile import read_elf_section
from drgn_qemu.errors import DrgnQemuError, GuestMemoryError, reading
from drgn_qemu.helpers.machine import machine_state
from drgn_qemu.helpers.qom import object_get_typename
from drgn_qemu.options import DumpOptions
from drgn_qemu.program import QEMU_BANNER
from drgn_qemu.ramsource import block_record
from drgn_qemu.reader import MemoryReader

__all__ = (
    "BuildInfo",
    "CrashInfo",
    "format_info",
    "info_json",
    "qemu_build_info",
    "qemu_crash",
    "qemu_info",
    "qemu_version",
    "QemuInfo",
)

#: ``NT_PRSTATUS``: the kernel (and gcore) write the signalled thread's first.
_NT_PRSTATUS = 1
#: ``struct elf_prstatus`` of x86_64, arm64, ppc64 and s390x hosts: the
#: signal at offset 12 (``pr_cursig``), the thread at 32 (``pr_pid``).
_PR_CURSIG, _PR_PID = 12, 32
_VERSION_PREFIX = QEMU_BANNER + b" "


@dataclass
class CrashInfo:
    """The signal a QEMU core was written for, and the thread it hit."""

    signal: int
    name: str
    thread: int
    #: ``qemu bt`` of that thread: its stack, and its coroutine's callers.
    backtrace: str = ""


@dataclass
class BuildInfo:
    """How the QEMU was built, from its executable and debug info."""

    #: The compilers of its ``.comment`` section (``GCC: (Debian 12.2.0-14) 12.2.0``).
    compiler: Optional[str]
    #: The file drgn took QEMU's debug info from.
    debug_info: Optional[str]
    #: The accelerators compiled in (their QOM classes are in the debug info).
    accelerators: List[str]


#: Accelerators by the class_init function each one's QOM type has.
_ACCELERATORS = (("kvm", "kvm_accel_class_init"), ("tcg", "tcg_accel_class_init"),
                 ("xen", "xen_accel_class_init"), ("hvf", "hvf_accel_class_init"),
                 ("whpx", "whpx_accel_class_init"), ("nvmm", "nvmm_accel_class_init"),
                 ("mshv", "mshv_accel_class_init"), ("qtest", "qtest_accel_class_init"))  # fmt: skip


def qemu_build_info(prog: Program, executable: str) -> BuildInfo:
    """How the QEMU program was built: compiler, debug info file, accelerators."""
    try:
        comment = read_elf_section(executable, ".comment", 4096)
    except (OSError, ValueError):
        comment = None
    compilers = []
    for entry in (comment or b"").split(b"\0"):
        text = entry.decode(errors="replace").strip()
        if text and text not in compilers:
            compilers.append(text)
    accelerators = []
    for name, function in _ACCELERATORS:
        try:
            prog.function(function)
        except LookupError:
            continue
        accelerators.append(name)
    return BuildInfo("; ".join(compilers) or None, prog.main_module().debug_file_path, accelerators)


@dataclass
class QemuInfo:
    """What :func:`qemu_info` found; see :func:`format_info`."""

    executable: str
    build_id: Optional[str]
    version: Optional[str]
    machine: Optional[str]
    accelerator: Optional[str]
    run_state: Optional[str]
    threads: List[int]
    crash: Optional[CrashInfo]
    #: The dump summary (blocks, vCPUs, VMCOREINFO), or why a dump fails.
    dump: Dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    build: Optional[BuildInfo] = None


def qemu_version(executable: str) -> Optional[str]:
    """
    Return QEMU's version as ``qemu-system-* --version`` prints it (QEMU
    compiles ``"QEMU emulator version " QEMU_FULL_VERSION`` into the
    binary), or None if the executable cannot be read or lacks it.
    """
    try:
        with open(executable, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            at = m.find(_VERSION_PREFIX)
            if at < 0:
                return None
            end = m.find(b"\n", at)
            return m[at + len(_VERSION_PREFIX) : end].decode(errors="replace")
    except (OSError, ValueError):
        return None


def qemu_crash(core: str) -> Optional[CrashInfo]:
    """
    Return the signal the core was written for and the thread it hit (the
    first ``NT_PRSTATUS``, as Linux and gdb's ``gcore`` write them), or None
    if the core says no signal.
    """
    with open(core, "rb") as f:
        headers = read_elf_headers(f)
        notes = headers.notes(f)
    for name, kind, desc in notes:
        if name == b"CORE" and kind == _NT_PRSTATUS and len(desc) >= _PR_PID + 4:
            order = struct_order(headers.endian)
            (cursig,) = struct.unpack_from(order + "h", desc, _PR_CURSIG)
            (pid,) = struct.unpack_from(order + "i", desc, _PR_PID)
            if cursig <= 0:
                return None
            try:
                sig_name = signal.Signals(cursig).name
            except ValueError:
                sig_name = f"signal {cursig}"
            return CrashInfo(cursig, sig_name, pid)
    return None


def _strip(name: Optional[str], suffix: str) -> Optional[str]:
    return name[: -len(suffix)] if name is not None and name.endswith(suffix) else name


def _run_state(prog: Program) -> Optional[str]:
    """``current_run_state`` as ``RunState_str()`` names it (``paused``, ``guest-panicked``)."""
    try:
        value = prog["current_run_state"]
    except KeyError:
        return None
    for name, number in value.type_.unaliased().enumerators or ():
        if number == value.value_():
            return name.removeprefix("RUN_STATE_").lower().replace("_", "-")
    return str(value.value_())


def qemu_info(
    prog: Program, core: Optional[str] = None, reader: Optional[MemoryReader] = None
) -> QemuInfo:
    """
    Gather :class:`QemuInfo` of a QEMU program opened from *core* (a core
    file) or a live process. Damage in QEMU's structures leaves the field
    it spoils empty (the dump part says what); it does not fail.
    """
    main = prog.main_module()
    executable = main.loaded_file_path or main.name
    machine, accelerator, run_state = _machine(prog)
    crash = qemu_crash(core) if core is not None else None
    if crash is not None and not prog.flags & ProgramFlags.IS_LIVE:
        from drgn_qemu.qemugdb import qemu_bt

        try:
            crash.backtrace = qemu_bt(prog, prog.thread(crash.thread))
        except (LookupError, DrgnQemuError) as e:
            crash.backtrace = f"(no backtrace: {e})\n"
    info = QemuInfo(
        executable,
        main.build_id.hex() if main.build_id else None,
        qemu_version(executable) if os.path.exists(executable) else None,
        machine,
        accelerator,
        run_state,
        sorted(t.tid for t in prog.threads()),
        crash,
        build=qemu_build_info(prog, executable),
    )
    info.dump, info.summary = _dump_info(prog, reader)
    return info


def _machine(prog: Program) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """The machine type, the accelerator and the run state, each None where damaged."""
    machine = accelerator = run_state = None
    try:
        with reading("QEMU's machine"):
            state = machine_state(prog)
            if state is not None:
                machine = _strip(object_get_typename(state), "-machine")
                accel = state.accelerator.read_()
                if accel:
                    accelerator = _strip(object_get_typename(accel), "-accel")
            run_state = _run_state(prog)
    except DrgnQemuError:
        pass
    return machine, accelerator, run_state


def _dump_info(prog: Program, reader: Optional[MemoryReader]) -> Tuple[Dict[str, Any], str]:
    """
    :attr:`QemuInfo.dump` and :attr:`QemuInfo.summary`: what a dump would
    write, or why it cannot be written (with the blocks, where each is or
    why it is not, when only guest RAM is missing).
    """
    from drgn_qemu.dump import format_plan, plan_dump

    error = None
    try:
        plan = plan_dump(prog, reader=reader)
    except GuestMemoryError as e:
        # Guest RAM missing from the core: all the rest can still be shown,
        # the blocks with where each is (or why it is not).
        error = str(e)
        try:
            plan = plan_dump(prog, DumpOptions(skip_missing=True), reader, empty=True)
        except DrgnQemuError:
            return {"possible": False, "error": error}, ""
    except DrgnQemuError as e:
        return {"possible": False, "error": str(e)}, ""
    plan.close()
    vmci = plan.vmcoreinfo
    dump: Dict[str, Any] = (
        {"possible": True} if error is None else {"possible": False, "error": error}
    )
    dump.update(
        {
            "guest_bytes": plan.guest_bytes,
            "blocks": [
                {k: v for k, v in block_record(s).items() if k in INFO_BLOCK_FIELDS}
                for s in plan.sources
            ],
            "vcpus": [{"index": c.index, "state": c.state} for c in plan.cpus],
            "vmcoreinfo": None
            if vmci is None
            else {"source": vmci.source, "osrelease": vmci.osrelease},
            "warnings": [w for w in plan.warnings if not w.startswith("left out: ")],
        }
    )
    return dump, format_plan(plan)


#: The fields of :func:`~drgn_qemu.ramsource.block_record` that ``info`` shows.
INFO_BLOCK_FIELDS = ("target_start", "target_end", "size", "memory_region", "source")


def info_json(info: QemuInfo) -> Dict[str, Any]:
    """:class:`QemuInfo` as the ``--json`` object (fields as in :func:`format_info`)."""
    return {
        "qemu": {"executable": info.executable, "build_id": info.build_id,
                 "version": info.version,
                 "build": None if info.build is None else {
                     "compiler": info.build.compiler, "debug_info": info.build.debug_info,
                     "accelerators": info.build.accelerators}},
        "machine": info.machine,
        "accelerator": info.accelerator,
        "run_state": info.run_state,
        "threads": info.threads,
        "crash": None
        if info.crash is None
        else {"signal": info.crash.signal, "name": info.crash.name,
              "thread": info.crash.thread, "backtrace": info.crash.backtrace},
        "dump": info.dump,
    }  # fmt: skip


def format_info(info: QemuInfo) -> str:
    """The text of ``drgn-qemu info``."""
    lines = [
        f"QEMU: {info.executable} (build ID {info.build_id or 'none'}), "
        f"version {info.version or 'unknown'}",
    ]
    if info.build is not None:
        b = info.build
        lines.append(
            f"built with: {b.compiler or 'unknown'}; accelerators: "
            f"{', '.join(b.accelerators) or 'unknown'}; debug info: {b.debug_info or 'none'}"
        )
    lines += [
        f"machine: {info.machine or 'unknown'}, accelerator: {info.accelerator or 'unknown'}, "
        f"run state: {info.run_state or 'unknown'}",
        f"threads: {len(info.threads)} ({', '.join(map(str, info.threads))})",
    ]
    if info.crash is None:
        lines.append("crash: none (no signal in the core, or a live process)")
    else:
        c = info.crash
        lines.append(f"crash: signal {c.signal} ({c.name}) in thread {c.thread}")
        lines.append(c.backtrace.rstrip("\n"))
    if info.summary:
        lines.append(info.summary)
    if info.dump.get("possible"):
        lines.append(
            f"dump: possible, {info.dump['guest_bytes'] / (1 << 20):.1f} MiB of guest memory"
        )
    else:
        lines.append(f"dump: not possible: {info.dump.get('error')}")
    lines += [f"warning: {w}" for w in info.dump.get("warnings", ())]
    return "\n".join(lines) + "\n"
