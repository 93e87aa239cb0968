#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
drgn on a guest's Linux kernel, measured in one run: Debian's 6.12 cloud
kernel with -device vmcoreinfo, 2 vCPUs, booted in a 512 MiB and a 16 GiB
guest (TCG), each stopped, then killed with SIGABRT
so the kernel writes QEMU's core (sparse). For each, the time and peak RSS
(the process and its children) of:

- opening the guest's kernel (``-e pass``), and of a script that prints
  every task's pid, comm, state and stack depth, with
  - drgn-qemu guest on the QEMU core, in place;
  - drgn on the vmcore drgn-qemu writes from that core, the dump included;
  - drgn-qemu guest -p on the running QEMU (is_live);
  - drgn --qemu on the running QEMU over its QMP Unix socket (drgn reads
    /proc/PID/mem) and over TCP (drgn reads memory with QMP commands).

Needs the tests' harness (our debug QEMU 10.0, the 6.12 kernel). Prints a
Markdown table; times are medians of REPEAT runs (TCP: one).
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPEAT = 3
SIZES = ("512M", "16G")
SCRIPT = r"""
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import task_state_to_char
n = 0
for task in for_each_task(prog):
    try:
        depth = len(prog.stack_trace(task))
    except ValueError:  # a task on a vCPU of a live kernel
        depth = -1
    print(task.pid.value_(), task.comm.string_().decode(), task_state_to_char(task), depth)
    n += 1
print(n, "tasks")
"""


def timed(cmd: List[str]) -> Tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and output of one run of *cmd*."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode})")
    return seconds, usage.ru_maxrss, out


