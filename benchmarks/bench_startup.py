#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Start-up of drgn-qemu, measured in one run: a one-page dump from a core
(``--begin 0 --length 4K``: the whole start-up, reading QEMU's debug info
and structures, the VMCOREINFO search, writing the file) against
``python -c 'import drgn'`` and ``import drgn_qemu.cli``, each the median of
REPEAT runs in this Python. Prints a Markdown table of seconds and ratios.

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
            ("python -c 'import drgn'", [sys.executable, "-c", "import drgn"]),
            ("python -c 'import drgn_qemu.cli'", [sys.executable, "-c", "import drgn_qemu.cli"]),
            ("drgn-qemu: one 4 KiB page from a core",
             [str(exe), "dump-guest-memory", "-q", "-f", *program, "--begin", "0",
              "--length", "4K", str(out)]),
        ]  # fmt: skip
        times = [(what, median_seconds(cmd)) for what, cmd in rows]
    base = times[0][1]
    lines = [f"| what | median s of {REPEAT} | / import drgn |", "| --- | ---: | ---: |"]
    for what, seconds in times:
        lines.append(f"| {what} | {seconds:.3f} | {seconds / base:.1f}x |")
    page = times[-1][1]
    lines.append("")
    lines.append(f"Goal: a one-page dump from a core in 0.2 s or less: {page:.2f} s, "
                 + ("met" if page <= 0.2 else "**not met**") + ".")  # fmt: skip
    print("\n".join(lines))
    if args.write:
        from results import write_section

        write_section("## Start-up", f"`benchmarks/bench_startup.py`, {time.strftime('%Y-%m-%d')}"
                      f" (a 128 MiB guest's gcore unless given):\n\n" + "\n".join(lines))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
