"""
A real Linux guest (Debian's 6.1 and 6.12 cloud kernels, KASLR on, TCG)
under our debug QEMU: QEMU's own QMP dump is the reference, and drgn-qemu's
vmcore from a gcore of QEMU must open in drgn (release, the test's named
task) and crash (sys, ps) exactly as QEMU's does; with -device vmcoreinfo the
two files are identical but for e_ehsize, and without it ours still carries
the VMCOREINFO, found in guest RAM, that QEMU's lacks.
"""

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import drgn
import pytest
from harness import drgn_qemu_command, qemu_binary, qemu_source_dir
from kdump_reader import (
    UTSNAME,
    assert_pages_equal_elf,
    assert_same_kdump_except,
    open_kdump,
    unflatten,
)
from linux_guest import CANARY, Kernel, boot_linux, crash_output, drgn_kernel_facts, fetch_kernel
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, assert_same_memory, elf_header, loads, notes


@dataclass
class LinuxDump:
    series: str
    kernel: Kernel
    device: bool
    binary: Path
    core: Path
    ours: Path
    theirs: Path
    #: QEMU's own kdump-raw-zlib (QEMU >= 8.2), else None.
    theirs_kdump: Optional[Path]
    #: QEMU's own kdump-zlib: makedumpfile's flattened stream.
    theirs_flat: Path
    #: HMP 'info registers -a' of the stopped guest.
    registers: str
    stdout: str
    stderr: str
    #: crash's output on our ELF vmcore, once read (:func:`crash_of_ours`).
    crash_ours: Optional[str] = None


def cases() -> List[Tuple[str, str, bool]]:
    """(QEMU series, kernel series, -device vmcoreinfo)."""
    return [
        ("10.0", "6.1", True),
        ("10.0", "6.1", False),
        ("10.0", "6.12", True),
        ("10.0", "6.12", False),
        ("7.2", "6.1", True),
        ("7.2", "6.1", False),
    ]


@pytest.fixture(
    scope="module",
    params=cases(),
    ids=lambda c: f"qemu{c[0]}-linux{c[1]}-{'device' if c[2] else 'nodevice'}",
)
def linux_dump(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LinuxDump]:
    series, kernel_series, device = request.param
    binary = qemu_binary(series)
    kernel = fetch_kernel(kernel_series)
    work = tmp_path_factory.mktemp("linux")
    guest = boot_linux(binary, work, kernel, device)
    try:
        guest.stop()
        registers = guest.hmp("info registers -a").replace("\r\n", "\n")
        theirs = guest.dump(work / "qemu.vmcore")
        theirs_kdump = None
        if series != "7.2":  # QEMU 8.2 brought kdump-raw-*
            t0 = time.monotonic()
            theirs_kdump = guest.dump(work / "qemu.kdump", format="kdump-raw-zlib")
            print(f"\nQEMU's kdump-raw-zlib: {time.monotonic() - t0:.2f} s")
        theirs_flat = guest.dump(work / "qemu.flat", format="kdump-zlib")
        core = guest.gcore(work / "qemu.core")
    finally:
        guest.close()
    ours = work / "ours.vmcore"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(core), "-s", str(binary),
             str(ours)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    yield LinuxDump(series, kernel, device, binary, core, ours, theirs, theirs_kdump, theirs_flat,
                    registers, r.stdout, r.stderr)  # fmt: skip
    for p in work.iterdir():
        p.unlink()


