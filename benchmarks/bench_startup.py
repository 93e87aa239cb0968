#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Start-up of drgn-qemu, measured in one run: a one-page dump from a core
(``--begin 0 --length 4K``: the whole start-up, reading QEMU's debug info
and structures, the VMCOREINFO search, writing the file) against
``python -c 'import drgn'`` and ``import drgn_qemu.cli``, each the median of
REPEAT runs in this Python. Prints a Markdown table of seconds and ratios,
then where the one-page dump's time goes: each phase timed in the process
by wrapping the function that does it (no profiler, which would slow
Python's share), the median of REPEAT runs, and why it stays. The package
is byte-compiled first, as an installed one is.

    benchmarks/bench_startup.py -c CORE -s QEMU-BINARY
    benchmarks/bench_startup.py             # cores a 768 MiB guest of its own
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


#: The phases of a one-page dump, in order: (key, what it is, why it stays).
PHASES = [
    ("python", "the interpreter starts (`python -c pass`, measured apart)",
     "CPython and its site; an editable install adds its import finder"),
    ("drgn", "import drgn", "drgn's C extension and Python package: every command needs them"),
    ("cli", "import drgn_qemu.cli", "argparse, the dump's options and front end"),
    ("scan", "look for other drgn plugins",
     "a 2 ms read of the installed entry_points.txt, so that drgn's own search "
     "(importlib.metadata, 0.06 s) runs only when such a plugin is installed"),
    ("modules", "import the dump's modules (dump, program and theirs)",
     "Python imports: the ELF and kdump layouts, reader, writer, the QEMU helpers; "
     "much of it is building dataclasses"),
    ("_open_core", "open the core (our checks of its headers, drgn's set_core_dump)",
     "reads the core's headers and notes, not its memory"),
    ("load_qemu_debug_info", "drgn loads QEMU's debug info and indexes its DWARF",
     "grows with QEMU's debug info, not the guest: the structures read next need it"),
    ("plan", "read QEMU's RAM blocks, memory map and vCPUs into the plan",
     "a few hundred reads of QEMU's structures through drgn"),
    ("find_vmcoreinfo", "find VMCOREINFO (QEMU's device, else a search of guest RAM)",
     "the search reads the first word of each guest page the core has data for, so it "
     "grows with written RAM; none with -device vmcoreinfo or --vmcoreinfo FILE"),
    ("write_dump", "write the headers, the notes and the page", "the file itself"),
    ("rest", "the rest of main (arguments, the output file's checks)",
     "what no phase above names"),
]  # fmt: skip

_TIMELINE = """
import json, sys, time
t0 = time.perf_counter()
import drgn
t1 = time.perf_counter()
import drgn_qemu.cli
t2 = time.perf_counter()
drgn_qemu.cli.skip_command_plugins()  # as the console script does
t3 = time.perf_counter()
import drgn_qemu.dump, drgn_qemu.program
t4 = time.perf_counter()
spent = {}
def timed(module, name):
    function = getattr(module, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
    setattr(module, name, wrapper)
for module, name in [(drgn_qemu.program, "_open_core"),
                     (drgn_qemu.program, "load_qemu_debug_info"),
                     (drgn_qemu.dump, "plan_dump"), (drgn_qemu.dump, "find_vmcoreinfo"),
                     (drgn_qemu.dump, "write_dump")]:
    timed(module, name)
drgn_qemu.cli.main(sys.argv[1:])
t5 = time.perf_counter()
named = sum(v for k, v in spent.items() if k != "find_vmcoreinfo")
spent["plan"] = spent.pop("plan_dump") - spent["find_vmcoreinfo"]
spent.update(drgn=t1 - t0, cli=t2 - t1, scan=t3 - t2, modules=t4 - t3, rest=t5 - t4 - named)
print(json.dumps(spent))
"""


def timeline(argv: List[str], python: float) -> List[str]:
    """
    Markdown rows: each of :data:`PHASES`' median seconds over
    :data:`REPEAT` runs of the one-page dump, timed in the process (no
    profiler), *python* the interpreter's own start.
    """
    import json

    runs = []
    for _ in range(REPEAT):
        out = subprocess.run([sys.executable, "-c", _TIMELINE, *argv], check=True,
                             stdout=subprocess.PIPE, text=True).stdout  # fmt: skip
        runs.append(json.loads(out.splitlines()[-1]))
    rows = []
    total = python
    for key, what, why in PHASES:
        seconds = python if key == "python" else statistics.median(r[key] for r in runs)
        total += 0 if key == "python" else seconds
        rows.append(f"| {what} | {seconds:.3f} | {why} |")
    rows.append(f"| sum of the medians | {total:.3f} | |")
    return rows


def own_core(work: Path) -> List[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness import SERIES, QemuGuest, qemu_binary

    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, work, memory="768M") as guest:
        guest.stop()
        core = guest.gcore(work / "qemu.core")
    return ["-c", str(core), "-s", str(binary)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--core")
    parser.add_argument("-s", "--symbols")
    parser.add_argument("--write", action="store_true", help="also write RESULTS.md's section")
    args = parser.parse_args()
    package = Path(__file__).resolve().parent.parent / "drgn_qemu"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
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
        phases = timeline(rows[-1][1][1:], times[0][1])
    base = times[1][1]
    lines = [f"| what | median s of {REPEAT} | / import drgn |", "| --- | ---: | ---: |"]
    for what, seconds in times:
        lines.append(f"| {what} | {seconds:.3f} | {seconds / base:.1f}x |")
    page = times[-1][1]
    lines.append("")
    lines.append(f"Goal: a one-page dump from a core in 0.12 s or less: {page:.2f} s, "
                 + ("met" if page <= 0.12 else "**not met**") + ".")  # fmt: skip
    lines += ["", f"Where the one-page dump's time goes (each phase timed in the process, "
              f"median of {REPEAT} runs), and why it stays:", "",
              "| phase | median s | why it stays |", "| --- | ---: | --- |", *phases]  # fmt: skip
    print("\n".join(lines))
    if args.write:
        from results import write_section

        write_section("## Start-up", f"`benchmarks/bench_startup.py`, {time.strftime('%Y-%m-%d')}"
                      f" (a 768 MiB guest's gcore, as bench_dump's 768M-empty, unless given):\n\n" + "\n".join(lines))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
