# SPDX-License-Identifier: GPL-2.0-or-later
"""
The ``drgn-qemu`` command line: a thin layer over
:func:`drgn_qemu.dump.dump_guest_memory`.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    MutableMapping,
    Optional,
    Sequence,
    Tuple,
)

from drgn import Program

import drgn_qemu
from drgn_qemu.arch import supported_arches
from drgn_qemu.errors import DrgnQemuError
from drgn_qemu.options import CHUNK_SIZE, ELF_LAYOUTS, FORMATS, DumpOptions
from drgn_qemu.reader import IO_MODES, MemoryReader

if TYPE_CHECKING:
    from drgn_qemu.dump import DumpPlan, DumpResult
    from drgn_qemu.ptrace import ProcessStopped

__all__ = ("DUMP_ARGUMENTS", "add_dump_arguments", "dump_options", "main", "parse_size", "run_dump")

_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

DESCRIPTION = """\
Turn a crashed or hung QEMU into evidence: read QEMU's own data structures
from a core file of a QEMU process (or a live QEMU) with drgn and QEMU's debug
info, and write what the guest had in memory."""

DUMP_DESCRIPTION = """\
Write the guest's physical memory as an ELF vmcore, as QEMU's QMP command
dump-guest-memory (paging=false) would have had the process been alive: one
PT_LOAD per guest-physical RAM block, p_paddr = guest-physical address.

Guests of qemu-system-x86_64, -aarch64, -ppc64, -s390x, -riscv64 and
-loongarch64 are dumped, each with its own vCPU notes; the architecture
comes from QEMU's debug info.

The core must contain guest RAM: QEMU must have run with
-machine dump-guest-core=on (QEMU's default; libvirt turns it off unless
<memory dumpCore='on'>), and shared memory (share=on, memfd) is only in a
core if QEMU's coredump_filter says so. A live QEMU (-p PID) needs neither,
and no working monitor.

With --format kdump-zlib, kdump-zstd, kdump-snappy or kdump-lzo, write instead the
kdump-compressed file that QMP dump-guest-memory writes with
format=kdump-raw-zlib (and so on): the same notes, every page of guest RAM
compressed on its own, all-zero pages sharing one page of data. crash, drgn
(libkdumpfile) and makedumpfile read it. zlib pages are compressed by one
thread per CPU (zstd, snappy and lzo are faster with one; --threads sets
it). kdump-lzo uses liblzo2, as QEMU does, so its pages are QEMU's bytes.