def test_against_qemu_dump(linux_dump: LinuxDump) -> None:
    d = linux_dump
    assert elf_header(d.ours)["e_machine"] == "EM_X86_64"
    ours, theirs = notes(d.ours), notes(d.theirs)
    if d.device:
        assert ours[-1][0] == "VMCOREINFO"
        assert_same_file_but_ehsize(d.ours, d.theirs)
        assert "VMCOREINFO: from vmcoreinfo device" in d.stdout
    else:
        # QEMU writes no VMCOREINFO without the device; we find it in RAM.
        assert [n for n, _, _ in theirs] == ["CORE", "QEMU"]
        assert ours[:-1] == theirs
        name, _, text = ours[-1]
        assert name == "VMCOREINFO"
        assert text.startswith(f"OSRELEASE={d.kernel.release}\n".encode())
        assert re.search(rb"\nKERNELOFFSET=[0-9a-f]+\n", text)
        assert "VMCOREINFO: from guest RAM at 0x" in d.stdout
        assert_same_memory(d.ours, d.theirs)
    assert f"OSRELEASE={d.kernel.release} KERNELOFFSET=" in d.stdout
    assert "long mode" in d.stdout and "not in long mode" not in d.stdout


def test_drgn_opens_it(linux_dump: LinuxDump) -> None:
    d = linux_dump
    facts = drgn_kernel_facts(d.ours, d.kernel.vmlinux)
    print(f"\ndrgn on our vmcore: release {facts['release']}, {len(facts['comms'])} tasks")  # type: ignore[arg-type]
    assert facts["release"] == d.kernel.release
    assert CANARY in facts["comms"]  # type: ignore[operator]
    if d.device:
        # QEMU's own dump has VMCOREINFO only with the device.
        assert drgn_kernel_facts(d.theirs, d.kernel.vmlinux) == facts


#: The cases crash can read: Debian's crash 8.0.2 cannot load 6.12 kernels
#: at all (QEMU's own dump of the guest included), so for 6.12 drgn is the
#: oracle (test_drgn_opens_it, test_kdump_drgn_reads_every_page).
CRASH_CASES = [c for c in cases() if c[1] == "6.1"]


def _ids(c: Tuple[str, str, bool]) -> str:
    return f"qemu{c[0]}-linux{c[1]}-{'device' if c[2] else 'nodevice'}"


def crash_of_ours(d: LinuxDump) -> str:
    """crash's output on our ELF vmcore of the guest, run once per guest (crash takes 10 s)."""
    if d.crash_ours is None:
        d.crash_ours = crash_output(d.ours, d.kernel.vmlinux)
    return d.crash_ours


@pytest.mark.parametrize("linux_dump", CRASH_CASES, indirect=True, ids=_ids)
def test_crash_opens_it(linux_dump: LinuxDump) -> None:
    d = linux_dump
    ours = crash_of_ours(d).replace(str(d.ours), "VMCORE")
    theirs = crash_output(d.theirs, d.kernel.vmlinux).replace(str(d.theirs), "VMCORE")
    assert f"RELEASE: {d.kernel.release}" in ours
    assert re.search(r"^\s+PID\s+PPID\s+CPU\s+TASK", ours, re.M)
    assert re.search(r"^\s+MEMORY: 1 GB$", ours, re.M), ours
    # Only the DUMPFILE line may differ.
    strip = re.compile(r"^\s*DUMPFILE: .*$", re.M)
    assert strip.sub("", ours) == strip.sub("", theirs)


KDUMP_FORMATS = ("kdump-zlib", "kdump-zstd", "kdump-snappy", "kdump-lzo")


def format_cases(guests: List[Tuple[str, str, bool]]) -> List[Tuple[Tuple[str, str, bool], str]]:
    """
    (guest, kdump format) pairs: every format on the first guest, zlib on the
    others. The pages' compression is our writer's whatever the QEMU or the
    kernel, so that each format on every guest (four readers' runs of a
    GiB each) would show nothing more; zlib on each shows the rest.
    """
    return [
        (g, fmt) for g in guests for fmt in KDUMP_FORMATS if fmt == "kdump-zlib" or g == guests[0]
    ]


def _format_ids(case: Tuple[Tuple[str, str, bool], str]) -> str:
    return f"{case[1]}-{_ids(case[0])}"


