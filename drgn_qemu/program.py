# SPDX-License-Identifier: GPL-2.0-or-later
"""
Opening QEMU
------------

The ``drgn_qemu.program`` module opens a QEMU core file or live process as a
:class:`drgn.Program` with QEMU's debug info, the way drgn's own ``-c``,
``-p`` and ``-s`` options do, and turns each way that can fail into a
one-line :class:`~drgn_qemu.errors.DrgnQemuError`.
"""

import logging
import os
import struct
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, TypeVar

import drgn
from drgn import Program

from drgn_qemu.elf import process_core_notes, read_elf_headers
from drgn_qemu.elffile import (
    core_lacks_private_memory,
    core_segments_damage,
    read_build_id,
    read_core_file_info,
    read_core_notes,
    read_debuglink,
)
from drgn_qemu.errors import DebugInfoError, NotQemuError, ProgramError
from drgn_qemu.executable import read_from_executable

T = TypeVar("T")

__all__ = (
    "check_qemu_program",
    "core_file_error",
    "drgn_logging_silenced",
    "load_qemu_debug_info",
    "open_qemu_program",
    "QEMU_BANNER",
)


def core_file_error(core: str, e: OSError) -> ProgramError:
    """The error to report when a core file cannot be read."""
    if isinstance(e, FileNotFoundError):
        return ProgramError(f"core file {core} does not exist")
    if isinstance(e, IsADirectoryError):
        return ProgramError(f"core file {core} is a directory")
    return ProgramError(f"cannot read core file {core}: {e.strerror}")


def _guest_vmcore(core: str) -> Optional[str]:
    """
    What kind of guest vmcore *core* is ("a kdump-compressed guest vmcore",
    "an ELF guest vmcore"), or None if it is none: an ELF vmcore has vCPU
    notes of a guest (or VMCOREINFO, or QEMU's) and none of a process's.
    """
    from drgn_qemu.kdump import FLATTENED_SIGNATURE, KDUMP_SIGNATURE

    with open(core, "rb") as f:
        magic = f.read(len(FLATTENED_SIGNATURE))
    if magic.startswith(KDUMP_SIGNATURE) or magic == FLATTENED_SIGNATURE:
        return "a kdump-compressed guest vmcore"
    notes = read_core_notes(core)
    if process_core_notes(notes):
        return None
    if any(n in (b"VMCOREINFO", b"QEMU") for n, _, _ in notes):
        return "an ELF guest vmcore"
    from drgn_qemu.arch import arch_from_notes
    from drgn_qemu.errors import UnsupportedError

    with open(core, "rb") as f:
        endian = read_elf_headers(f).endian
    try:
        arch, _ = arch_from_notes(notes, endian, 4096)
    except (UnsupportedError, ValueError, struct.error):
        return None
    return f"an ELF vmcore of a {arch.name} guest"


def _open_core(prog: Program, core: str, name: str) -> None:
    try:
        info = read_core_file_info(core)
        guest = None if info.needed_size > info.file_size else _guest_vmcore(core)
    except OSError as e:
        raise core_file_error(name, e) from None
    except ValueError as e:
        try:
            guest = _guest_vmcore(core)
        except (OSError, ValueError):
            guest = None
        if guest is None:
            raise ProgramError(f"{name} is not a core file: {e}") from None
    if guest is not None:
        raise ProgramError(
            f"{name} is {guest}, not the core of a QEMU process: "
            f"open it with drgn or crash directly (drgn -c {name} -s vmlinux)"
        )
    if info.needed_size > info.file_size:
        raise ProgramError(
            f"core file {name} is truncated: it has {info.file_size} bytes but its "
            f"headers describe {info.needed_size} (was it cut short by a size limit "
            "such as systemd-coredump's ProcessSizeMax or ulimit -c?)"
        )
    damage = core_segments_damage(info.segments)
    if damage is not None:
        raise ProgramError(f"core file {name} has damaged program headers: {damage}")
    if core_lacks_private_memory(info.segments):
        raise ProgramError(
            f"core file {name} holds none of QEMU's writable memory (its heap, stacks and "
            "guest RAM): it was written with a coredump_filter without bit 0x01 (anonymous "
            "private); set it in the QEMU process's /proc/PID/coredump_filter (systemd: "
            "CoredumpFilter=) before the next crash, or dump a live QEMU with -p PID"
        )
    try:
        prog.set_core_dump(core)
    except (OSError, ValueError) as e:
        raise ProgramError(f"cannot open core file {name}: {e}") from None


