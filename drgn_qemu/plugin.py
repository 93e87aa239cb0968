"""
drgn plugin
-----------

Installing drgn-qemu registers this module as a drgn plugin (entry point
group ``drgn.plugins``). In drgn's REPL on a QEMU core or process it
provides the ``%qemu`` command, enabled only for QEMU programs; from a
script, ``drgn.commands.run_command(prog, "qemu ramblocks")``::

    >>> %qemu ramblocks
    >>> %qemu dump-guest-memory guest.vmcore
"""

import argparse
import shlex
from typing import Any, NoReturn, Optional

from drgn import Program, ProgramFlags
from drgn.commands import argument, raw_command

from drgn_qemu.cli import DUMP_DESCRIPTION, add_dump_arguments, run_dump
from drgn_qemu.errors import DrgnQemuError, reading
from drgn_qemu.monitor import (
    hmp_info_cpus,
    hmp_info_mtree,
    hmp_info_qom_tree,
    hmp_info_ramblock,
    hmp_info_registers,
)
from drgn_qemu.program import check_qemu_program
from drgn_qemu.qemugdb import qemu_bt, qemu_coroutine, qemu_timers

__all__ = ("drgn_prog_set", "is_qemu_program")


def is_qemu_program(prog: Program) -> bool:
    """Return whether *prog* is a QEMU system emulator (has ``address_space_memory``)."""
    try:
        check_qemu_program(prog)
    except DrgnQemuError:
        return False
    return True


def drgn_prog_set(prog: Program) -> None:
    """drgn plugin hook: nothing to set up; ``%qemu`` checks the program itself."""