def our_kdump(d: LinuxDump, fmt: str, tmp_path: Path) -> Path:
    out = tmp_path / f"ours.{fmt}"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(d.core), "-s",
             str(d.binary), "--format", fmt, str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def drgn_reads_as_elf(kdump: Path, elf: Path) -> int:
    """Read every byte of the ELF vmcore's segments through drgn from *kdump*."""
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(str(kdump))
    total = 0
    with open(elf, "rb") as f:
        for s in loads(elf):
            for pos in range(0, s.filesz, 4 << 20):
                n = min(4 << 20, s.filesz - pos)
                f.seek(s.offset + pos)
                want = f.read(n)
                assert prog.read(s.paddr + pos, n, True) == want, f"at {s.paddr + pos:#x}"
                total += n
    return total


@pytest.mark.parametrize(("linux_dump", "fmt"), format_cases(cases()), indirect=["linux_dump"],
                         ids=list(map(_format_ids, format_cases(cases()))))  # fmt: skip
def test_kdump_drgn_reads_every_page(linux_dump: LinuxDump, fmt: str, tmp_path: Path) -> None:
    d = linux_dump
    out = our_kdump(d, fmt, tmp_path)
    assert drgn_kernel_facts(out, d.kernel.vmlinux) == drgn_kernel_facts(d.ours, d.kernel.vmlinux)
    assert drgn_reads_as_elf(out, d.ours) == sum(s.filesz for s in loads(d.ours))
    k = open_kdump(out)
    assert k.vmcoreinfo.startswith(f"OSRELEASE={d.kernel.release}\n".encode())
    print(f"\n{fmt}: {out.stat().st_size / (1 << 20):.1f} MiB; ELF "
          f"{d.ours.stat().st_blocks * 512 / (1 << 20):.1f} MiB on disk")  # fmt: skip


@pytest.mark.parametrize(("linux_dump", "fmt"), format_cases(CRASH_CASES), indirect=["linux_dump"],
                         ids=list(map(_format_ids, format_cases(CRASH_CASES))))  # fmt: skip
def test_kdump_crash_opens_it(linux_dump: LinuxDump, fmt: str, tmp_path: Path) -> None:
    d = linux_dump
    out = our_kdump(d, fmt, tmp_path)
    text = crash_output(out, d.kernel.vmlinux)
    elf_text = crash_of_ours(d)
    assert f"RELEASE: {d.kernel.release}" in text, text
    assert re.search(r"^\s+PID\s+PPID\s+CPU\s+TASK", text, re.M)
    assert re.search(r"^\s+MEMORY: 1 GB$", text, re.M), text
    # crash sees the same system in both files (DUMPFILE names the file
    # and says [PARTIAL DUMP] for a kdump file).
    strip = re.compile(r"^\s*DUMPFILE: .*$", re.M)
    assert strip.sub("", text) == strip.sub("", elf_text)


