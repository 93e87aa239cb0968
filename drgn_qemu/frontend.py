# SPDX-License-Identifier: GPL-2.0-or-later
"""
Front end
---------

What the ``drgn-qemu`` command, the drgn script ``dump_guest_memory.py`` and
``%qemu`` share: the dump's options (:data:`DUMP_ARGUMENTS`) and their
checks, opening a QEMU from parsed arguments (:func:`open_target`), running
a dump and printing its summary (:func:`run_dump`), and one-line errors
(:func:`report_errors`). It imports nothing heavy: an architecture, a file
format or numpy is imported only when a dump or a command runs, so that the
drgn plugin costs drgn's start-up little.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from drgn import Program

from drgn_qemu.errors import DrgnQemuError
from drgn_qemu.options import ARCH_NAMES, CHUNK_SIZE, ELF_LAYOUTS, FORMATS, IO_MODES, DumpOptions

if TYPE_CHECKING:
    from drgn_qemu.dump import DumpPlan, DumpResult
    from drgn_qemu.ptrace import ProcessStopped
    from drgn_qemu.reader import MemoryReader

__all__ = (
    "add_dump_arguments",
    "check_dump_usage",
    "check_program_usage",
    "DUMP_ARGUMENTS",
    "DUMP_DESCRIPTION",
    "dump_json",
    "dump_options",
    "named_inputs",
    "open_target",
    "parse_ram_file",
    "parse_size",
    "report_errors",
    "run_dump",
    "Target",
)

_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

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


def _option(*flags: str, **kwargs: Any) -> Tuple[Tuple[str, ...], Dict[str, Any]]:
    """One of :data:`DUMP_ARGUMENTS`: ``add_argument()``'s arguments."""
    return flags, kwargs


#: The options of ``dump-guest-memory`` that do not choose the program, as
#: ``(args, kwargs)`` of ``add_argument()``: the command line, the contrib
#: script and ``%qemu dump-guest-memory`` declare them from here.
# fmt: off
DUMP_ARGUMENTS: List[Tuple[Tuple[str, ...], Dict[str, Any]]] = [
    _option("output", metavar="OUTPUT", help="path of the vmcore to write"),
    _option("--arch", choices=ARCH_NAMES,
            help="guest architecture (default: detected from QEMU's debug info)"),
    _option("--format", choices=FORMATS, default="elf",
            help="elf (default): an ELF vmcore; kdump-*: kdump-compressed with that compression"),
    _option("--paging", action="store_true",
            help="ELF only, as QMP's paging=true: one PT_LOAD per guest-virtual mapping that the "
            "vCPUs' page tables give (x86; other guests, and x86 without paging, get the "
            "identity mapping), so that gdb reads the guest kernel's variables from the "
            "vmcore"),
    _option("--elf-layout", choices=ELF_LAYOUTS, default="qemu",
            help="ELF only. qemu (default): the ELF file QEMU's dump-guest-memory writes, byte "
            "for byte; kernel: program headers first, as Linux's /proc/vmcore, which "
            "makedumpfile needs"),
    _option("--threads", type=int, metavar="N",
            help="threads compressing pages for the kdump formats (default: one per CPU for "
            "kdump-zlib; one for kdump-zstd, kdump-snappy and kdump-lzo, measured faster "
            "so), or finding the zero pages of an ELF vmcore (default: one per CPU, at most "
            "2); the output is the same whatever N"),
    _option("--begin", type=parse_size, metavar="ADDR",
            help="ELF only: dump only guest-physical memory from ADDR (with --length), like "
            "QMP's begin"),
    _option("--length", type=parse_size, metavar="LEN",
            help="number of bytes from --begin to dump, e.g. 0x1000000 or 16M"),
    _option("--vmcoreinfo", metavar="FILE",
            help="the guest kernel's VMCOREINFO text, for when it is neither registered with "
            "QEMU's vmcoreinfo device nor found in guest RAM"),
    _option("--no-sparse", dest="sparse", action="store_false",
            help="write all-zero pages too (by default they are holes: same bytes, less disk; in "
            "a kdump file, the one zero page they all share)"),
    _option("--ram-file", metavar="ID=PATH", action="append", default=[], type=parse_ram_file,
            help="read RAM block ID (its memory-backend id or RAMBlock name, as in the table) "
            "from PATH, a copy of the file QEMU mapped it from (repeatable). A block mapped "
            "shared from a file that still exists is read back from it without this"),
    _option("--skip-missing", action="store_true",
            help="write the guest RAM that can be read and leave out, with a warning, blocks "
            "that are neither in the core nor in a file (never written as zeros); without "
            "it, such a block is an error saying why it is missing"),
    _option("--io", choices=IO_MODES, default="auto", help=argparse.SUPPRESS),
    _option("--chunk-size", type=parse_size, default=CHUNK_SIZE, help=argparse.SUPPRESS),
    _option("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists"),
    _option("--json", action="store_true",
            help="print one JSON object about the dump instead of the table and summary (its "
            "fields are in the README)"),
    _option("-q", "--quiet", action="store_true",
            help="print nothing but errors: no table, no progress, no warnings"),
]
# fmt: on


def add_dump_arguments(parser: argparse.ArgumentParser) -> None:
    """Add :data:`DUMP_ARGUMENTS` to *parser*."""
    for args, kwargs in DUMP_ARGUMENTS:
        parser.add_argument(*args, **kwargs)


def dump_options(args: argparse.Namespace) -> DumpOptions:
    """The :class:`DumpOptions` of parsed :data:`DUMP_ARGUMENTS`."""
    # Each of these options sets the DumpOptions field of its name.
    same = ("arch", "begin", "length", "vmcoreinfo", "format", "elf_layout", "paging", "sparse",
            "threads", "chunk_size", "force", "skip_missing")  # fmt: skip
    return DumpOptions(
        ram_files=dict(args.ram_file), **{name: getattr(args, name) for name in same}
    )


def check_program_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (see :func:`check_dump_usage`) for program options without effect."""
    if getattr(args, "tmpdir", None) is not None and getattr(args, "pid", None) is not None:
        parser.error("--tmpdir only works with -c CORE (a compressed core is unpacked there)")


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
    reader: Optional["MemoryReader"] = None,
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
        if plan.format == "elf" and plan.options.paging:
            from drgn_qemu.elf import ElfCoreLayout

            assert isinstance(plan.layout, ElfCoreLayout)
            loads = len(plan.layout.loads or ())
            what = (f"vmcore, {loads} PT_LOAD segments (the vCPUs' page-table mappings) over "
                    f"{count} memory segment{'s' if count != 1 else ''}")  # fmt: skip
        elif plan.format == "elf":
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
    from drgn_qemu.ramsource import block_record

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
        "blocks": [block_record(s) for s in plan.sources],
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
        self, prog: Program, core: Optional[str], reader: "MemoryReader", unpacked_in: float
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
