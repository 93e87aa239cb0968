#!/usr/bin/env drgn
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Dump a QEMU guest's physical memory as an ELF vmcore, from drgn's CLI:

    drgn -c qemu.core -s qemu-system-x86_64 $(drgn-qemu --contrib-path) OUTPUT

(installed with the package; in a checkout also ``contrib/dump_guest_memory.py``).

The drgn successor of QEMU's gdb script scripts/dump-guest-memory.py; the same
as ``drgn-qemu dump-guest-memory``, with drgn choosing the program (-c, -p,
-s). Run it with --help for the options.
"""

import argparse
import sys
from pathlib import Path

try:
    import drgn_qemu  # noqa: F401
except ImportError:  # Run from a checkout without drgn-qemu installed.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drgn import Program

from drgn_qemu.frontend import (
    DUMP_DESCRIPTION,
    add_dump_arguments,
    check_dump_usage,
    report_errors,
    run_dump,
)
from drgn_qemu.program import check_qemu_program


def main(prog: Program, argv: "list[str]") -> int:
    parser = argparse.ArgumentParser(
        prog="drgn -c CORE -s QEMU dump_guest_memory.py",
        description=DUMP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dump_arguments(parser)
    args = parser.parse_args(argv)
    check_dump_usage(parser, args)

    def dump() -> int:
        check_qemu_program(prog)
        run_dump(prog, args)
        return 0

    return report_errors("dump_guest_memory.py", dump)


if __name__ == "__main__":
    sys.exit(main(prog, sys.argv[1:]))  # type: ignore[name-defined]  # noqa: F821