def _open_pid(prog: Program, pid: int) -> None:
    try:
        prog.set_pid(pid)
    except PermissionError:
        raise ProgramError(
            f"cannot attach to process {pid}: permission denied (reading a live "
            "process needs ptrace permission, e.g. root)"
        ) from None
    except (FileNotFoundError, ProcessLookupError):
        raise ProgramError(f"process {pid} does not exist") from None
    except (OSError, ValueError) as e:
        raise ProgramError(f"cannot attach to process {pid}: {e}") from None


@contextmanager
def drgn_logging_silenced() -> Iterator[None]:
    """Keep drgn's logger quiet (it logs each file it misses) for a block."""
    logger = logging.getLogger("drgn")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_qemu_debug_info(
    prog: Program, symbols: Sequence[str] = (), debug_directories: Sequence[str] = ()
) -> None:
    """
    Load the debug info of QEMU's executable (drgn's main module), trying the
    files in *symbols* first, then drgn's enabled debug info finders (build ID
    and ``.gnu_debuglink`` under *debug_directories* and drgn's standard
    directories such as ``/usr/lib/debug``, debuginfod if enabled). Missing
    debug info of libraries (libc, GLib...) is not an error: the dump does
    not need it.

    :raises DebugInfoError: if the executable's debug info was not found,
        naming the executable, its build ID and what was tried
    """
    for path in symbols:
        if not os.path.exists(path):
            raise DebugInfoError(f"debug info file {path} does not exist")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise DebugInfoError(f"cannot read debug info file {path}: {e.strerror}") from None
    if debug_directories:
        options = prog.debug_info_options
        options.directories = tuple(debug_directories) + tuple(options.directories)
    # drgn also logs what it misses; the error below says it once, better.
    with drgn_logging_silenced():
        try:
            prog.load_debug_info(list(symbols), main=True)
        except drgn.MissingDebugInfoError:
            pass
        except (drgn.BadDataError, ValueError, OverflowError) as e:
            # drgn finds the executable and libraries through the core's notes
            # (NT_FILE, NT_AUXV): a damaged note stops it here.
            raise ProgramError(
                f"cannot find QEMU's executable in the program: {e} (the core's notes are damaged)"
            ) from None
    try:
        main = prog.main_module()
    except LookupError:
        raise DebugInfoError(
            "cannot tell which executable the program runs (no main module); "
            "is this a core of a process?"
        ) from None
    link = read_from_executable(prog, read_debuglink)
    if main.wants_debug_file() and link is not None:
        # drgn (as GDB) looks for the debug link's file next to the
        # executable, in its .debug/ and under DIR/<its directory>/; users
        # also put it straight in DIR.
        for d in debug_directories:
            candidate = os.path.join(d, link)
            if os.path.isfile(candidate):
                main.try_file(candidate)
    _check_symbols_used(prog, symbols)
    if main.wants_debug_file():
        _check_executable(main)
        build_id = main.build_id.hex() if main.build_id else "none"
        places = [*symbols, *(f"{d}/.build-id" for d in prog.debug_info_options.directories)]
        if link is not None:
            exe_dir = os.path.dirname(main.loaded_file_path or main.name)
            places += [f"{exe_dir}/{link}", f"{exe_dir}/.debug/{link}"]
            places += [f"{d}{exe_dir}/{link}" for d in prog.debug_info_options.directories]
            places += [f"{d}/{link}" for d in debug_directories]
        else:
            places.append("no .gnu_debuglink in the executable")
        if "debuginfod" in prog.enabled_debug_info_finders():
            places.append("debuginfod")
        tried = ", ".join(places)
        hint = (
            "the file given with -s does not match it"
            if symbols
            else "pass QEMU's binary with debug info (or its .debug file) with -s PATH"
        )
        raise DebugInfoError(
            f"no debug info for {main.name} (build ID {build_id}); tried {tried}: {hint}"
        )


