# SPDX-License-Identifier: GPL-2.0-or-later
"""
drgn plugin
-----------

Installing drgn-qemu registers this module as a drgn plugin (entry point
group ``drgn.plugins``). In drgn's REPL on a QEMU core or process it
provides the ``%qemu`` command, enabled only for QEMU programs; from a
script, ``drgn.commands.run_command(prog, "qemu ramblocks")``::

    >>> %qemu ramblocks
    >>> %qemu dump-guest-memory guest.vmcore

Each subcommand is a drgn command of its own namespace,
:data:`QEMU_COMMAND_NAMESPACE`, declared with :func:`qemu_command` the way
drgn's ``%crash`` commands are; what a subcommand needs (the monitor views,
the dump) is imported when it runs, so the plugin costs drgn's start-up
little.
"""

import argparse
import functools
from typing import Any, Dict

from drgn import Program, ProgramFlags
from drgn.commands import (
    CommandArgumentError,
    CommandError,
    CommandNamespace,
    CommandNotFoundError,
    argument,
    command,
    raw_command,
)

from drgn_qemu.errors import DrgnQemuError, NotFoundError, reading
from drgn_qemu.frontend import DUMP_ARGUMENTS, DUMP_DESCRIPTION

__all__ = (
    "QEMU_COMMAND_NAMESPACE",
    "drgn_prog_set",
    "is_qemu_program",
    "qemu_command",
)

#: The namespace of ``%qemu``'s subcommands.
QEMU_COMMAND_NAMESPACE = CommandNamespace(func_name_prefix="_qemu_cmd_")

#: :func:`drgn.commands.command` for a ``%qemu`` subcommand: a function
#: ``_qemu_cmd_NAME`` is subcommand NAME (``_`` for ``-``, or *name*).
qemu_command = functools.partial(command, namespace=QEMU_COMMAND_NAMESPACE)


def is_qemu_program(prog: Program) -> bool:
    """Return whether *prog* is a QEMU system emulator (has ``address_space_memory``)."""
    from drgn_qemu.program import check_qemu_program

    try:
        check_qemu_program(prog)
    except DrgnQemuError:
        return False
    return True


def drgn_prog_set(prog: Program) -> None:
    """drgn plugin hook: nothing to set up; ``%qemu`` checks the program itself."""


@qemu_command(
    name="dump-guest-memory",
    description="write the guest's physical memory as an ELF vmcore",
    long_description=DUMP_DESCRIPTION,
    arguments=tuple(argument(*args, **kwargs) for args, kwargs in DUMP_ARGUMENTS),
)
def _qemu_cmd_dump_guest_memory(
    prog: Program, name: str, args: argparse.Namespace, **kwargs: Any
) -> None:
    from drgn_qemu.frontend import run_dump

    run_dump(prog, args)


@qemu_command(
    description="bind the guest's Linux kernel, as a drgn Program, to a variable",
    long_description="Open the Linux kernel of this QEMU's guest in place (no vmcore "
    "written: guest RAM is read from this program where QEMU holds it) as a drgn Program, "
    "and bind it to NAME (default 'guest') in this session, to look at QEMU and its guest "
    "side by side: guest.stack_trace(cpu_curr(guest, 0)), for_each_task(guest)...",
    arguments=(
        argument(
            "name",
            metavar="NAME",
            nargs="?",
            default="guest",
            help="the variable to bind (default: guest)",
        ),  # fmt: skip
        argument(
            "-g",
            "--guest-symbols",
            metavar="PATH",
            action="append",
            default=[],
            help="the guest kernel's vmlinux, or a module's .ko (repeatable)",
        ),  # fmt: skip
        argument(
            "--vmcoreinfo",
            metavar="FILE",
            help="the guest kernel's VMCOREINFO, where QEMU and guest RAM have none",
        ),  # fmt: skip
    ),
)
def _qemu_cmd_guest(
    prog: Program, name: str, args: argparse.Namespace, *, globals: Dict[str, Any], **kwargs: Any
) -> None:
    from drgn_qemu.guest import guest_program, load_guest_debug_info
    from drgn_qemu.options import DumpOptions

    live = bool(prog.flags & ProgramFlags.IS_LIVE)
    guest = guest_program(prog, DumpOptions(vmcoreinfo=args.vmcoreinfo), live=live)
    for warning in load_guest_debug_info(guest, args.guest_symbols):
        print(f"warning: {warning}")
    globals[args.name] = guest
    release = guest["init_uts_ns"].name.release.string_().decode(errors="replace")
    print(f"{args.name}: the guest's Linux {release}" + (" (live)" if live else ""))


