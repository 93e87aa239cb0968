# SPDX-License-Identifier: GPL-2.0-or-later
"""
The ``drgn-qemu`` command line: its subcommands' parsers over the shared
front end (:mod:`drgn_qemu.frontend`), each a thin layer over one library
function (:func:`drgn_qemu.dump.dump_guest_memory`,
:func:`drgn_qemu.info.qemu_info`, :func:`drgn_qemu.guest.guest_program`,
:func:`drgn_qemu.repair.add_vmcoreinfo`).
"""

import argparse
import contextlib
import json
import os
import sys
from importlib.machinery import PathFinder
from typing import Any, MutableMapping, Optional, Sequence, Set

from drgn import Program

import drgn_qemu
from drgn_qemu.frontend import (
    DUMP_ARGUMENTS,
    DUMP_DESCRIPTION,
    add_dump_arguments,
    check_dump_usage,
    check_program_usage,
    named_inputs,
    open_target,
    report_errors,
    run_dump,
)
from drgn_qemu.options import DumpOptions

__all__ = (
    "build_parser",
    "check_guest_usage",
    "installed_drgn_plugins",
    "main",
    "skip_command_plugins",
)

DESCRIPTION = """\
Turn a crashed or hung QEMU into evidence: read QEMU's own data structures
from a core file of a QEMU process (or a live QEMU) with drgn and QEMU's debug
info, and write what the guest had in memory."""

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


def check_guest_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (see :func:`check_dump_usage`) for ``guest`` options that do not go together."""
    check_program_usage(parser, args)
    if args.stop and args.pid is None:
        parser.error("--stop only works with -p PID (a core does not run)")


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
    dump = _add_subcommand(sub, "dump-guest-memory", DUMP_DESCRIPTION, DUMP_EPILOG,
                           "write the guest's physical memory as an ELF vmcore (or kdump-compressed)")  # fmt: skip
    _add_program_arguments(dump, dump=True)
    add_dump_arguments(dump)
    dump.set_defaults(func=_cmd_dump, usage=check_dump_usage, parser=dump)
    info = _add_subcommand(sub, "info", INFO_DESCRIPTION, None,
                           "what a crashed or hung QEMU was doing: version, machine, crash, RAM, vCPUs")  # fmt: skip
    _add_program_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object instead")
    info.set_defaults(func=_cmd_info, usage=check_program_usage, parser=info)
    _add_guest_parser(sub)
    _add_add_vmcoreinfo_parser(sub)
    return parser


def _add_subcommand(
    sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
    name: str,
    description: str,
    epilog: Optional[str],
    summary: str,
) -> argparse.ArgumentParser:
    """A subcommand whose --help keeps its *description*'s and *epilog*'s lines."""
    return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def _add_guest_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """``drgn-qemu guest``."""
    guest = _add_subcommand(sub, "guest", GUEST_DESCRIPTION, GUEST_EPILOG,
                            "drgn on the guest's Linux kernel, in place: no vmcore written")  # fmt: skip
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


def _add_add_vmcoreinfo_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """``drgn-qemu add-vmcoreinfo``."""
    add = _add_subcommand(sub, "add-vmcoreinfo", ADD_VMCOREINFO_DESCRIPTION, None,
                          "add the guest kernel's VMCOREINFO to a vmcore that lacks it")  # fmt: skip
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


def skip_command_plugins(
    environ: MutableMapping[str, str] = os.environ, search_path: Optional[Sequence[str]] = None
) -> None:
    """
    Add :data:`COMMAND_PLUGINS` to ``DRGN_DISABLE_PLUGINS`` in *environ*; if
    no other drgn plugin is installed on *search_path* (``sys.path``), and
    the user named none in ``DRGN_PLUGINS``, set it to ``*``, which is the
    same plugins (none) without drgn's entry point search: importing
    :mod:`importlib.metadata` for it took 0.06 s of every run here.
    """
    current = environ.get("DRGN_DISABLE_PLUGINS", "")
    if current == "*":
        return
    others = None if environ.get("DRGN_PLUGINS") else installed_drgn_plugins(search_path)
    if others is not None and others <= set(COMMAND_PLUGINS):
        environ["DRGN_DISABLE_PLUGINS"] = "*"
    else:
        environ["DRGN_DISABLE_PLUGINS"] = ",".join(filter(None, [current, *COMMAND_PLUGINS]))


def installed_drgn_plugins(search_path: Optional[Sequence[str]] = None) -> Optional[Set[str]]:
    """
    The names of the ``drgn.plugins`` entry points in the ``entry_points.txt``
    of the ``*.dist-info`` and ``*.egg-info`` directories on *search_path*
    (``sys.path``), as :func:`importlib.metadata.entry_points` finds them;
    None where that cannot be told this way (a path entry that is a zip file,
    a meta path finder of its own, an unreadable directory).
    """
    if any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path):
        return None
    names: Set[str] = set()
    for entry in sys.path if search_path is None else search_path:
        try:
            with os.scandir(entry or ".") as it:
                metadata = [e.path for e in it if e.name.endswith((".dist-info", ".egg-info"))]
        except FileNotFoundError:
            continue
        except OSError:  # a zip file, or a directory we may not list
            return None
        for path in metadata:
            try:
                with open(os.path.join(path, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except (FileNotFoundError, NotADirectoryError):  # none, or a PKG-INFO file
                continue
            except OSError:
                return None
            names |= _entry_point_names(text, "drgn.plugins")
    return names


def _entry_point_names(text: str, group: str) -> Set[str]:
    """The names in section [*group*] of an ``entry_points.txt`` (an INI file)."""
    names, inside = set(), False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == f"[{group}]"
        elif inside and "=" in line and not line.startswith(("#", ";")):
            names.add(line.partition("=")[0].strip())
    return names


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