def _check_symbols_used(prog: Program, symbols: Sequence[str]) -> None:
    """
    Refuse a ``-s`` file that is neither QEMU's executable or debug info
    nor any library's (its build ID is none of the program's modules'):
    drgn would pass it over in silence and take the debug info from
    elsewhere, and a user who named the wrong file would not know.

    :raises DebugInfoError: naming the file and what it is not
    """
    modules = list(prog.modules())
    used = {os.path.realpath(p) for m in modules for p in (m.loaded_file_path,
            m.debug_file_path) if p}  # fmt: skip
    build_ids = {m.build_id for m in modules if m.build_id}
    for path in symbols:
        if os.path.realpath(path) in used:
            continue
        try:
            build_id = read_build_id(path)
        except ValueError:
            raise DebugInfoError(
                f"-s {path} is not an ELF file (QEMU's executable or its debug info)"
            ) from None
        except OSError as e:
            raise DebugInfoError(f"cannot read debug info file {path}: {e.strerror}") from None
        if build_id is None or build_id not in build_ids:
            main = prog.main_module()
            theirs = main.build_id.hex() if main.build_id else "none"
            raise DebugInfoError(
                f"-s {path} (build ID {build_id.hex() if build_id else 'none'}) is not the debug "
                f"info of {main.name} (build ID {theirs}) nor of a library it loaded: give "
                "the QEMU binary that ran, or leave -s out"
            )


#: A string every QEMU system emulator has (its ``--version`` banner).
QEMU_BANNER = b"QEMU emulator version"


def _check_executable(main: drgn.MainModule) -> None:
    """
    When the debug info of the program's executable is missing, say first
    what is wrong with the executable, if anything: it cannot be read, or it
    is not QEMU (no :data:`QEMU_BANNER` in it, or, unread, no "qemu" in its name).

    :raises DebugInfoError: if the executable cannot be read
    :raises NotQemuError: if it is not QEMU
    """
    import mmap

    name = main.name
    path = main.loaded_file_path or name
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(QEMU_BANNER) < 0:
                raise NotQemuError(
                    f"{name} is not QEMU (its executable {path} has no "
                    f"'{QEMU_BANNER.decode()}' string): give the core, or -p PID, of a "
                    "qemu-system-* process"
                )
            return
    except PermissionError as e:
        raise DebugInfoError(
            f"cannot read QEMU's executable {path}: {e.strerror}; run as a user who can "
            "read it, or give a readable copy with -s PATH"
        ) from None
    except (OSError, ValueError):
        pass  # gone since, or empty: the name is all there is
    if "qemu" not in os.path.basename(name).lower():
        raise NotQemuError(
            f"{name} does not look like QEMU (its executable cannot be read and its name is "
            "not qemu-*): give the core, or -p PID, of a qemu-system-* process"
        )


def check_qemu_program(prog: Program) -> None:
    """
    Check that a program with its debug info loaded is a QEMU system
    emulator, which has the global ``address_space_memory``.

    :raises NotQemuError: otherwise
    """
    try:
        prog.variable("address_space_memory")
    except LookupError:
        try:
            name = prog.main_module().name
        except LookupError:
            name = "the program"
        raise NotQemuError(
            f"{name} is not a QEMU system emulator: its debug info has no 'address_space_memory'"
        ) from None


def open_qemu_program(
    core: Optional[str] = None,
    pid: Optional[int] = None,
    symbols: Sequence[str] = (),
    debug_directories: Sequence[str] = (),
    core_name: Optional[str] = None,
) -> Program:
    """
    Open a QEMU core file (*core*) or live QEMU process (*pid*) and load
    QEMU's debug info, like ``drgn -c CORE -s PATH`` or ``drgn -p PID``.

    :param core: path of a core file of a QEMU process
    :param pid: process ID of a running QEMU
    :param symbols: files to try for QEMU's debug info before drgn's default
        locations (``-s``)
    :param debug_directories: more directories to search by build ID and
        debug link, before drgn's standard ones (``--debug-directory``)
    :param core_name: what to call the core in messages, when *core* is a
        copy of the user's file (an unpacked compressed core)
    :raises ProgramError: if the core or process cannot be opened
    :raises DebugInfoError: if QEMU's debug info is missing
    :raises NotQemuError: if the program is not QEMU
    """
    if (core is None) == (pid is None):
        raise ProgramError("give exactly one of a core file (-c) or a process ID (-p)")
    prog = Program()
    if core is not None:
        _open_core(prog, core, core_name or core)
    else:
        assert pid is not None
        _open_pid(prog, pid)
    load_qemu_debug_info(prog, symbols, debug_directories)
    check_qemu_program(prog)
    return prog