The vmcore is written under a temporary name next to OUTPUT and renamed when
complete; an existing OUTPUT is kept unless --force is given."""

DUMP_EPILOG = """\
examples:
  drgn-qemu dump-guest-memory -c qemu.core -s /usr/bin/qemu-system-x86_64 guest.vmcore
  drgn-qemu dump-guest-memory -p $(pidof qemu-system-x86_64) guest.vmcore
  drgn-qemu dump-guest-memory -c qemu.core --begin 0x100000 --length 16M low.vmcore
  drgn-qemu dump-guest-memory -c qemu.core.zst --format kdump-zstd guest.kdump"""


ADD_VMCOREINFO_DESCRIPTION = """\
Add the guest kernel's VMCOREINFO note to a vmcore that has none, as
QEMU's QMP/HMP dump-guest-memory, virsh dump --memory-only and QEMU's gdb
script write them unless the guest ran with -device vmcoreinfo; drgn and
makedumpfile need it. The text is found in the vmcore's guest memory (Linux
keeps it in a page of its own that begins with OSRELEASE=), or read from
--vmcoreinfo FILE. An ELF vmcore keeps its layout and notes, its guest
memory copied once, all-zero pages as holes. A kdump-compressed file (plain
or flattened, as QEMU's kdump-zlib) also gets the kernel's utsname in its
header, which QEMU leaves out and drgn needs. The new file is written under
a temporary name next to the output and renamed when complete: replacing
VMCORE in place, the original stays intact until the new one is whole, and
an error or Ctrl-C leaves it as it was. A vmcore with VMCOREINFO (and, for
kdump, the kernel's utsname) already is left as it is, and so is anything
that is not a guest vmcore (the core of a QEMU process is refused: its
guest's vmcore is what dump-guest-memory writes)."""


INFO_DESCRIPTION = """\
What an engineer wants first from a QEMU core (or a hung QEMU, -p PID), before
any dump: QEMU's executable, build ID and version; the machine type,
accelerator and run state; its threads; for a crash, the signal and the
crashing thread's backtrace with the QEMU coroutine it ran (as %qemu bt); the
guest RAM blocks and vCPUs; and what a dump would contain: VMCOREINFO, or why
guest RAM is missing from the core."""


def parse_size(text: str) -> int:
    """
    Parse an address or size: decimal or 0x-hexadecimal, with an optional
    K, M, G or T suffix (powers of 1024).
    """
    m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid address or size: {text!r}")
    return int(m.group(1), 0) * _SUFFIXES[m.group(2).lower()]


def parse_ram_file(text: str) -> Tuple[str, str]:
    """Parse ``--ram-file ID=PATH``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected ID=PATH, not {text!r}")
    return name, path


#: The options of ``dump-guest-memory`` that do not choose the program, as
#: ``(args, kwargs)`` of ``add_argument()``: the command line, the contrib
#: script and ``%qemu dump-guest-memory`` declare them from here.
DUMP_ARGUMENTS: List[Tuple[Tuple[str, ...], Dict[str, Any]]] = [
    (("output",), dict(metavar="OUTPUT", help="path of the vmcore to write")),
    (
        ("--arch",),
        dict(
            choices=supported_arches(),
            help="guest architecture (default: detected from QEMU's debug info)",
        ),
    ),
    (
        ("--format",),
        dict(
            choices=FORMATS,
            default="elf",
            help="elf (default): an ELF vmcore; kdump-*: kdump-compressed with that compression",
        ),
    ),
    (
        ("--elf-layout",),
        dict(
            choices=ELF_LAYOUTS,
            default="qemu",
            help="ELF only. qemu (default): the ELF file QEMU's dump-guest-memory writes, byte "
            "for byte; kernel: program headers first, as Linux's /proc/vmcore, which "
            "makedumpfile needs",
        ),
    ),
    (
        ("--threads",),
        dict(
            type=int,
            metavar="N",
            help="threads compressing pages for the kdump formats (default: one per CPU for "
            "kdump-zlib; one for kdump-zstd, kdump-snappy and kdump-lzo, measured faster so), or finding "
            "the zero pages of an ELF vmcore (default: one per CPU, at most 2); the output is "
            "the same whatever N",
        ),
    ),
    (
        ("--begin",),
        dict(
            type=parse_size,
            metavar="ADDR",
            help="ELF only: dump only guest-physical memory from ADDR (with --length), like "
            "QMP's begin",
        ),
    ),
    (
        ("--length",),
        dict(
            type=parse_size,
            metavar="LEN",
            help="number of bytes from --begin to dump, e.g. 0x1000000 or 16M",
        ),
    ),
    (
        ("--vmcoreinfo",),
        dict(
            metavar="FILE",
            help="the guest kernel's VMCOREINFO text, for when it is neither registered with "
            "QEMU's vmcoreinfo device nor found in guest RAM",
        ),
    ),
    (
        ("--no-sparse",),
        dict(
            dest="sparse",
            action="store_false",
            help="write all-zero pages too (by default they are holes: same bytes, less "
            "disk; in a kdump file, the one zero page they all share)",
        ),
    ),
    (
        ("--ram-file",),
        dict(
            metavar="ID=PATH",
            action="append",
            default=[],
            type=parse_ram_file,
            help="read RAM block ID (its memory-backend id or RAMBlock name, as in the "
            "table) from PATH, a copy of the file QEMU mapped it from (repeatable). A block "
            "mapped shared from a file that still exists is read back from it without this",
        ),
    ),
    (
        ("--skip-missing",),
        dict(
            action="store_true",
            help="write the guest RAM that can be read and leave out, with a warning, blocks "
            "that are neither in the core nor in a file (never written as zeros); without "
            "it, such a block is an error saying why it is missing",
        ),
    ),
    (("--io",), dict(choices=IO_MODES, default="auto", help=argparse.SUPPRESS)),
    (("--chunk-size",), dict(type=parse_size, default=CHUNK_SIZE, help=argparse.SUPPRESS)),
    (("-f", "--force"), dict(action="store_true", help="overwrite OUTPUT if it exists")),
    (
        ("--json",),
        dict(
            action="store_true",
            help="print one JSON object about the dump instead of the table and summary "
            "(its fields are in the README)",
        ),
    ),
    (
        ("-q", "--quiet"),
        dict(
            action="store_true",
            help="print nothing but errors: no table, no progress, no warnings",
        ),
    ),
]


def add_dump_arguments(parser: argparse.ArgumentParser) -> None:
    """Add :data:`DUMP_ARGUMENTS` to *parser*."""
    for args, kwargs in DUMP_ARGUMENTS:
        parser.add_argument(*args, **kwargs)


def dump_options(args: argparse.Namespace) -> DumpOptions:
    """The :class:`DumpOptions` of parsed :data:`DUMP_ARGUMENTS`."""
    return DumpOptions(
        arch=args.arch,
        begin=args.begin,
        length=args.length,
        vmcoreinfo=args.vmcoreinfo,
        format=args.format,
        elf_layout=args.elf_layout,
        sparse=args.sparse,
        threads=args.threads,
        chunk_size=args.chunk_size,
        force=args.force,
        skip_missing=args.skip_missing,
        ram_files=dict(args.ram_file),
    )


def check_program_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (see :func:`check_dump_usage`) for program options without effect."""
    if getattr(args, "tmpdir", None) is not None and getattr(args, "pid", None) is not None:
        parser.error("--tmpdir only works with -c CORE (a compressed core is unpacked there)")


def check_guest_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (see :func:`check_dump_usage`) for ``guest`` options that do not go together."""
    check_program_usage(parser, args)
    if args.stop and args.pid is None:
        parser.error("--stop only works with -p PID (a core does not run)")


def check_dump_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """
    Exit with *parser*'s usage line and status 2, as argparse does for a
    value no option allows, when parsed :data:`DUMP_ARGUMENTS` do not go
    together (``--begin`` without ``--length``, ``--threads 0``, a window
    with a kdump format...) or an option has no effect (``--no-stop``
    without ``-p``).
    """
    from drgn_qemu.errors import UsageError

    check_program_usage(parser, args)
    if getattr(args, "no_stop", False) and getattr(args, "pid", None) is None:
        parser.error("--no-stop only works with -p PID (a core does not run)")
    try:
        dump_options(args)
    except UsageError as e:
        parser.error(str(e))


def _add_program_arguments(parser: argparse.ArgumentParser, dump: bool = False) -> None:
    group = parser.add_argument_group("program (as in drgn)")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-c",
        "--core",
        metavar="CORE",
        help="core file of a QEMU process; zstd, xz or lz4 compressed ones (as "
        "systemd-coredump stores them) are unpacked "
        + ("next to OUTPUT" if dump else "next to CORE")
        + " (or in --tmpdir) and removed after",
    )
    source.add_argument("-p", "--pid", metavar="PID", type=int, help="live QEMU process")
    if dump:
        group.add_argument(
            "--no-stop",
            action="store_true",
            help="with -p: dump QEMU while it runs. By default its threads are stopped "
            "(ptrace) while its state and the guest's memory are read, as QMP's dump stops "
            "the VM, and let go after; the summary says for how long",
        )
    group.add_argument(
        "-s",
        "--symbols",
        metavar="PATH",
        action="append",
        default=[],
        help="QEMU binary with debug info, or its .debug file (repeatable); "
        "default: where drgn finds it (the executable named in the core, build ID)",
    )
    group.add_argument(
        "--tmpdir",
        metavar="DIR",
        help="unpack a compressed core in DIR instead of next to "
        + ("OUTPUT" if dump else "CORE")
        + " (it needs the core's size, less its all-zero blocks, which stay holes)",
    )
    group.add_argument(
        "--debug-directory",
        metavar="DIR",
        action="append",
        default=[],
        help="also search DIR for debug info: by build ID (DIR/.build-id/xx/yyyy.debug), and "
        "for the file the executable's .gnu_debuglink names, at DIR/<the executable's "
        "directory>/NAME (as drgn and GDB) and DIR/NAME (repeatable)",
    )


def named_inputs(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """The files parsed *args* name for reading, which an output must not be."""
    inputs: List[Tuple[str, Optional[str]]] = [("QEMU core", getattr(args, "core", None))]
    inputs += [
        ("QEMU executable or debug info file", path) for path in getattr(args, "symbols", ())
    ]
    inputs += [(f"--ram-file of {name}", path) for name, path in getattr(args, "ram_file", ())]
    inputs.append(("--vmcoreinfo file", getattr(args, "vmcoreinfo", None)))
    return inputs


def run_dump(
    prog: Program,
    args: argparse.Namespace,
    reader: Optional[MemoryReader] = None,
    unpacked_in: float = 0.0,
    stopped: Optional["ProcessStopped"] = None,
) -> "DumpResult":
    """
    Run ``dump-guest-memory`` with parsed *args* (see
    :data:`DUMP_ARGUMENTS`) on *prog*: print the block table, show progress
    on a terminal, write the vmcore and print a summary, whose time includes
    *unpacked_in*, the seconds spent unpacking a compressed core. A live
    QEMU *stopped* for the dump is resumed as soon as it is written, and the
    summary says for how long it was stopped.
    """
    from drgn_qemu.dump import dump_guest_memory, format_plan, program_inputs
    from drgn_qemu.output import check_output
    from drgn_qemu.progress import Progress

    check_output(args.output, args.force, [*named_inputs(args), *program_inputs(prog)])
    options = dump_options(args)
    text = not (args.quiet or args.json)
    progress = Progress(0, "dumping ", enabled=None if text else False)

    def planned(plan: "DumpPlan") -> None:
        if text:
            print(format_plan(plan), flush=True)
            for warning in plan.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        progress.total = plan.guest_bytes

    try:
        result = dump_guest_memory(
            prog, args.output, options, reader=reader, progress=progress.update, on_plan=planned
        )
    finally:
        if stopped is not None:
            stopped.resume()
        progress.close()
    stopped_for = stopped.seconds if stopped is not None else None
    was_stopped = stopped is not None and stopped.was_stopped
    if args.json:
        doc = dump_json(result, args, unpacked_in)
        doc["stopped_seconds"] = (
            None if stopped_for is None or was_stopped else round(stopped_for, 3)
        )
        doc["was_stopped"] = was_stopped if stopped is not None else None
        print(json.dumps(doc, indent=2))
    elif not args.quiet:
        plan = result.plan
        seconds = result.seconds + unpacked_in
        rate = plan.guest_bytes / max(seconds, 1e-6) / (1 << 20)
        count = len(plan.segments)
        if plan.format == "elf":
            what = f"vmcore, {count} PT_LOAD segment{'s' if count != 1 else ''}"
        else:
            what = f"{plan.format} dump ({result.file_size / (1 << 20):.1f} MiB)"
        print(
            f"wrote {result.output}: {plan.arch.name} {what}, "
            f"{plan.guest_bytes / (1 << 20):.1f} MiB of guest memory in "
            f"{seconds:.2f} s ({rate:.0f} MiB/s"
            + (f"; unpacking the core took {unpacked_in:.2f} s" if unpacked_in else "")
            + (
                "; QEMU was stopped already (SIGSTOP) and stays stopped"
                if was_stopped
                else f"; QEMU was stopped for {stopped_for:.2f} s"
                if stopped_for is not None
                else ""
            )
            + ")"
        )
    return result


def dump_json(result: "DumpResult", args: argparse.Namespace, unpacked_in: float) -> Dict[str, Any]:
    """The ``--json`` object of a dump (its schema is in the README)."""
    plan = result.plan
    vmci = plan.vmcoreinfo
    st = os.stat(result.output)
    return {
        "input": {
            "core": getattr(args, "core", None),
            "pid": getattr(args, "pid", None),
            "qemu": plan.prog.main_module().name,
        },
        "architecture": plan.arch.name,
        "blocks": [
            {
                "target_start": s.block.target_start,
                "target_end": s.block.target_end,
                "host_addr": s.block.host_addr,
                "size": s.block.size,
                "memory_region": s.block.mr_name,
                "source": s.kind,
                "file": s.path,
                "missing_bytes": sum(n for _, n in s.missing),
                "missing_reason": s.reason,
            }
            for s in plan.sources
        ],
        "vcpus": [{"index": c.index, "state": c.state, "stale": c.stale} for c in plan.cpus],
        "vmcoreinfo": None
        if vmci is None
        else {
            "source": vmci.source,
            "osrelease": vmci.osrelease,
            "kerneloffset": vmci.kerneloffset,
        },
        "warnings": plan.warnings,
        "output": result.output,
        "format": plan.format,
        "guest_bytes": plan.guest_bytes,
        "size_apparent": st.st_size,
        "size_on_disk": st.st_blocks * 512,
        "seconds": round(result.seconds + unpacked_in, 3),
    }


def _warn_tmpdir_unused(args: argparse.Namespace) -> None:
    if not getattr(args, "quiet", False):
        print(f"warning: --tmpdir has no effect: {args.core} is not compressed", file=sys.stderr)


class Target:
    """A QEMU opened from parsed program arguments (see :func:`open_target`)."""

    def __init__(
        self, prog: Program, core: Optional[str], reader: MemoryReader, unpacked_in: float
    ) -> None:
        self.prog = prog
        #: The core file opened (a compressed core's unpacked copy), or None for a process.
        self.core = core
        #: How to read QEMU's memory (see :func:`drgn_qemu.reader.open_reader`).
        self.reader = reader
        #: Seconds spent unpacking a compressed core (0 for a plain one).
        self.unpacked_in = unpacked_in


def open_target(
    args: argparse.Namespace, stack: contextlib.ExitStack, unpack_dir: str, quiet: bool = False
) -> Target:
    """
    Open the QEMU that parsed ``-c``/``-p``, ``-s``, ``--debug-directory`` and
    ``--tmpdir`` name, for as long as *stack* lasts: a compressed core is
    unpacked in ``--tmpdir`` or *unpack_dir*, with progress on a terminal
    unless *quiet*, and removed when *stack* closes; the reader is closed
    then too.
    """
    from drgn_qemu.compressed import uncompressed_core
    from drgn_qemu.program import open_qemu_program
    from drgn_qemu.progress import Progress
    from drgn_qemu.reader import open_reader

    core = args.core
    unpacked_in = 0.0
    if core is not None:
        start = time.monotonic()
        unpacking = Progress(0, "unpacking core: ", enabled=False if quiet else None)
        stack.callback(unpacking.close)
        core = stack.enter_context(
            uncompressed_core(core, args.tmpdir or unpack_dir, unpacking.update)
        )
        unpacking.close()
        if core != args.core:
            unpacked_in = time.monotonic() - start
        elif args.tmpdir is not None:
            _warn_tmpdir_unused(args)
    prog = open_qemu_program(
        core=core,
        pid=args.pid,
        symbols=args.symbols,
        debug_directories=args.debug_directory,
        # Name the user's file, not our temporary copy of it.
        core_name=args.core if core == args.core else f"{args.core} (unpacked)",
    )
    reader = open_reader(prog, core, args.pid, getattr(args, "io", "auto"))
    stack.callback(reader.close)
    return Target(prog, core, reader, unpacked_in)


def _cmd_dump(args: argparse.Namespace) -> int:
    from drgn_qemu.output import check_output

    check_output(args.output, args.force, named_inputs(args))
    with contextlib.ExitStack() as stack:
        # A compressed core is unpacked next to the output.
        target = open_target(args, stack, os.path.dirname(os.path.abspath(args.output)), args.quiet)
        stopped = None
        if args.pid is not None and not args.no_stop:
            from drgn_qemu.ptrace import stop_process

            # As QMP's dump stops the VM: memory and vCPUs from one moment.
            stopped = stack.enter_context(stop_process(args.pid))
        run_dump(target.prog, args, target.reader, target.unpacked_in, stopped)
    return 0


class _ContribPath(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from drgn_qemu.contrib import DUMP_GUEST_MEMORY_SCRIPT

        print(DUMP_GUEST_MEMORY_SCRIPT)
        parser.exit()


def _cmd_info(args: argparse.Namespace) -> int:
    from drgn_qemu.info import format_info, info_json, qemu_info

    with contextlib.ExitStack() as stack:
        # A compressed core is unpacked next to it.
        unpack_dir = os.path.dirname(os.path.abspath(args.core or "."))
        target = open_target(args, stack, unpack_dir, quiet=True)
        info = qemu_info(target.prog, target.core, target.reader)
    if args.json:
        print(json.dumps(info_json(info), indent=2))
    else:
        print(format_info(info), end="")
    return 0


GUEST_DESCRIPTION = """\
Open drgn on the Linux kernel of the guest of a QEMU core (or of a live QEMU,
-p PID), in place: no vmcore is written. Guest RAM is read where QEMU holds
it (the core, the file a RAM block was mapped from, --ram-file, the live
process) only when drgn reads it, so opening costs the same for any guest
size; the vCPUs' registers and the kernel's VMCOREINFO are the notes a vmcore
would carry. With no SCRIPT and no -e, drgn's REPL opens on the guest's
kernel (prog), with drgn's helpers and commands (%crash included).

-p PID reads a live QEMU as it runs (drgn's is_live): a production guest
is not held up while you type, and there are no vCPU registers (the tasks
on the vCPUs move on). --stop stops QEMU's threads for the whole session
instead (ptrace, as a dump does): a still picture, with the vCPUs'
registers; they run on when drgn exits."""

GUEST_EPILOG = """\
examples:
  drgn-qemu guest -c qemu.core -s /usr/bin/qemu-system-x86_64 -g vmlinux
  drgn-qemu guest -c qemu.core -g vmlinux -e 'print(prog["init_uts_ns"].name.release)'
  drgn-qemu guest -p $(pidof qemu-system-x86_64) --stop -g vmlinux tasks.py"""


def _cmd_guest(args: argparse.Namespace) -> int:
    from drgn_qemu.guest import guest_plan, guest_program, load_guest_debug_info

    with contextlib.ExitStack() as stack:
        unpack_dir = os.path.dirname(os.path.abspath(args.core or "."))
        target = open_target(args, stack, unpack_dir, args.quiet)
        if args.pid is not None and args.stop:
            from drgn_qemu.ptrace import stop_process

            stack.enter_context(stop_process(args.pid))
        options = DumpOptions(
            vmcoreinfo=args.vmcoreinfo,
            skip_missing=args.skip_missing,
            ram_files=dict(args.ram_file),
        )
        live = args.pid is not None and not args.stop
        guest = guest_program(target.prog, options, target.reader, live=live)
        plan = guest_plan(guest)
        stack.callback(plan.close)
        warnings = [*plan.warnings, *load_guest_debug_info(guest, args.guest_symbols)]
        if not args.quiet:
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        _run_drgn(guest, args.exec, args.args)
    return 0


def _run_drgn(prog: Program, code: Optional[str], script_args: Sequence[str]) -> None:
    """Run *code* (``-e``), a script and its arguments, or drgn's REPL on *prog*, as drgn does."""
    import drgn
    import drgn.cli

    drgn.set_default_prog(prog)
    if code is not None:
        sys.argv = ["-e", *script_args]
        exec(code, drgn.cli.default_globals(prog))
    elif script_args:
        import runpy

        sys.argv = list(script_args)
        sys.path.insert(0, os.path.dirname(os.path.abspath(script_args[0])))
        runpy.run_path(script_args[0], init_globals={"prog": prog}, run_name="__main__")
    elif sys.stdin.isatty():
        drgn.cli.run_interactive(
            prog,
            banner_func=lambda banner: (
                banner + "\n>>> # prog: the guest's Linux kernel, read in place from QEMU"
            ),
        )
    else:
        exec(compile(sys.stdin.read(), "<stdin>", "exec"), drgn.cli.default_globals(prog))


def _cmd_add_vmcoreinfo(args: argparse.Namespace) -> int:
    from drgn_qemu.repair import VmcoreinfoPresent, add_vmcoreinfo

    try:
        result = add_vmcoreinfo(args.vmcore, args.output, args.vmcoreinfo, args.force)
    except VmcoreinfoPresent as e:
        if args.json:
            print(json.dumps({"vmcore": args.vmcore, "added": False, "message": str(e)}, indent=2))
        elif not args.quiet:
            print(e)
        return 0
    vmci = result.vmcoreinfo
    if args.json:
        doc = {
            "vmcore": args.vmcore,
            "added": True,
            "output": result.output,
            "vmcoreinfo": {
                "source": vmci.source,
                "osrelease": vmci.osrelease,
                "kerneloffset": vmci.kerneloffset,
            },
            "guest_bytes": result.guest_bytes,
            "seconds": round(result.seconds, 3),
        }
        print(json.dumps(doc, indent=2))
    elif not args.quiet:
        print(
            f"wrote {result.output}: VMCOREINFO from {vmci.source}: OSRELEASE={vmci.osrelease} "
            f"KERNELOFFSET={vmci.kerneloffset}; {result.guest_bytes / (1 << 20):.1f} MiB of "
            f"guest memory copied in {result.seconds:.2f} s"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the ``drgn-qemu`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="drgn-qemu",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"drgn-qemu {drgn_qemu.__version__}")
    parser.add_argument(
        "--contrib-path",
        action=_ContribPath,
        nargs=0,
        help="print the path of the installed drgn script dump_guest_memory.py (run it as "
        "drgn -c CORE -s QEMU PATH OUTPUT) and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    dump = sub.add_parser(
        "dump-guest-memory",
        help="write the guest's physical memory as an ELF vmcore (or kdump-compressed)",
        description=DUMP_DESCRIPTION,
        epilog=DUMP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_program_arguments(dump, dump=True)
    add_dump_arguments(dump)
    dump.set_defaults(func=_cmd_dump, usage=check_dump_usage, parser=dump)
    info = sub.add_parser(
        "info",
        help="what a crashed or hung QEMU was doing: version, machine, crash, RAM, vCPUs",
        description=INFO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_program_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object instead")
    info.set_defaults(func=_cmd_info, usage=check_program_usage, parser=info)
    guest = sub.add_parser(
        "guest",
        help="drgn on the guest's Linux kernel, in place: no vmcore written",
        description=GUEST_DESCRIPTION,
        epilog=GUEST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_program_arguments(guest)
    guest.add_argument(
        "--stop",
        action="store_true",
        help="with -p: stop QEMU for the session (a still picture, with the vCPUs' registers)",
    )
    guest.add_argument(
        "-g",
        "--guest-symbols",
        metavar="PATH",
        action="append",
        default=[],
        help="the guest kernel's vmlinux, or a module's .ko (repeatable); drgn's standard "
        "places (/usr/lib/debug, debuginfod) are searched too",
    )
    for option in ("--vmcoreinfo", "--ram-file", "--skip-missing"):
        ((flags, kwargs),) = [(f, k) for f, k in DUMP_ARGUMENTS if f[0] == option]
        guest.add_argument(*flags, **kwargs)
    guest.add_argument("-q", "--quiet", action="store_true", help="print no warnings")
    guest.add_argument(
        "-e", dest="exec", metavar="CODE", help="run CODE (with prog the guest's kernel) and exit"
    )
    guest.add_argument(
        "args", metavar="SCRIPT [ARG...]", nargs=argparse.REMAINDER,
        help="a drgn script to run on the guest's kernel, and its arguments",
    )  # fmt: skip
    guest.set_defaults(func=_cmd_guest, usage=check_guest_usage, parser=guest)
    add = sub.add_parser(
        "add-vmcoreinfo",
        help="add the guest kernel's VMCOREINFO to a vmcore that lacks it",
        description=ADD_VMCOREINFO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument(
        "vmcore", metavar="VMCORE", help="an ELF or kdump-compressed vmcore of a Linux guest"
    )
    add.add_argument(
        "-o", "--output", metavar="OUT", help="write the result to OUT (default: replace VMCORE)"
    )
    add.add_argument(
        "--vmcoreinfo",
        metavar="FILE",
        help="the guest kernel's VMCOREINFO text, instead of looking for it in guest memory",
    )
    add.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    add.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object about what was done instead (its fields are in the README)",
    )
    add.set_defaults(func=_cmd_add_vmcoreinfo)
    return parser


def report_errors(argv0: str, func: Callable[..., Optional[int]], *args: object) -> int:
    """
    Call *func* with *args*, printing a :class:`DrgnQemuError` or Ctrl-C as
    one line on standard error and returning the exit status.
    """
    try:
        return func(*args) or 0
    except DrgnQemuError as e:
        print(f"{argv0}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{argv0}: interrupted; no output written", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``drgn-qemu`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "usage", None) is not None:
        args.usage(args.parser, args)
    return report_errors("drgn-qemu", args.func, args)


#: drgn plugins that only add REPL commands (drgn's own and ours): a dump
#: has no use for them, and importing them took 0.12 s of every run here.
#: Other plugins (a debug info finder, say) still load.
COMMAND_PLUGINS = ("builtin_commands", "crash_commands", "qemu")


def skip_command_plugins(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add :data:`COMMAND_PLUGINS` to ``DRGN_DISABLE_PLUGINS`` in *environ*."""
    current = environ.get("DRGN_DISABLE_PLUGINS", "")
    if current != "*":
        environ["DRGN_DISABLE_PLUGINS"] = ",".join(filter(None, [current, *COMMAND_PLUGINS]))


def _entry() -> None:
    skip_command_plugins()
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip tearing down drgn's debug info and the like: a large QEMU's takes
    # a noticeable part of a second, and the process is done.
    os._exit(status)


if __name__ == "__main__":
    _entry()