def test_kdump_against_qemu(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    Ours against QEMU's kdump-zlib of the same guest: its flattened file
    (every series) unflattened as makedumpfile -R does, and its
    kdump-raw-zlib (QEMU 8.2 and later).
    """
    d = linux_dump
    out = our_kdump(d, "kdump-zlib", tmp_path)
    theirs = [unflatten(d.theirs_flat, tmp_path / "theirs-flat.kdump")]
    if d.theirs_kdump is not None:
        theirs.append(d.theirs_kdump)
    else:
        assert d.series == "7.2"  # QEMU 8.2 brought kdump-raw-*
    for their_file in theirs:
        _against_qemus_kdump(d, out, their_file)


def _against_qemus_kdump(d: LinuxDump, out: Path, their_file: Path) -> None:
    sizes = f"ours {out.stat().st_size}, QEMU's {their_file.stat().st_size} bytes"
    print(f"\nkdump-zlib: {sizes}")
    ours_k, theirs_k = open_kdump(out), open_kdump(their_file)
    # QEMU leaves utsname empty but for machine ("Unknown", see
    # assert_same_kdump_but_machine); we copy the kernel's, as makedumpfile
    # does: libkdumpfile (drgn) learns the architecture from it.
    uts = ours_k.header["utsname"]
    assert isinstance(uts, bytes)
    assert uts.startswith(b"Linux\0") and d.kernel.release.encode() in uts
    if d.device:
        # QEMU reads VMCOREINFO's NUMBER(phys_base), which Linux writes in
        # decimal, as hex: a different phys_base in the sub-header.
        text = ours_k.vmcoreinfo.decode()
        phys_base = int(re.search(r"^NUMBER\(phys_base\)=(-?\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
        assert ours_k.sub["phys_base"] == phys_base & (2**64 - 1)
        phys_base_field = slice(4096, 4104)
        assert_same_kdump_except(out, their_file, UTSNAME, phys_base_field)
    else:
        # Without the device QEMU has no VMCOREINFO; the pages are the same.
        assert theirs_k.sub["size_vmcoreinfo"] == 0 and ours_k.sub["size_vmcoreinfo"] > 0
        assert assert_pages_equal_elf(ours_k, d.ours) == assert_pages_equal_elf(theirs_k, d.theirs)


def test_makedumpfile_filters_our_vmcore(linux_dump: LinuxDump, tmp_path: Path) -> None:
    d = linux_dump
    # makedumpfile reads program headers right after the ELF header, where
    # Linux's /proc/vmcore has them, not at e_phoff: QEMU's layout (section
    # headers first) defeats it, QEMU's own file and our default alike.
    r = subprocess.run(["makedumpfile", "-d", "31", str(d.theirs), str(tmp_path / "x")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "Can't get the number of PT_LOAD" in r.stderr
    kernel_layout = tmp_path / "kernel-layout.vmcore"
    r2 = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(d.core), "-s",
              str(d.binary), "--elf-layout", "kernel", str(kernel_layout)])  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    # The same notes and memory, other headers.
    assert notes(kernel_layout) == notes(d.ours)
    assert_same_memory(kernel_layout, d.ours)
    header = elf_header(kernel_layout)
    assert header["e_phoff"] == 64 and header["e_shnum"] == 0
    out = tmp_path / "filtered.kdump"
    t0 = time.monotonic()
    r = subprocess.run(["makedumpfile", "-d", "31", "-c", str(kernel_layout), str(out)],
                       capture_output=True, text=True)  # fmt: skip
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    # Every page makedumpfile kept is the guest's page, whatever it left out.
    k = open_kdump(out, filtered=True)
    counts = assert_pages_equal_elf(k, d.ours, every=False)
    assert 0 < counts["pages"] < sum(s.filesz for s in loads(d.ours)) // 4096
    assert k.vmcoreinfo.startswith(f"OSRELEASE={d.kernel.release}\n".encode())
    if d.kernel.release.startswith("6.1.0-"):
        facts = drgn_kernel_facts(out, d.kernel.vmlinux)
        assert facts["release"] == d.kernel.release and CANARY in facts["comms"]  # type: ignore[operator]
    else:
        # Debian's makedumpfile 1.7.2 (2022) predates 6.12: it warns, and
        # filters out pages it should keep, so drgn cannot walk the tasks.
        assert "The kernel version is not supported" in r.stdout + r.stderr
        prog = drgn.Program()
        prog.set_core_dump(str(out))
        prog.load_debug_info([str(d.kernel.vmlinux)])
        assert prog["init_uts_ns"].name.release.string_().decode() == d.kernel.release
    print(f"\nmakedumpfile -d 31 -c: {out.stat().st_size / (1 << 20):.1f} MiB in {seconds:.2f} s")


def test_registers_equal_hmp(linux_dump: LinuxDump) -> None:
    """The 64-bit register dump of a vCPU in long mode, as HMP 'info registers'."""
    d = linux_dump
    code = "from drgn.commands import run_command\nrun_command(prog, 'qemu registers -a')"
    r = run([str(Path(sys.executable).parent / "drgn"), "-q", "-c", str(d.core), "-s",
             str(d.binary), "-e", code])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == d.registers
    # Long mode (EFER.LMA, a 64-bit CS), wherever the vCPU stopped: in the
    # kernel (CPL=0, RIP in its top half) or in a user task (CPL=3, RIP in
    # the bottom half), as a guest stopped at any moment can be.
    efer = int(re.search(r"^EFER=([0-9a-f]+)$", r.stdout, re.M).group(1), 16)  # type: ignore[union-attr]
    assert efer & 0x400 and "CS64 [" in r.stdout
    rip = int(re.search(r"^RIP=([0-9a-f]+) ", r.stdout, re.M).group(1), 16)  # type: ignore[union-attr]
    cpl = int(re.search(r" CPL=(\d) ", r.stdout).group(1))  # type: ignore[union-attr]
    assert (cpl, rip >> 63) in ((0, 1), (3, 0)), (cpl, hex(rip))


@pytest.mark.parametrize("linux_dump", [("10.0", "6.1", True)], indirect=True, ids=_ids)
def test_crash_partial_dump_mark_is_qemus(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    crash's DUMPFILE line says [PARTIAL DUMP] of our kdump files, and of
    QEMU's own of the same guest too: the header stays QEMU's (dump_level 1
    in the sub-header, as QEMU writes it). Only where crash can open QEMU's
    file: its kdump-raw-zlib (QEMU 8.2 and later) with VMCOREINFO (the
    device), of a 6.1 kernel (crash 8.0.2 cannot read 6.12).
    """
    d = linux_dump
    assert d.theirs_kdump is not None
    ours = crash_output(our_kdump(d, "kdump-zlib", tmp_path), d.kernel.vmlinux)
    theirs = crash_output(d.theirs_kdump, d.kernel.vmlinux)
    line = re.compile(r"^\s*DUMPFILE: .*$", re.M)
    ours_line, theirs_line = line.search(ours), line.search(theirs)
    assert ours_line and theirs_line, (ours, theirs)
    assert ours_line.group().endswith("[PARTIAL DUMP]")
    assert theirs_line.group().endswith("[PARTIAL DUMP]")


def test_add_vmcoreinfo_to_qemus_dump(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    drgn-qemu add-vmcoreinfo on QEMU's own ELF dump: without -device
    vmcoreinfo drgn cannot open it; with the note added drgn and crash do,
    and every guest byte is QEMU's. A dump with VMCOREINFO is left alone.
    """
    d = linux_dump
    fixed = tmp_path / "fixed.vmcore"
    r = run([*drgn_qemu_command(), "add-vmcoreinfo", str(d.theirs), "-o", str(fixed)])
    assert r.returncode == 0, r.stderr
    if d.device:
        assert r.stdout.strip() == f"{d.theirs} has a VMCOREINFO note already; left as it is"
        assert not fixed.exists()
        return
    with pytest.raises(ValueError, match="unrecognized QEMU memory dump"):
        drgn_kernel_facts(d.theirs, d.kernel.vmlinux)
    assert "VMCOREINFO from guest RAM at 0x" in r.stdout
    assert f"OSRELEASE={d.kernel.release} " in r.stdout
    # QEMU's notes, then the kernel's VMCOREINFO, as in our own dump.
    assert notes(fixed) == notes(d.ours)
    assert_same_memory(fixed, d.theirs)
    facts = drgn_kernel_facts(fixed, d.kernel.vmlinux)
    assert facts["release"] == d.kernel.release and CANARY in facts["comms"]  # type: ignore[operator]
    if d.kernel.release.startswith("6.1.0-"):
        text = crash_output(fixed, d.kernel.vmlinux)
        assert f"RELEASE: {d.kernel.release}" in text
        assert re.search(r"^\s+PID\s+PPID\s+CPU\s+TASK", text, re.M)
    # Once is enough.
    r = run([*drgn_qemu_command(), "add-vmcoreinfo", str(fixed)])
    assert r.returncode == 0 and "has a VMCOREINFO note already" in r.stdout
    fixed.unlink()
    # QEMU's gdb script's vmcore (program headers first), in place.
    script = qemu_source_dir(d.binary) / "scripts" / "dump-guest-memory.py"
    gdb_out = tmp_path / "gdb.vmcore"
    subprocess.run(["gdb", "-nx", "-batch", str(d.binary), str(d.core), "-ex", f"source {script}",
                    "-ex", f"dump-guest-memory {gdb_out} X86_64"], check=True,
                   capture_output=True)  # fmt: skip
    # drgn takes it for a process's core (no VMCOREINFO to say it is a kernel's).
    with pytest.raises(drgn.BadDataError, match="NT_AUXV"):
        drgn_kernel_facts(gdb_out, d.kernel.vmlinux)
    r = run([*drgn_qemu_command(), "add-vmcoreinfo", str(gdb_out)])
    assert r.returncode == 0, r.stderr
    assert [n for n, _, _ in notes(gdb_out)][-1] == "VMCOREINFO"
    assert_same_memory(gdb_out, d.theirs)
    assert drgn_kernel_facts(gdb_out, d.kernel.vmlinux) == facts


def test_add_vmcoreinfo_to_qemus_kdump(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    add-vmcoreinfo on QEMU's own kdump files, plain (kdump-raw-zlib) and
    flattened (kdump-zlib): QEMU writes no kernel utsname in the header (7.2
    the machine only, 8 and later "Unknown"), and drgn (libkdumpfile) cannot
    open them even with the device's VMCOREINFO; after, it does, and every
    page is QEMU's.
    """
    d = linux_dump
    files = {"kdump-zlib": d.theirs_flat}
    opened = ""
    if d.theirs_kdump is not None:
        files["kdump-raw-zlib"] = d.theirs_kdump
    else:
        assert d.series == "7.2"  # QEMU 8.2 brought kdump-raw-*
    for kind, theirs in files.items():
        if kind == "kdump-zlib":
            plain = unflatten(theirs, tmp_path / "theirs.kdump")
        else:
            plain = theirs
        try:
            drgn_kernel_facts(plain, d.kernel.vmlinux)
        except Exception as e:
            opened = f"{type(e).__name__}: {e}"
        else:
            opened = ""
        fixed = tmp_path / f"fixed-{kind}"
        r = run([*drgn_qemu_command(), "add-vmcoreinfo", str(theirs), "-o", str(fixed)])
        assert r.returncode == 0, r.stderr
        # drgn cannot open QEMU's kdump files, with VMCOREINFO (the
        # device) or without.
        assert "KDUMP_ATTR_ARCH_NAME" in opened or "vmcoreinfo" in opened, opened
        assert f"OSRELEASE={d.kernel.release} " in r.stdout
        facts = drgn_kernel_facts(fixed, d.kernel.vmlinux)
        assert facts["release"] == d.kernel.release and CANARY in facts["comms"]  # type: ignore[operator]
        k = open_kdump(fixed)
        assert k.machine == "x86_64"
        assert k.vmcoreinfo.startswith(f"OSRELEASE={d.kernel.release}\n".encode())
        counts = assert_pages_equal_elf(k, d.theirs)
        assert counts["pages"] == sum(s.filesz for s in loads(d.theirs)) // 4096


@pytest.mark.parametrize(
    "linux_dump", [("10.0", "6.1", True)], indirect=True, ids=["qemu10.0-linux6.1-device"]
)
def test_readme_transcript(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    The README's Linux-guest transcript (6.1 with -device vmcoreinfo, QEMU
    10.0), rerun on this guest: drgn-qemu's output and drgn's, compared but
    for addresses, times, KASLR and counts that vary from boot to boot;
    crash's header lines that do not.
    """
    from test_readme import README, normalized

    d = linux_dump
    body = README.split("\n### A real Linux guest, into drgn and crash\n", 1)[1]
    runs = _readme_runs(body.split("```\n", 2)[1])
    assert [c.split()[0] for c, _ in runs] == ["drgn-qemu", "drgn", "printf"]
    readme_links(tmp_path, d.core, d.binary, d.kernel.vmlinux)
    for command, expected in runs[:2]:
        result = _run_readme_command(command, tmp_path)
        assert result is not None
        status, lines = result
        assert status == 0, lines
        assert _vary(lines) == _vary(expected)
    assert lines[0] == d.kernel.release
    # crash: the lines of its header that are the guest's, not the moment's.
    text = crash_output(tmp_path / "guest.vmcore", d.kernel.vmlinux)
    for key in ("CPUS", "RELEASE", "MEMORY", "PANIC"):
        (want,) = [line for line in runs[2][1] if line.strip().startswith(key + ":")]
        assert normalized([want.strip()])[0] in normalized(
            [line.strip() for line in text.splitlines()]
        ), text
    assert f"RELEASE: {d.kernel.release}" in text


@pytest.mark.parametrize(
    "linux_dump", [("10.0", "6.1", True)], indirect=True, ids=["qemu10.0-linux6.1-device"]
)
def test_readme_repl_transcript(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    The README's %qemu session on the Linux guest, typed into drgn's REPL on
    this guest's core: the same lines, numbers aside (registers, addresses,
    thread IDs and timer deadlines are the moment's); of 'timers', which
    timers are armed is too, so only its first line is compared; of
    'registers', the register names of each line (flags, segment types and
    descriptors are the moment's: a guest stopped in user mode has other
    selectors and RFL bits than the README's, stopped in the idle loop).
    """
    from test_readme import repl_session

    marker = "The same on the core of the Linux 6.1 guest above"
    command = "$ drgn -q -c qemu.core -s qemu-system-x86_64"
    got, session = repl_session(marker, command, linux_dump.binary, linux_dump.core, tmp_path)

    def shape(lines: List[str]) -> List[str]:
        out, command = [], ""
        for line in lines:
            if line.startswith(">>> "):
                command = line
                out.append(line)
                continue
            if command == ">>> %qemu timers" and not line.startswith("Processing Realtime"):
                continue
            if command == ">>> %qemu registers" and "=" in line:
                out.append(" ".join(re.findall(r"([A-Z][A-Z0-9]*) *=", line)))
                continue
            line = re.sub(r"\.\./src/qemu-[^/]+/", "SRC/", line)
            line = re.sub(r"0x[0-9a-f]+|\b[0-9a-f]*[0-9][0-9a-f]*\b", "N", line)
            out.append(line)
        return out

    assert shape(got.splitlines()) == shape(session)


def _readme_runs(block: str) -> List[Tuple[str, List[str]]]:
    """Each ``$`` command of a README block (a quoted -e script may span lines), and its output."""
    import shlex

    def open_quote(command: str) -> bool:
        try:
            shlex.split(command, comments=True)
        except ValueError:  # "No closing quotation": a script goes on
            return True
        return False

    runs: List[Tuple[str, List[str]]] = []
    for line in block.rstrip("\n").splitlines():
        if line.startswith("$ "):
            runs.append((line[2:], []))
        elif runs and open_quote(runs[-1][0]):  # inside a quoted -e script
            runs[-1] = (runs[-1][0] + "\n" + line, [])
        else:
            runs[-1][1].append(line)
    return runs


def _run_readme_command(command: str, cwd: Path) -> Optional[Tuple[int, List[str]]]:
    """Run a README command in *cwd*: (exit status, what it printed), or None for ls and crash."""
    import shlex

    tools = {"drgn": str(Path(sys.executable).parent / "drgn"),
             "drgn-qemu": drgn_qemu_command()[0], "makedumpfile": "makedumpfile"}  # fmt: skip
    words, _, grep = command.partition(" | grep ")
    args = shlex.split(words, comments=True)
    if args[0] not in tools:  # ls: sizes and dates of the moment; crash: checked apart
        return None
    r = subprocess.run([tools[args[0]], *args[1:]], cwd=cwd, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    # makedumpfile's progress lines: a terminal overwrites them.
    lines = [line for line in r.stdout.replace("\r", "\n").splitlines()
             if grep.strip() in line and not re.search(r"\[\s*\d+\.\d %\]", line)]  # fmt: skip
    return r.returncode, lines


def readme_links(cwd: Path, core: Path, binary: Path, vmlinux: Path) -> None:
    """The files the README's transcripts name, linked in *cwd*."""
    for name, target in (("qemu.core", core), ("qemu-system-x86_64", binary),
                         ("vmlinux", vmlinux)):  # fmt: skip
        (cwd / name).symlink_to(target)


def _run_readme_block(block: str, cwd: Path) -> List[Tuple[List[str], List[str]]]:
    """Run each command of a README block in *cwd*: (what it printed, what the README says)."""
    out = []
    for command, expected in _readme_runs(block):
        result = _run_readme_command(command, cwd)
        if result is not None:
            out.append((result[1], expected))
    return out


def _vary(lines: List[str]) -> List[str]:
    """What varies from boot to boot and run to run, replaced."""
    from test_readme import normalized

    out = []
    for line in normalized(lines):
        line = re.sub(r"guest RAM at 0x[0-9a-f]+", "guest RAM at ADDR", line)
        line = re.sub(r"KERNELOFFSET=[0-9a-f]+", "KERNELOFFSET=K", line)
        line = re.sub(r"copied in \d+\.\d+ s", "copied in T s", line)
        line = re.sub(r"cr3=0x[0-9a-f]+", "cr3=CR3", line)
        line = re.sub(r"guest note at 0x[0-9a-f]+", "guest note at ADDR", line)
        line = re.sub(r"dump \(\d+\.\d MiB\)", "dump (S MiB)", line)
        line = re.sub(r"^\d+ tasks$", "N tasks", line)
        line = re.sub(r"^\d+ drgn-canary$", "PID drgn-canary", line)
        out.append(line)
    return out


@pytest.mark.parametrize(
    "linux_dump", [("10.0", "6.1", False)], indirect=True, ids=["qemu10.0-linux6.1-nodevice"]
)
def test_readme_transcripts_without_device(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """
    The README's transcripts of a guest run without -device vmcoreinfo: our
    dump against QEMU's in drgn, and add-vmcoreinfo repairing QEMU's dump
    (a copy of it), run as written.
    """
    from test_readme import README

    d = linux_dump
    first = README.split("Without `-device vmcoreinfo` (same kernel, same canary):\n", 1)[1]
    second = README.split("Debian 6.1 guest run without the device:\n", 1)[1]
    for n, text in enumerate((first, second)):
        cwd = tmp_path / str(n)
        cwd.mkdir()
        readme_links(cwd, d.core, d.binary, d.kernel.vmlinux)
        (cwd / "qemu.vmcore").symlink_to(d.theirs)
        if n == 1:  # add-vmcoreinfo repairs QEMU's own dump, in place
            shutil.copyfile(d.theirs, cwd / "guest.vmcore")
        for got, expected in _run_readme_block(text.split("```\n", 2)[1], cwd):
            assert _vary(got) == _vary(expected)


@pytest.mark.parametrize(
    "linux_dump", [("10.0", "6.1", True)], indirect=True, ids=["qemu10.0-linux6.1-device"]
)
def test_readme_kdump_transcript(linux_dump: LinuxDump, tmp_path: Path) -> None:
    """The README's kdump and makedumpfile transcript, run as written (but ls)."""
    from test_readme import README

    d = linux_dump
    text = README.split("layout it needs. The same 6.1 guest as above:\n", 1)[1]
    readme_links(tmp_path, d.core, d.binary, d.kernel.vmlinux)
    runs = _run_readme_block(text.split("```\n", 2)[1], tmp_path)
    assert len(runs) == 4
    for got, expected in runs:
        assert _vary(got) == _vary(expected)
    assert (tmp_path / "guest.d31").stat().st_size > 0