@qemu_command(description="the RAM blocks, as HMP 'info ramblock'")
def _qemu_cmd_ramblocks(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_ramblock

    print(hmp_info_ramblock(prog), end="")


@qemu_command(name="memory-devices", description="the memory devices, as HMP 'info memory-devices'")
def _qemu_cmd_memory_devices(
    prog: Program, name: str, args: argparse.Namespace, **kwargs: Any
) -> None:
    from drgn_qemu.monitor import hmp_info_memory_devices

    print(hmp_info_memory_devices(prog), end="")


@qemu_command(description="the vCPUs, as HMP 'info cpus'")
def _qemu_cmd_cpus(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_cpus

    print(hmp_info_cpus(prog), end="")


@qemu_command(
    description="a vCPU's registers, as HMP 'info registers'",
    long_description="The registers QEMU holds for the first vCPU (or VCPU, or all with -a), "
    "as HMP 'info registers'. Under KVM they are as QEMU last synchronized them.",
    arguments=(
        argument("-a", dest="all", action="store_true", help="all vCPUs"),
        argument("vcpu", metavar="VCPU", type=int, nargs="?", help="vCPU index"),
    ),
)
def _qemu_cmd_registers(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_registers

    print(hmp_info_registers(prog, args.all, args.vcpu), end="")


@qemu_command(
    description="a vCPU's virtual memory ranges, as HMP 'info mem' (x86, riscv64)",
    long_description="The virtual ranges the first vCPU (or VCPU) maps, merged where their "
    "protection is the same, as HMP 'info mem'. On a 5-level paging guest, what a correct walk "
    "gives: QEMU's own 'info mem' prints nothing there.",
    arguments=(argument("vcpu", metavar="VCPU", type=int, nargs="?", help="vCPU index"),),
)
def _qemu_cmd_mem(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_mem

    print(hmp_info_mem(prog, args.vcpu), end="")


@qemu_command(
    description="a vCPU's mapped pages, as HMP 'info tlb' (x86)",
    long_description="Every page the first vCPU (or VCPU) maps, its physical address and "
    "flags, as HMP 'info tlb'.",
    arguments=(argument("vcpu", metavar="VCPU", type=int, nargs="?", help="vCPU index"),),
)
def _qemu_cmd_tlb(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_tlb

    print(hmp_info_tlb(prog, args.vcpu), end="")


@qemu_command(description="the main loop's timers, as QEMU's gdb command 'qemu timers'")
def _qemu_cmd_timers(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.qemugdb import qemu_timers

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


@qemu_command(
    description="a coroutine's backtrace, as QEMU's gdb command 'qemu coroutine'",
    long_description="The backtrace of a suspended coroutine, unwound from the registers "
    "its sigjmp_buf holds (glibc's pointer mangling undone).",
    arguments=(
        argument(
            "address", metavar="ADDR", help="the Coroutine's address, or a variable holding it"
        ),
    ),
)
def _qemu_cmd_coroutine(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.qemugdb import qemu_coroutine

    _need_core(prog)
    print(qemu_coroutine(prog, _address(prog, args.address)), end="")


@qemu_command(
    description="each thread's backtrace and its coroutine callers, as QEMU's gdb 'qemu bt'",
    arguments=(argument("tid", metavar="TID", type=int, nargs="?", help="only this thread"),),
)
def _qemu_cmd_bt(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.qemugdb import qemu_bt

    _need_core(prog)
    thread = None
    if args.tid is not None:
        try:
            thread = prog.thread(args.tid)
        except LookupError:
            raise NotFoundError(f"no thread {args.tid} in this QEMU") from None
    print(qemu_bt(prog, thread), end="")


@qemu_command(
    description="the memory region tree, as HMP 'info mtree' (-f: 'info mtree -f')",
    long_description="The memory region tree of each address space, then the regions "
    "aliases point into, as HMP 'info mtree'; with -f the flat views QEMU renders from "
    "them, as 'info mtree -f'.",
    arguments=(
        argument("-f", dest="flatview", action="store_true", help="the flat views"),
        argument(
            "--address-space", metavar="NAME", help="only the address space NAME (e.g. memory, I/O)"
        ),
    ),
)
def _qemu_cmd_mtree(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_mtree

    print(hmp_info_mtree(prog, args.flatview, args.address_space), end="")


@qemu_command(
    name="qom-tree",
    description="the QOM composition tree, as HMP 'info qom-tree'",
    long_description="The QOM composition tree with type names, from the machine or PATH, "
    "as HMP 'info qom-tree'.",
    arguments=(
        argument(
            "path", metavar="PATH", nargs="?", help="absolute QOM path (default: the machine)"
        ),
    ),
)
def _qemu_cmd_qom_tree(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    from drgn_qemu.monitor import hmp_info_qom_tree

    if args.path is not None and not args.path.startswith("/"):
        raise DrgnQemuError("give an absolute QOM path, such as /machine/peripheral")
    print(hmp_info_qom_tree(prog, args.path), end="")


@qemu_command(
    description="what the QEMU was doing: version, machine, crash, RAM, vCPUs (drgn-qemu info)",
    arguments=(argument("--json", action="store_true", help="one JSON object instead"),),
)
def _qemu_cmd_info(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    import json

    from drgn_qemu.info import format_info, info_json, qemu_info

    core = None if prog.flags & ProgramFlags.IS_LIVE else prog.core_dump_path
    info = qemu_info(prog, core)
    print(json.dumps(info_json(info), indent=2) if args.json else format_info(info), end="")


def _subcommand_help(prog: Program, words: str) -> None:
    """``%qemu help [SUBCOMMAND]`` (and ``%qemu SUBCOMMAND --help``)."""
    name = words.split()[0] if words.split() else ""
    if name:
        sub = QEMU_COMMAND_NAMESPACE.lookup(prog, name)
        print(f"usage: %qemu {sub.format_usage()}\n\n{sub.description()}\n")
        print(sub.format_help())
        return
    print("usage: %qemu SUBCOMMAND [OPTION...]\n\nSubcommands:")
    for sub_name, sub in sorted(QEMU_COMMAND_NAMESPACE.enabled(prog)):
        print(f"  {sub_name:<18} {sub.description()}")
    print("\nRun '%qemu help SUBCOMMAND' for a subcommand's options.")


@raw_command(
    name="qemu",
    description="inspect a QEMU core or process (drgn-qemu)",
    usage="**qemu** *SUBCOMMAND* [*OPTION*...]",
    long_description="Subcommands: dump-guest-memory, ramblocks, memory-devices, cpus, "
    "registers, mem, tlb, mtree, "
    "qom-tree, timers, coroutine, bt, guest. "
    "Run '%qemu help SUBCOMMAND' for each one's options.",
    arguments=(argument("subcommand", help="a subcommand; '%qemu help' lists them"),),
    enabled=is_qemu_program,
)
def _cmd_qemu(
    prog: Program, name: str, args: str, *, globals: Dict[str, Any], **kwargs: Any
) -> None:
    words = args.split()
    sub = f"qemu {words[0]}" if words else "qemu"
    try:
        if not words or words[0] in ("help", "-h", "--help"):
            _subcommand_help(prog, " ".join(words[1:]))
        elif "--help" in words[1:] or "-h" in words[1:]:
            _subcommand_help(prog, words[0])
        else:
            # Everything read from a crashed QEMU is untrusted: damage is an
            # error message, never a traceback.
            with reading("QEMU's data structures"):
                QEMU_COMMAND_NAMESPACE.run(prog, args, globals=globals)
    # Errors are drgn's CommandError, which the REPL prints on one line
    # ("drgn: error: qemu SUBCOMMAND: ...") and run_command() raises.
    except CommandNotFoundError as e:
        raise CommandNotFoundError(f"qemu {e.name}") from None
    except CommandArgumentError as e:
        raise CommandArgumentError(f"qemu {e}") from None
    except DrgnQemuError as e:
        raise CommandError(f"{sub}: {e}") from None
    except KeyboardInterrupt:
        raise CommandError(f"{sub}: interrupted; no output written") from None
