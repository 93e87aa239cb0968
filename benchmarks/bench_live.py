#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
Live dumps (-p), measured in one run, as ratios:

- reading a process's memory with ``process_vm_readv()`` against
  ``preadv()`` of ``/proc/PID/mem`` (1 GiB of a child's written memory, 4 MiB
  at a time; the reader uses the faster);
- idle guests of 16 GiB and 64 GiB (SeaBIOS only, RAM from a
  ``memory-backend-ram`` with ``reserve=off``, as the machine has less RAM
  than that) against one of 128 MiB: drgn-qemu -p (threads stopped for the
  dump), drgn-qemu -c on the core the kernel writes when QEMU then gets
  SIGABRT, QEMU's gdb script on that core (once; given up after 10
  minutes), and QMP ``dump-guest-memory`` to /dev/null (and to a file for
  the smaller two: QMP writes every zero).

Needs the tests' harness (our debug QEMU); KVM where usable, else TCG.
Prints a Markdown table; times are medians of REPEAT runs (QMP: one).
"""

import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

REPEAT = 3
SIZES = ("128M", "16G", "64G")


def run(cmd: List[str]) -> None:
    subprocess.run(cmd, check=True)


def median(run: Callable[[], None], repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_readers() -> Tuple[float, float]:
    """Seconds to read 1 GiB of a child's memory with preadv and process_vm_readv."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from drgn_qemu.reader import ProcessReader

    code = ("import ctypes, os, sys\nb = bytearray(os.urandom(1 << 20)) * 1024\n"
            "print(ctypes.addressof(ctypes.c_char.from_buffer(b)), flush=True)\nsys.stdin.read()")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    addr = int(child.stdout.readline())
    buf = memoryview(bytearray(4 << 20))
    out = []
    for vm_readv in (False, True):
        reader = ProcessReader(child.pid, pagemap=False, vm_readv=vm_readv)

        def read(reader: ProcessReader = reader) -> None:
            for off in range(0, 1 << 30, len(buf)):
                reader.readinto(addr + off, buf)

        out.append(median(read))
        reader.close()
    child.stdin.close()
    child.wait()
    return out[0], out[1]


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness import (
        SERIES,
        QemuGuest,
        drgn_qemu_command,
        kvm_usable,
        qemu_binary,
        qemu_source_dir,
    )

    preadv, vm_readv = bench_readers()
    rows: List[Tuple[str, float, float, str, float, str]] = []
    binary = qemu_binary(SERIES[-1])
    accel = "kvm" if kvm_usable() else "tcg"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in SIZES:
            extra = ["-object", f"memory-backend-ram,id=ram0,size={size},reserve=off"]
            cwd = work / f"core-{size}"
            cwd.mkdir()
            with QemuGuest(binary, work, accel=accel, memory=size,
                           machine_opts="dump-guest-core=on,memory-backend=ram0",
                           extra_args=extra, cwd=cwd, core_limit=True) as guest:  # fmt: skip
                time.sleep(2)  # SeaBIOS done: an idle guest
                out = work / "ours.vmcore"
                cmd = [*drgn_qemu_command(), "dump-guest-memory", "-q", "-f", "-p",
                       str(guest.pid), "-s", str(binary), str(out)]  # fmt: skip
                ours = median(functools.partial(run, cmd))
                guest.stop()
                start = time.perf_counter()
                guest.command("dump-guest-memory", paging=False, protocol="file:/dev/null")
                qmp_null = time.perf_counter() - start
                qmp_file = "n/a"
                if size != "64G":
                    start = time.perf_counter()
                    guest.dump(work / "qmp.vmcore")
                    qmp_file = f"{time.perf_counter() - start:.2f}"
                    os.unlink(work / "qmp.vmcore")
                # Then a crash: the kernel writes the core (sparse), we dump it.
                assert guest.proc is not None
                guest.proc.send_signal(signal.SIGABRT)
                guest.proc.wait()
            (core,) = cwd.iterdir()
            cmd = [*drgn_qemu_command(), "dump-guest-memory", "-q", "-f", "-c", str(core), "-s",
                   str(binary), str(out)]  # fmt: skip
            from_core = median(functools.partial(run, cmd))
            # QEMU's gdb script on the same core, once, if it ends in 10 minutes.
            script = qemu_source_dir(binary) / "scripts" / "dump-guest-memory.py"
            gdb = ["gdb", "-nx", "-batch", str(binary), str(core), "-ex", f"source {script}",
                   "-ex", f"dump-guest-memory {work / 'gdb.vmcore'} X86_64"]  # fmt: skip
            free = shutil.disk_usage(work).free
            guest_bytes = core.stat().st_size  # the core's apparent size: about the guest's
            start = time.perf_counter()
            if free < guest_bytes * 1.1:
                # It writes every byte, zeros too: more than this disk holds.
                gdb_s = f"n/a (writes {guest_bytes >> 30} GiB; {free >> 30} GiB free)"
            else:
                try:
                    subprocess.run(gdb, timeout=600, capture_output=True, check=True)
                    gdb_s = f"{time.perf_counter() - start:.1f}"
                except subprocess.TimeoutExpired:
                    gdb_s = "> 600"
            (work / "gdb.vmcore").unlink(missing_ok=True)
            core.unlink()
            rows.append((size, ours, from_core, gdb_s, qmp_null, qmp_file))
    base, base_core = rows[0][1], rows[0][2]
    lines = [f"process_vm_readv: {vm_readv:.3f} s for 1 GiB, preadv of /proc/PID/mem: "
             f"{preadv:.3f} s ({preadv / vm_readv:.2f}x)", "",
             f"| idle guest ({accel}) | drgn-qemu -p, s | / 128 MiB | -c kernel core, s | "
             "/ 128 MiB | QEMU's gdb script on that core, s | QMP to /dev/null, s | "
             "QMP to a file, s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for size, ours, core_s, gdb_s, qmp_null, qmp_file in rows:
        lines.append(f"| {size} | {ours:.2f} | {ours / base:.2f}x | {core_s:.2f} | "
                     f"{core_s / base_core:.2f}x | {gdb_s} | {qmp_null:.2f} | {qmp_file} |")  # fmt: skip
    worst = max(max(r[1] / base, r[2] / base_core) for r in rows)
    lines += ["", "Goal: idle 16 and 64 GiB guests, live and from a kernel-written core, in at "
              f"most 2x the 128 MiB one's time: {worst:.2f}x at worst, "
              + ("met" if worst <= 2 else "**not met**") + "."]  # fmt: skip
    print("\n".join(lines))
    if "--write" in sys.argv[1:]:
        from results import write_section

        write_section("## Live dumps", f"`benchmarks/bench_live.py`, "
                      f"{time.strftime('%Y-%m-%d')}:\n\n" + "\n".join(lines))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
