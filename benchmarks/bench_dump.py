"""
Benchmark: dumping a stopped guest's memory, measured in one run on the same
guest, our dump against the alternatives:

- drgn-qemu from a gcore of QEMU (-c), and from the live process (-p);
- QEMU's own QMP dump-guest-memory;
- QEMU's gdb script scripts/dump-guest-memory.py (from the same Debian source
  package the tests build), run as
  ``gdb -batch BIN CORE -ex 'source ...' -ex 'dump-guest-memory OUT X86_64'``;
- cp of the same bytes (QEMU's vmcore), and of as many bytes as are non-zero.

and, for the kdump-compressed formats, QEMU's QMP dump-guest-memory in
each format it has (kdump-raw-zlib, -lzo, -snappy) against ours in each
format, with 1, 2 and 4 compression threads. The targets list, per guest
and format, whether ours is at least as fast as QMP's same format, and
where not, the measured reason.

Guests: 768 MiB mostly empty (firmware only), 2 GiB mostly written (random
data loaded with -device loader), 8 GiB under KVM, mostly untouched, and a
1 GiB Linux 6.1 guest (the tests' kernel and initramfs, booted under TCG).
For each: wall time, peak RSS, output size on disk, and ratios. Results go
to benchmarks/RESULTS.md (``--smoke``: the smallest guest only, printed, for
CI).

    .venv/bin/python benchmarks/bench_dump.py [--smoke] [--guests NAME,...]
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import (  # noqa: E402
    QemuGuest,
    drgn_qemu_command,
    kvm_usable,
    qemu_binary,
    qemu_source_dir,
)

GUESTS = {
    "768M-empty": {"memory": "768M", "fill": 0, "accel": "auto"},
    "2G-written": {"memory": "2G", "fill": 1800 << 20, "accel": "auto"},
    "8G-kvm-untouched": {"memory": "8G", "fill": 0, "accel": "kvm"},
    "1G-linux-6.1": {"memory": "1G", "fill": 0, "accel": "tcg", "linux": "6.1"},
}
KDUMP_FORMATS = ["kdump-zlib", "kdump-zstd", "kdump-snappy", "kdump-lzo"]
#: QMP's format of the same compression (QEMU has no zstd kdump format).
QMP_FORMATS = {"kdump-zlib": "kdump-raw-zlib", "kdump-lzo": "kdump-raw-lzo",
               "kdump-snappy": "kdump-raw-snappy"}  # fmt: skip
#: Compression threads each kdump format is measured with.
THREADS = (1, 2, 4)
CHUNK_SIZES = ["1M", "4M", "8M", "16M", "32M"]
IO_ALTERNATIVES = ["copy-file-range", "pread"]
#: A dump of one page: what every run costs before it copies anything.
STARTUP = "drgn-qemu -c CORE, one 4 KiB page (start-up)"
#: Reading the whole core once, from the page cache: what any dump from it costs.
READ_CORE = "reading the core (cat CORE > /dev/null)"
#: Our compressor alone on the guest's pages (QEMU's vmcore), one thread, in
#: a fresh Python: what a kdump format costs us before any I/O. It times
#: itself around the compressor's calls only (the file is read a chunk at a
#: time into a buffer, outside the timing) and prints the seconds.
COMPRESS_ALONE = (
    "import os, sys, time\n"
    "from drgn_qemu.compression import get_page_compressor\n"
    "c = get_page_compressor(sys.argv[1], 4096)\n"
    "fd, step, at, spent = os.open(sys.argv[2], os.O_RDONLY), 4 << 20, 0, 0.0\n"
    "buf = memoryview(bytearray(step))\n"
    "out = memoryview(bytearray(c.out_size(step // 4096)))\n"
    "while True:\n"
    "    n = os.preadv(fd, [buf], at) // 4096 * 4096\n"
    "    if not n:\n"
    "        break\n"
    "    t = time.perf_counter()\n"
    "    c.compress_pages(buf[:n], out)\n"
    "    spent += time.perf_counter() - t\n"
    "    at += n\n"
    "print(spent)\n"
)
#: Runs of each measurement (the median is reported); QEMU's gdb script runs once.
REPEAT = 3


@dataclass
class Run:
    what: str
    seconds: float
    rss_mib: Optional[float]
    disk_mib: Optional[float]
    command: str


def measure(what: str, cmd: List[str], output: Optional[Path], repeat: int = REPEAT,
            self_timed: bool = False) -> Run:  # fmt: skip
    """
    Run *cmd* *repeat* times, each after a sync (so no run pays for the last
    one's writeback); return the median wall time (*self_timed*: the
    seconds the command printed last) and the peak RSS that GNU time
    measured for the command itself.
    """
    times = []
    rss = 0.0
    for _ in range(repeat):
        if output is not None:
            output.unlink(missing_ok=True)
        os.sync()
        rss_file = output.with_suffix(".rss") if output else Path("/tmp/drgn-qemu-bench.rss")
        start = time.monotonic()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd],
                           capture_output=True)  # fmt: skip
        times.append(time.monotonic() - start)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace')}")
        if self_timed:
            times[-1] = float(r.stdout.split()[-1])
        rss = max(rss, int(rss_file.read_text().split()[-1]) / 1024)
        rss_file.unlink()
    return Run(what, statistics.median(times), rss, disk_mib(output), " ".join(cmd))


def measure_qmp_dump(what: str, guest: QemuGuest, output: Path, **kwargs: Any) -> Run:
    """
    Time QEMU's own QMP dump-guest-memory (with *kwargs*, e.g. a format)
    as :func:`measure` times a command: median of REPEAT runs, each after a
    sync. Peak RSS is n/a: QEMU dumps inside its own process.
    """
    times = []
    for _ in range(REPEAT):
        output.unlink(missing_ok=True)
        os.sync()
        t0 = time.monotonic()
        guest.dump(output, **kwargs)
        times.append(time.monotonic() - t0)
    command = " ".join(["QMP dump-guest-memory paging=false",
                        *(f"{k}={v}" for k, v in kwargs.items())])  # fmt: skip
    return Run(what, statistics.median(times), None, disk_mib(output), command)


def disk_mib(path: Optional[Path]) -> Optional[float]:
    if path is None or not path.exists():
        return None
    return path.stat().st_blocks * 512 / (1 << 20)


def random_blob(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


def bench_guest(name: str, spec: Dict[str, object], work: Path, binary: Path, script: Path,
                sweep: bool) -> Tuple[List[Run], Dict[str, str]]:  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    accel = str(spec["accel"])
    if accel == "auto" or (accel == "kvm" and not kvm_usable()):
        accel = "kvm" if kvm_usable() else "tcg"
    extra: List[str] = []
    fill = int(spec["fill"])  # type: ignore[call-overload]
    if fill:
        random_blob(work / "fill.bin", fill)
        extra = ["-device", f"loader,file={work / 'fill.bin'},addr=0x100000,force-raw=on"]
    runs: List[Run] = []
    info = {"guest": name, "accel": accel, "memory": str(spec["memory"])}
    if "linux" in spec:
        from linux_guest import boot_linux, fetch_kernel

        guest = boot_linux(binary, work, fetch_kernel(str(spec["linux"])), True,
                           memory=str(spec["memory"]))  # fmt: skip
    else:
        guest = QemuGuest(binary, work, accel, memory=str(spec["memory"]),
                          machine_opts="dump-guest-core=on", extra_args=extra).start()  # fmt: skip
    try:
        time.sleep(0.5)
        guest.stop()
        qemu_out = work / "qemu.vmcore"
        runs.append(measure_qmp_dump("QEMU QMP dump-guest-memory", guest, qemu_out))
        kdump_out = work / "qemu.kdump"
        for qmp_format in QMP_FORMATS.values():
            runs.append(measure_qmp_dump(f"QEMU QMP dump-guest-memory, {qmp_format}", guest,
                                         kdump_out, format=qmp_format))  # fmt: skip
            kdump_out.unlink()
        t0 = time.monotonic()
        core = guest.gcore(work / "qemu.core")
        info["gcore_seconds"] = f"{time.monotonic() - t0:.2f}"
        info["core_mib"] = f"{core.stat().st_size / (1 << 20):.0f}"
        runs.append(measure(READ_CORE, ["sh", "-c", f"cat {core} > /dev/null"], None))
        ours = work / "ours.vmcore"
        dump = [*drgn_qemu_command(), "dump-guest-memory", "-q", "-f", "-s", str(binary)]
        runs.append(measure("drgn-qemu -c CORE", [*dump, "-c", str(core), str(ours)], ours))
        nonzero = ours.stat().st_blocks * 512
        ours.unlink()
        runs.append(measure(STARTUP, [*dump, "-c", str(core), "--begin", "0", "--length", "4K",
                                      str(ours)], ours))  # fmt: skip
        ours.unlink()
        runs.append(measure("drgn-qemu -p PID", [*dump, "-p", str(guest.pid), str(ours)], ours))
        ours.unlink()
        runs.append(measure("drgn-qemu -c CORE --no-sparse",
                            [*dump, "--no-sparse", "-c", str(core), str(ours)], ours))  # fmt: skip
        ours.unlink()
        for fmt in KDUMP_FORMATS:
            for n in THREADS:
                runs.append(measure(kdump_what(fmt, n),
                                    [*dump, "--format", fmt, "--threads", str(n), "-c",
                                     str(core), str(ours)], ours))  # fmt: skip
                ours.unlink()
        for fmt in KDUMP_FORMATS:
            runs.append(measure(alone_what(fmt),
                                [sys.executable, "-c", COMPRESS_ALONE, fmt, str(qemu_out)],
                                None, self_timed=True))  # fmt: skip
        if sweep:
            for size in CHUNK_SIZES:
                runs.append(measure(f"drgn-qemu -c CORE, {size} chunks",
                                    [*dump, "--chunk-size", size, "-c", str(core), str(ours)],
                                    ours))  # fmt: skip
                ours.unlink()
            # The default (--io auto) writes from a mapping of the core; the
            # alternatives it was chosen against:
            for io in IO_ALTERNATIVES:
                runs.append(measure(f"drgn-qemu -c CORE --io {io}",
                                    [*dump, "--io", io, "-c", str(core), str(ours)], ours))  # fmt: skip
                ours.unlink()
        gdb_out = work / "gdb.vmcore"
        runs.append(measure(
            "QEMU's gdb script",
            ["gdb", "-nx", "-batch", str(binary), str(core), "-ex", f"source {script}",
             "-ex", f"dump-guest-memory {gdb_out} X86_64"],
            gdb_out, repeat=1))  # fmt: skip
        gdb_out.unlink()
        cp_out = work / "cp.out"
        runs.append(measure("cp of all guest bytes",
                            ["cp", "--sparse=never", str(qemu_out), str(cp_out)], cp_out))  # fmt: skip
        cp_out.unlink()
        part = work / "nonzero.bin"
        with open(qemu_out, "rb") as src, open(part, "wb") as dst:
            done = 0
            while done < nonzero:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), nonzero - done)
                if copied <= 0:
                    break
                done += copied
        runs.append(measure("cp of the non-zero bytes",
                            ["cp", "--sparse=never", str(part), str(cp_out)], cp_out))  # fmt: skip
        info["nonzero_mib"] = f"{nonzero / (1 << 20):.0f}"
    finally:
        guest.close()
        for name_ in ("qemu.vmcore", "qemu.core", "ours.vmcore", "gdb.vmcore", "cp.out",
                      "nonzero.bin", "fill.bin"):  # fmt: skip
            (work / name_).unlink(missing_ok=True)
    return runs, info


def kdump_what(fmt: str, threads: int) -> str:
    return f"drgn-qemu -c CORE --format {fmt}, {threads} thread{'s' * (threads > 1)}"


def alone_what(fmt: str) -> str:
    return f"our {fmt} compressor alone on the guest's pages, one thread (its calls only, no I/O)"


def table(runs: List[Run]) -> str:
    ours = next(r for r in runs if r.what == "drgn-qemu -c CORE")
    lines = [
        "| what | wall s | peak RSS MiB | on disk MiB | time / ours (-c) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        rss = (
            f"{r.rss_mib:.0f}"
            if r.rss_mib is not None and not r.what.startswith("QEMU QMP")
            else "n/a"
        )
        disk = f"{r.disk_mib:.0f}" if r.disk_mib is not None else "n/a"
        lines.append(
            f"| {r.what} | {r.seconds:.2f} | {rss} | {disk} | {r.seconds / ours.seconds:.2f}x |"
        )
    return "\n".join(lines)


def targets(results: Dict[str, List[Run]]) -> List[str]:
    """The targets of the performance issue, each judged on this run's figures."""

    def t(runs: List[Run], what: str) -> float:
        return next(r.seconds for r in runs if r.what == what)

    def rss(runs: List[Run], what: str) -> float:
        return next(r.rss_mib or 0.0 for r in runs if r.what == what)

    out = []
    ours = "drgn-qemu -c CORE"
    for name, factor in (("768M-empty", 10.0), ("2G-written", 3.0)):
        if name in results:
            ratio = t(results[name], "QEMU's gdb script") / t(results[name], ours)
            out.append(f"- {factor:g}x faster than QEMU's gdb script on {name}: {ratio:.1f}x, "
                       + ("met" if ratio >= factor else "**not met**"))  # fmt: skip
    for name in ("768M-empty", "2G-written"):
        if name in results:
            ratio = t(results[name], "QEMU QMP dump-guest-memory") / t(results[name], ours)
            out.append(f"- faster than QEMU's QMP dump on {name}: {ratio:.2f}x, "
                       + ("met" if ratio > 1 else "**not met**"))  # fmt: skip
    if "2G-written" in results:
        runs = results["2G-written"]
        ratio = t(runs, ours) / t(runs, "cp of the non-zero bytes")
        out.append(f"- within 1.2x of cp of the non-zero bytes on 2G-written: {ratio:.2f}x, "
                   + ("met" if ratio <= 1.2 else "**not met**"))  # fmt: skip
        copy = (t(runs, ours) - t(runs, STARTUP)) / t(runs, "cp of the non-zero bytes")
        out.append(f"- the same without our start-up (our time less the one-page dump's): "
                   f"{copy:.2f}x cp")  # fmt: skip
    for name, runs in results.items():
        out.append(f"- why, where not met: start-up (Python and its imports, drgn indexing "
                   f"QEMU's DWARF, the search of guest RAM for VMCOREINFO: all before any guest byte "
                   f"is copied) took {t(runs, STARTUP):.2f} s of "
                   f"our {t(runs, ours):.2f} s on {name}")  # fmt: skip
    if "2G-written" in results:
        runs = results["2G-written"]
        ratio = t(runs, "drgn-qemu -p PID") / t(runs, ours)
        out.append(f"- -p within 1.2x of -c on 2G-written: {ratio:.2f}x, "
                   + ("met" if ratio <= 1.2 else "**not met**"))  # fmt: skip
    for name, runs in results.items():
        out += format_verdicts(name, runs)
    if "8G-kvm-untouched" in results:
        peak = rss(results["8G-kvm-untouched"], ours)
        out.append(f"- peak RSS <= 150 MB on the 8 GiB guest: {peak:.0f} MiB, "
                   + ("met" if peak * 1.048576 <= 150 else "**not met**"))  # fmt: skip
    return out


