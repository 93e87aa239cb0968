#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
``dump-guest-memory --paging`` against QMP's ``paging=true``, measured in one
run on the same stopped guest: Debian's 6.1 cloud kernel, 1 GiB, 2 vCPUs
(TCG), with -device vmcoreinfo. QMP's dump runs inside QEMU (no start-up);
ours reads the gcore'd core (in the page cache). Also the plain dump of each,
to show what the page walk costs. Times are medians of REPEAT runs, each
after a sync; the files are checked equal (but e_ehsize) before timing.

Needs the tests' harness (our debug QEMU 10.0, the 6.1 kernel). Prints a
Markdown table; with --write, the ``## --paging`` section of RESULTS.md.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

REPEAT = 3


def timed(run: Callable[[], object]) -> float:
    """Median wall seconds of REPEAT runs of *run*, each after a sync."""
    times = []
    for _ in range(REPEAT):
        os.sync()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness import drgn_qemu_command, qemu_binary
    from linux_guest import boot_linux, fetch_kernel
    from vmcore import assert_same_file_but_ehsize, loads

    binary = qemu_binary("10.0")
    kernel = fetch_kernel("6.1")
    rows: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        guest = boot_linux(binary, work, kernel, True, memory="1G", smp=2)
        try:
            guest.stop()
            core = guest.gcore(work / "qemu.core")
            theirs, ours = work / "theirs.vmcore", work / "ours.vmcore"

            def cmd(paging: bool) -> List[str]:
                return [*drgn_qemu_command(), "dump-guest-memory", "-q", "-f", "-c", str(core),
                        "-s", str(binary), *(["--paging"] if paging else []), str(ours)]  # fmt: skip

            for paging in (True, False):
                guest.dump(theirs, paging=paging)
                subprocess.run(cmd(paging), check=True)
                assert_same_file_but_ehsize(ours, theirs)
                count = len(loads(ours))
                command = cmd(paging)
                qmp = timed(lambda p=paging: guest.dump(theirs, paging=p))  # type: ignore[misc]
                mine = timed(lambda c=command: subprocess.run(c, check=True))  # type: ignore[misc]
                what = f"paging={'true' if paging else 'false'} ({count} PT_LOADs)"
                rows.append(f"| {what} | {qmp:.2f} s | {mine:.2f} s | {qmp / mine:.2f}x |")
        finally:
            guest.close()
    table = "\n".join(["| dump | QMP | drgn-qemu -c | QMP / ours |", "| --- | ---: | ---: | ---: |",
                       *rows])  # fmt: skip
    print(table)
    if "--write" in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("## --paging", f"`benchmarks/bench_paging.py --write`, "
                      f"{time.strftime('%Y-%m-%d')}: Debian 6.1, 1 GiB, 2 vCPUs, TCG, stopped; "
                      f"medians of {REPEAT}, files checked equal first; above 1x, ours is faster."
                      f"\n\n{table}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