def median(cmd: List[str], repeat: int = REPEAT) -> Tuple[float, int, str]:
    runs = [timed(cmd) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness import DRGN, drgn_qemu_command, qemu_binary
    from linux_guest import boot_linux, fetch_kernel

    binary = qemu_binary("10.0")
    kernel = fetch_kernel("6.12")
    # TCG, as the tests: under this machine's nested KVM the 6.12 kernel
    # needs -cpu host, which its KVM refuses (an MSR it cannot set).
    accel = "tcg"
    vmlinux = str(kernel.vmlinux)
    pattern = Path("/proc/sys/kernel/core_pattern")
    old_pattern = pattern.read_text()
    pattern.write_text("core\n")  # the kernel writes the core next to QEMU
    rows: Dict[str, Dict[str, Tuple[float, int, str]]] = {}
    tcp_note: List[str] = []  # the sizes where drgn --qemu over TCP found no kernel
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in SIZES:
                work = Path(tmp) / size
                work.mkdir()
                script = work / "tasks.py"
                script.write_text(SCRIPT)
                cwd = work / "cwd"
                cwd.mkdir()
                sock, port = work / "drgn.sock", free_port()
                extra = ["-qmp", f"unix:{sock},server=on,wait=off",
                         "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"]  # fmt: skip
                guest = boot_linux(binary, work, kernel, True, memory=size, smp=2, accel=accel,
                                   extra_args=extra, cwd=cwd, core_limit=True)  # fmt: skip
                r: Dict[str, Tuple[float, int, str]] = {}
                try:
                    guest.stop()
                    pid = str(guest.pid)
                    ours_p = [*drgn_qemu_command(), "guest", "-q", "-p", pid, "-s", str(binary),
                              "-g", vmlinux]  # fmt: skip
                    r["open: drgn-qemu guest -p"] = median([*ours_p, "-e", "pass"])
                    r["tasks: drgn-qemu guest -p"] = median([*ours_p, str(script)])
                    unix = [DRGN, "-q", "--qemu", str(sock), "-s", vmlinux]
                    r["open: drgn --qemu (Unix socket)"] = median([*unix, "-e", "pass"])
                    r["tasks: drgn --qemu (Unix socket)"] = median([*unix, str(script)])
                    tcp = [DRGN, "-q", "--qemu", f"127.0.0.1:{port}", "-s", vmlinux]
                    vmci = work / "vmcoreinfo"
                    subprocess.run([*drgn_qemu_command(), "guest", "-q", "-p", pid, "-s",
                                    str(binary), "-g", vmlinux, "-e",
                                    "import sys; from drgn_qemu.guest import guest_plan; "
                                    f"open({str(vmci)!r}, 'wb').write(guest_plan(prog)."
                                    "vmcoreinfo.text)"], check=True)  # fmt: skip
                    # Over TCP drgn cannot find VMCOREINFO itself: given, as a user would.
                    tcp += ["--vmcoreinfo", str(vmci)]
                    check = "prog['init_uts_ns']"
                    if subprocess.run([*tcp, "-e", check], capture_output=True).returncode == 0:
                        r["open: drgn --qemu (TCP)"] = median([*tcp, "-e", "pass"], 1)
                        r["tasks: drgn --qemu (TCP)"] = median([*tcp, str(script)], 1)
                    else:
                        tcp_note.append(size)
                    assert guest.proc is not None
                    guest.proc.send_signal(signal.SIGABRT)
                    guest.proc.wait()
                finally:
                    guest.close()
                (core,) = cwd.iterdir()
                ours_c = [*drgn_qemu_command(), "guest", "-q", "-c", str(core), "-s", str(binary),
                          "-g", vmlinux]  # fmt: skip
                r["open: drgn-qemu guest -c"] = median([*ours_c, "-e", "pass"])
                r["tasks: drgn-qemu guest -c"] = median([*ours_c, str(script)])
                vmcore = work / "guest.vmcore"
                dump = [*drgn_qemu_command(), "dump-guest-memory", "-q", "-f", "-c", str(core),
                        "-s", str(binary), str(vmcore)]  # fmt: skip
                d = median(dump)
                o = median([DRGN, "-q", "-c", str(vmcore), "-s", vmlinux, "-e", "pass"])
                t = median([DRGN, "-q", "-c", str(vmcore), "-s", vmlinux, str(script)])
                r["open: dump-guest-memory, then drgn -c vmcore"] = (
                    d[0] + o[0],
                    max(d[1], o[1]),
                    "",
                )
                r["tasks: dump-guest-memory, then drgn -c vmcore"] = (
                    d[0] + t[0],
                    max(d[1], t[1]),
                    t[2],
                )
                r["core size on disk (MiB)"] = (core.stat().st_blocks * 512 / (1 << 20), 0, "")
                tasks = {k: v[2].splitlines()[-1] for k, v in r.items() if k.startswith("tasks")}
                print(size, tasks, file=sys.stderr)
                rows[size] = r
                vmcore.unlink()
                core.unlink()
    finally:
        pattern.write_text(old_pattern)
    lines = [f"| what | {' | '.join(SIZES)} | 16G / 512M | peak RSS MiB ({' / '.join(SIZES)}) |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for key in rows[SIZES[0]]:
        if key not in rows[SIZES[1]]:
            continue
        a, b = rows[SIZES[0]][key], rows[SIZES[1]][key]
        if key.startswith("core size"):
            lines.append(f"| {key} | {a[0]:.0f} | {b[0]:.0f} | | |")
            continue
        lines.append(f"| {key} | {a[0]:.2f} s | {b[0]:.2f} s | {b[0] / a[0]:.2f}x | "
                     f"{a[1] >> 10} / {b[1] >> 10} |")  # fmt: skip
    if tcp_note:
        lines.append(
            f"\ndrgn --qemu over TCP ({', '.join(tcp_note)}): drgn 0.3 did not open the guest's "
            "kernel (`init_uts_ns` not found, with `--vmcoreinfo` given too): it tells a Linux "
            "guest only over the Unix socket, so no TCP row."
        )
    table = "\n".join(lines)
    print(table)
    if "--write" in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section("## The guest's kernel in place", f"`benchmarks/bench_guest.py --write`, "
                      f"{time.strftime('%Y-%m-%d')}, {accel}, 2 CPUs, one run (medians of "
                      f"{REPEAT}; TCP once):\n\n{table}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
