#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Start-up of drgn-qemu, measured in one run: a one-page dump from a core
(``--begin 0 --length 4K``: the whole start-up, reading QEMU's debug info
and structures, the VMCOREINFO search, writing the file) against
``python -c 'import drgn'`` and ``import drgn_qemu.cli``, each the median of
REPEAT runs in this Python. Prints a Markdown table of seconds and ratios,
then where the one-page dump's time goes: a cProfile of one run, each phase
the cumulative time of the function that does it (cProfile slows Python
code, not drgn's C, so the phases are upper bounds of Python's share).

    benchmarks/bench_startup.py -c CORE -s QEMU-BINARY
    benchmarks/bench_startup.py             # cores a 128 MiB guest of its own
                                            # (needs the tests' harness and QEMU)
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPEAT = 7


def median_seconds(cmd: List[str]) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


#: The phases of a one-page dump: (file, function, what it does).
PHASES = [
    ("<frozen importlib._bootstrap>", "_find_and_load",
     "importing modules after drgn_qemu.cli (the dump's, the plugins')"),
    ("_drgn_util/plugins.py", "_load_plugins", "drgn looks for plugins (entry points)"),
    ("drgn_qemu/program.py", "_open_core", "drgn opens the core (set_core_dump, plugins too)"),
    ("drgn_qemu/program.py", "load_qemu_debug_info",
     "drgn loads QEMU's debug info and indexes its DWARF"),
    ("drgn_qemu/dump.py", "plan_dump",
     "reading QEMU's structures (RAM blocks, memory map, vCPUs) into the plan"),
    ("drgn_qemu/vmcoreinfo.py", "find_vmcoreinfo", "of which the search for VMCOREINFO"),
    ("drgn_qemu/dump.py", "write_dump", "writing the page and the vCPU notes"),
]  # fmt: skip

_PROFILE = """
import cProfile, sys
import drgn_qemu.cli
drgn_qemu.cli.skip_command_plugins()  # as the console script does
profile = cProfile.Profile()
profile.enable()
try:
    drgn_qemu.cli.main(sys.argv[2:])
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
"""


def profile_phases(argv: List[str], stats_path: Path) -> List[str]:
    """Markdown rows: each of :data:`PHASES`' cumulative seconds in one profiled run."""
    import pstats

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _PROFILE, str(stats_path), *argv], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - start
    stats = pstats.Stats(str(stats_path)).stats  # type: ignore[attr-defined]
    cumulative = {}
    for (filename, _, function), (_, _, _, ct, _) in stats.items():
        cumulative[(filename, function)] = ct
    rows = [f"| the whole run, profiled (process start and imports included) | {wall:.3f} |"]
    for suffix, function, what in PHASES:
        seconds = sum(
            ct for (f, fn), ct in cumulative.items() if fn == function and f.endswith(suffix)
        )
        rows.append(f"| {what} (`{function}`) | {seconds:.3f} |")
    return rows


def own_core(work: Path) -> List[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness import SERIES, QemuGuest, qemu_binary

    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, work, memory="128M") as guest:
        guest.stop()
        core = guest.gcore(work / "qemu.core")
    return ["-c", str(core), "-s", str(binary)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--core")
    parser.add_argument("-s", "--symbols")
    parser.add_argument("--write", action="store_true", help="also write RESULTS.md's section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        program = ["-c", args.core, "-s", args.symbols] if args.core else own_core(work)
        exe = Path(sys.executable).parent / "drgn-qemu"
        out = work / "page.vmcore"
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import drgn'", [sys.executable, "-c", "import drgn"]),
            ("python -c 'import drgn_qemu.cli'", [sys.executable, "-c", "import drgn_qemu.cli"]),
            ("drgn-qemu: one 4 KiB page from a core",
             [str(exe), "dump-guest-memory", "-q", "-f", *program, "--begin", "0",
              "--length", "4K", str(out)]),
        ]  # fmt: skip
        times = [(what, median_seconds(cmd)) for what, cmd in rows]
        phases = profile_phases(rows[-1][1][1:], work / "page.prof")
    base = times[1][1]
    lines = [f"| what | median s of {REPEAT} | / import drgn |", "| --- | ---: | ---: |"]
    for what, seconds in times:
        lines.append(f"| {what} | {seconds:.3f} | {seconds / base:.1f}x |")
    page = times[-1][1]
    lines.append("")
    lines.append(f"Goal: a one-page dump from a core in 0.12 s or less: {page:.2f} s, "
                 + ("met" if page <= 0.12 else "**not met**") + ".")  # fmt: skip
    lines += ["", "Where the one-page dump's time goes (one run under cProfile):", "",
              "| phase | cumulative s |", "| --- | ---: |", *phases]  # fmt: skip
    print("\n".join(lines))
    if args.write:
        from results import write_section

        write_section("## Start-up", f"`benchmarks/bench_startup.py`, {time.strftime('%Y-%m-%d')}"
                      f" (a 128 MiB guest's gcore unless given):\n\n" + "\n".join(lines))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