class _Exit(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports instead of exiting the REPL."""

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        if message:
            print(message, end="")
        raise _Exit()

    def error(self, message: str) -> NoReturn:
        self.print_usage()
        raise DrgnQemuError(message)


def _dump(prog: Program, args: argparse.Namespace) -> None:
    run_dump(prog, args)


def _ramblocks(prog: Program, args: argparse.Namespace) -> None:
    print(hmp_info_ramblock(prog), end="")


def _cpus(prog: Program, args: argparse.Namespace) -> None:
    print(hmp_info_cpus(prog), end="")


def _registers(prog: Program, args: argparse.Namespace) -> None:
    print(hmp_info_registers(prog, args.all, args.vcpu), end="")


def _timers(prog: Program, args: argparse.Namespace) -> None:
    print(qemu_timers(prog), end="")


def _address(prog: Program, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return int(prog[text].value_())
    except KeyError:
        raise DrgnQemuError(f"{text!r} is neither an address nor a QEMU variable") from None


def _need_core(prog: Program) -> None:
    if prog.flags & ProgramFlags.IS_LIVE:
        raise DrgnQemuError(
            "backtraces need a core: drgn cannot read a live process's registers "
            "(take a core with gcore, and keep QEMU running)"
        )


def _coroutine(prog: Program, args: argparse.Namespace) -> None:
    _need_core(prog)
    print(qemu_coroutine(prog, _address(prog, args.address)), end="")


def _bt(prog: Program, args: argparse.Namespace) -> None:
    _need_core(prog)
    thread = None
    if args.tid is not None:
        try:
            thread = prog.thread(args.tid)
        except LookupError:
            raise DrgnQemuError(f"no thread {args.tid} in this QEMU") from None
    print(qemu_bt(prog, thread), end="")


def _mtree(prog: Program, args: argparse.Namespace) -> None:
    try:
        print(hmp_info_mtree(prog, args.flatview, args.address_space), end="")
    except LookupError as e:
        raise DrgnQemuError(str(e)) from None


def _qom_tree(prog: Program, args: argparse.Namespace) -> None:
    if args.path is not None and not args.path.startswith("/"):
        raise DrgnQemuError("give an absolute QOM path, such as /machine/peripheral")
    print(hmp_info_qom_tree(prog, args.path), end="")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%qemu", description="Inspect a QEMU core or process.")
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    dump = sub.add_parser(
        "dump-guest-memory",
        help="write the guest's physical memory as an ELF vmcore",
        description=DUMP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dump_arguments(dump)
    dump.set_defaults(run=_dump)
    sub.add_parser("ramblocks", help="the RAM blocks, as HMP 'info ramblock'").set_defaults(
        run=_ramblocks
    )
    sub.add_parser("cpus", help="the vCPUs, as HMP 'info cpus'").set_defaults(run=_cpus)
    registers = sub.add_parser(
        "registers",
        help="a vCPU's registers, as HMP 'info registers'",
        description="The registers QEMU holds for the first vCPU (or VCPU, or all with -a), "
        "as HMP 'info registers'. Under KVM they are as QEMU last synchronized them.",
    )
    registers.add_argument("-a", dest="all", action="store_true", help="all vCPUs")
    registers.add_argument("vcpu", metavar="VCPU", type=int, nargs="?", help="vCPU index")
    registers.set_defaults(run=_registers)
    sub.add_parser(
        "timers", help="the main loop's timers, as QEMU's gdb command 'qemu timers'"
    ).set_defaults(run=_timers)
    coroutine = sub.add_parser(
        "coroutine",
        help="a coroutine's backtrace, as QEMU's gdb command 'qemu coroutine'",
        description="The backtrace of a suspended coroutine, unwound from the registers "
        "its sigjmp_buf holds (glibc's pointer mangling undone).",
    )
    coroutine.add_argument(
        "address", metavar="ADDR", help="the Coroutine's address, or a variable holding it"
    )
    coroutine.set_defaults(run=_coroutine)
    bt = sub.add_parser(
        "bt",
        help="each thread's backtrace and its coroutine callers, as QEMU's gdb 'qemu bt'",
    )
    bt.add_argument("tid", metavar="TID", type=int, nargs="?", help="only this thread")
    bt.set_defaults(run=_bt)
    mtree = sub.add_parser(
        "mtree",
        help="the memory region tree, as HMP 'info mtree' (-f: 'info mtree -f')",
        description="The memory region tree of each address space, then the regions "
        "aliases point into, as HMP 'info mtree'; with -f the flat views QEMU renders from "
        "them, as 'info mtree -f'.",
    )
    mtree.add_argument("-f", dest="flatview", action="store_true", help="the flat views")
    mtree.add_argument(
        "--address-space", metavar="NAME", help="only the address space NAME (e.g. memory, I/O)"
    )
    mtree.set_defaults(run=_mtree)
    qom = sub.add_parser(
        "qom-tree",
        help="the QOM composition tree, as HMP 'info qom-tree'",
        description="The QOM composition tree with type names, from the machine or PATH, "
        "as HMP 'info qom-tree'.",
    )
    qom.add_argument(
        "path", metavar="PATH", nargs="?", help="absolute QOM path (default: the machine)"
    )
    qom.set_defaults(run=_qom_tree)
    return parser


@raw_command(
    name="qemu",
    description="inspect a QEMU core or process (drgn-qemu)",
    usage="**qemu** *SUBCOMMAND* [*OPTION*...]",
    long_description="Subcommands: dump-guest-memory, ramblocks, cpus, registers, mtree, "
    "qom-tree, timers, coroutine, bt. "
    "Run '%qemu SUBCOMMAND --help' for each one's options.",
    arguments=(
        argument(
            "subcommand",
            help="dump-guest-memory, ramblocks, cpus, registers, mtree, qom-tree, timers, "
            "coroutine or bt",
        ),
    ),
    enabled=is_qemu_program,
)
def _cmd_qemu(prog: Program, name: str, args: str, **kwargs: Any) -> None:
    try:
        # drgn runs the command only where is_qemu_program() said yes.
        ns = _parser().parse_args(shlex.split(args))
        # Everything read from a crashed QEMU is untrusted: damage is an
        # error message, never a traceback.
        with reading("QEMU's data structures"):
            ns.run(prog, ns)
    except _Exit:
        pass
    except DrgnQemuError as e:
        print(f"%qemu: error: {e}")
    except KeyboardInterrupt:
        print("%qemu: interrupted; no output written")