def format_verdicts(name: str, runs: List[Run]) -> List[str]:
    """
    Per format on one guest: ours (at its fastest thread count) against QMP's
    same format; where ours is slower, whether start-up alone (the one-page
    dump, measured in this run) explains it. Then, per kdump format, the
    thread count measured fastest.
    """
    seconds = {r.what: r.seconds for r in runs}
    startup = seconds[STARTUP]
    rows: List[Tuple[str, float, Optional[float], str]] = [
        ("ELF", seconds["drgn-qemu -c CORE"], seconds["QEMU QMP dump-guest-memory"], "")
    ]
    for fmt in KDUMP_FORMATS:
        best = min(THREADS, key=lambda n: seconds[kdump_what(fmt, n)])
        per_thread = ", ".join(f"{n}: {seconds[kdump_what(fmt, n)]:.2f} s" for n in THREADS)
        qmp = QMP_FORMATS.get(fmt)
        theirs = seconds[f"QEMU QMP dump-guest-memory, {qmp}"] if qmp else None
        rows.append((fmt, seconds[kdump_what(fmt, best)], theirs,
                     f" (threads {per_thread}; fastest {best})"))  # fmt: skip
    out = []
    for fmt, mine, theirs, detail in rows:
        if theirs is None:
            out.append(f"- {fmt} on {name}: ours {mine:.2f} s{detail}; QMP has no such format")
            continue
        line = f"- {fmt} on {name}: ours {mine:.2f} s, QMP {theirs:.2f} s{detail}: "
        if mine <= theirs:
            out.append(line + f"{theirs / mine:.2f}x, met")
        elif seconds[READ_CORE] >= theirs:
            out.append(line + f"cannot be met from this core: reading it alone takes "
                       f"{seconds[READ_CORE]:.2f} s, more than QMP's whole dump, which reads "
                       f"RAM in place (untouched pages are the one shared zero page); our "
                       f"start-up is {startup:.2f} s of it")  # fmt: skip
        elif startup >= theirs:
            out.append(line + f"cannot be met while our start-up ({startup:.2f} s, the one-page "
                       f"dump: Python, drgn, QEMU's debug info; see Start-up) is longer than "
                       f"QMP's whole dump, done by a QEMU already running; without it ours "
                       f"takes {mine - startup:.2f} s")  # fmt: skip
        elif mine - startup <= theirs:
            out.append(line + f"**not met**: start-up ({startup:.2f} s, the one-page dump) is "
                       f"the difference; without it ours takes {mine - startup:.2f} s")  # fmt: skip
        else:
            alone = seconds.get(alone_what(fmt))
            why = ""
            if alone is not None:
                why = (f"; our compressor alone, on one CPU, takes {alone:.2f} s (the same "
                       f"library QEMU calls, a page at a time), and reading the core "
                       f"{seconds[READ_CORE]:.2f} s, which QEMU does not (it compresses its RAM in "
                       f"place); more threads are slower (the GIL), and worker processes "
                       f"were too (see writer.py)")  # fmt: skip
            out.append(line + f"**not met**, even without start-up ({mine - startup:.2f} s)"
                       + why)  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="smallest guest only; print, do not write RESULTS.md"
    )
    parser.add_argument("--guests", default=",".join(GUESTS), help="comma-separated: %(default)s")
    parser.add_argument("--no-write", action="store_true", help="print only, as --smoke does")
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "drgn-qemu-bench"
    )
    args = parser.parse_args()
    names = ["768M-empty"] if args.smoke else args.guests.split(",")
    # Byte-compiled, as an installed package is: with PYTHONDONTWRITEBYTECODE
    # (CI machines) an edited module would be compiled again in every run.
    package = Path(__file__).resolve().parent.parent / "drgn_qemu"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    binary = qemu_binary("10.0")
    script = qemu_source_dir(binary) / "scripts" / "dump-guest-memory.py"
    report = [
        "# Dump benchmark",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
        f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.0f} GiB, "
        f"Linux {platform.release()}, QEMU {binary.parent.joinpath('VERSION').read_text().strip()} "
        f"(debug build), drgn {__import__('drgn').__version__}.",
        "Regenerate with `.venv/bin/python benchmarks/bench_dump.py` (after `scripts/test.sh` or "
        "`scripts/bootstrap.sh`). Inputs are in the page cache (warm), as right after a crash; "
        f"each time is the median of {REPEAT} runs, each after a `sync` (QEMU's gdb script: one "
        "run); peak RSS is GNU time's for the command (n/a for QEMU's QMP dump, done inside QEMU).",
        "",
    ]
    intro = len(report)
    results: Dict[str, List[Run]] = {}
    for name in names:
        print(f"== {name}", flush=True)
        runs, info = bench_guest(name, GUESTS[name], args.workdir / name, binary, script,
                                 sweep=name == "2G-written")  # fmt: skip
        results[name] = runs
        text = table(runs)
        print(text, flush=True)
        report += [
            f"## {name}",
            "",
            f"{info['memory']} guest, {info['accel'].upper()}; gcore took {info['gcore_seconds']} s "
            f"and wrote a {info['core_mib']} MiB core; {info['nonzero_mib']} MiB of guest memory are not zero.",
            "",
            text,
            "",
            "Commands:",
            "",
            *[f"- {r.what}: `{r.command}`" for r in runs if r.command],
            "",
        ]
    judged = targets(results)
    print("\n".join(judged))
    report[intro:intro] = ["## Targets", "", *judged, ""]
    if not args.smoke and not args.no_write:
        from results import write_head

        write_head("\n".join(report))
        print(f"wrote {REPO / 'benchmarks' / 'RESULTS.md'}")
    shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
