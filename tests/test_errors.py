"""
Every user mistake and environment failure gives a one-line error, a
non-zero exit, no traceback, and leaves no file behind.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
from fixture_programs import CoredProgram, GetCore, run_and_core
from harness import QemuGuest, drgn_qemu_command, qemu_binary
from test_synthetic import dump_fixture as dump
from test_synthetic import pattern, run_cli
from vmcore import assert_same_memory, loads, notes, read_phys


def assert_error(r: "subprocess.CompletedProcess[str]", *fragments: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    *warnings, last = r.stderr.strip().splitlines()
    assert all(line.startswith("warning: ") for line in warnings), r.stderr
    assert last.startswith("drgn-qemu: error: "), r.stderr
    for fragment in fragments:
        assert fragment in last


def test_core_missing(tmp_path: Path) -> None:
    r = run_cli("dump-guest-memory", "-c", str(tmp_path / "nope.core"), str(tmp_path / "out"))
    assert_error(r, "nope.core does not exist")
    assert list(tmp_path.iterdir()) == []


def test_not_elf(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    r = run_cli("dump-guest-memory", "-c", str(tmp_path / "notes.txt"), str(tmp_path / "out"))
    assert_error(r, "notes.txt is not a core file: not an ELF file")


def test_not_a_core(binaries: Dict[str, Path], tmp_path: Path) -> None:
    r = run_cli("dump-guest-memory", "-c", str(binaries["MODERN"]), str(tmp_path / "out"))
    assert_error(r, "is not a core file", "not a core dump")
    assert not (tmp_path / "out").exists()


def test_not_qemu(cored: GetCore, tmp_path: Path) -> None:
    c = cored("not_qemu")
    r = run_cli("dump-guest-memory", "-c", str(c.core), "-s", str(c.binary), str(tmp_path / "o"))
    assert_error(r, "not_qemu is not a QEMU system emulator", "address_space_memory")


def test_arch_not_detected(cored: GetCore, tmp_path: Path) -> None:
    # A QEMU-like program without the x86 CPU types that identify the target.
    c = cored("NO_CPU")
    r = run_cli("dump-guest-memory", "-c", str(c.core), "-s", str(c.binary), str(tmp_path / "o"))
    assert_error(r, "could not detect the guest architecture", "--arch")
    # Forcing --arch does not make it one.
    r = dump(c, tmp_path / "o")
    assert_error(r, "--arch x86_64: this QEMU's debug info has no x86_64 vCPU type")
    assert list(tmp_path.iterdir()) == []


def test_vmcoreinfo_file_errors(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    bad = tmp_path / "vmcoreinfo.txt"
    bad.write_text("hello\n")
    assert_error(dump(c, tmp_path / "o", "--vmcoreinfo", str(bad)), "is not VMCOREINFO text")
    assert_error(
        dump(c, tmp_path / "o", "--vmcoreinfo", str(tmp_path / "none")),
        "cannot read VMCOREINFO file",
    )
    assert not (tmp_path / "o").exists()


def test_debug_info_missing(binaries: Dict[str, Path], tmp_path: Path) -> None:
    # A QEMU whose binary was stripped after it ran: drgn finds the file the
    # core names, but no debug info in it.
    binary = tmp_path / "qemu-system-x86_64"
    shutil.copy(binaries["MODERN"], binary)
    c = run_and_core(binary, tmp_path / "qemu.core")
    subprocess.run(["strip", "--strip-debug", str(binary)], check=True)
    r = run_cli("dump-guest-memory", "-c", str(c.core), str(tmp_path / "o"))
    assert_error(r, f"no debug info for {binary}", "build ID", "-s PATH")
    # -s with a file that is not this binary.
    r = run_cli(
        "dump-guest-memory", "-c", str(c.core), "-s", str(binaries["not_qemu"]), str(tmp_path / "o")
    )
    assert_error(r, f"-s {binaries['not_qemu']} (build ID ", f"is not the debug info of {binary}")
    r = run_cli(
        "dump-guest-memory",
        "-c",
        str(c.core),
        "-s",
        str(tmp_path / "missing.debug"),
        str(tmp_path / "o"),
    )
    assert_error(r, "missing.debug does not exist")
    assert not (tmp_path / "o").exists()


def test_truncated_core(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    core = tmp_path / "truncated.core"
    shutil.copy(c.core, core)
    os.truncate(core, core.stat().st_size // 2)
    r = dump(CoredProgram(c.binary, core), tmp_path / "o")
    assert_error(r, "truncated.core is truncated")
    assert not (tmp_path / "o").exists()


def test_output_exists_kept_unless_force(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    out = tmp_path / "guest.vmcore"
    out.write_bytes(b"precious")
    r = dump(c, out)
    assert_error(r, "already exists", "--force")
    assert out.read_bytes() == b"precious"
    r = dump(c, out, "--force")
    assert r.returncode == 0, r.stderr
    assert read_phys(out, 0x100000, 0x1000) == pattern("pc.ram", 0x100000, 0x1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guest.vmcore"]


def test_output_is_directory_or_in_missing_directory(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    assert_error(dump(c, tmp_path), "is a directory")
    assert_error(dump(c, tmp_path / "no" / "such" / "out"), "does not exist")


def assert_usage_error(r: "subprocess.CompletedProcess[str]", message: str) -> None:
    """argparse's way: the usage line, one error line, status 2."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("usage: drgn-qemu "), r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("drgn-qemu ") and ": error: " in last and message in last, last


def test_begin_length_errors(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    assert_usage_error(
        dump(c, tmp_path / "o", "--begin", "0x1000"), "--begin and --length go together"
    )
    assert_usage_error(
        dump(c, tmp_path / "o", "--length", "16M"), "--begin and --length go together"
    )
    assert_usage_error(
        dump(c, tmp_path / "o", "--begin", "0", "--length", "0"), "--length must be positive"
    )
    assert_usage_error(
        dump(c, tmp_path / "o", "--begin", "0", "--length", str(1 << 64)),
        "ends past 0x10000000000000, beyond the widest guest-physical address",
    )
    assert_usage_error(dump(c, tmp_path / "o", "--threads", "0"), "--threads must be at least 1")
    assert_error(
        dump(c, tmp_path / "o", "--begin", "0x50000000", "--length", "16M"),
        "no guest memory to dump in that window",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    mounts: List[Path] = []

    def mount(options: str) -> Path:
        d = tmp_path / f"mnt{len(mounts)}"
        d.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "drgn-qemu-test", str(d)], check=True
        )
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("fmt", ["elf", "kdump-zlib"])
def test_disk_full(cored: GetCore, small_mount: Callable[[str], Path], fmt: str) -> None:
    c = cored("MODERN")
    # The fixture's 13 MiB of patterns compress to about 2 MiB.
    d = small_mount("size=4m" if fmt == "elf" else "size=1m")
    r = dump(c, d / "guest.vmcore", "--format", fmt)
    assert_error(r, "cannot write", "No space left on device")
    assert list(d.iterdir()) == []


def test_unpacked_core_does_not_fit(
    cored: GetCore, small_mount: Callable[[str], Path], tmp_path: Path
) -> None:
    """A compressed core that does not fit next to OUTPUT: said so, and --tmpdir helps."""
    c = cored("MODERN")
    packed = tmp_path / "qemu.core.zst"
    subprocess.run(["zstd", "-q", "-o", str(packed), str(c.core)], check=True)
    d = small_mount("size=1m")
    r = dump(CoredProgram(c.binary, packed), d / "guest.vmcore")
    assert_error(r, f"does not fit in {d}", "--tmpdir DIR")
    assert list(d.iterdir()) == []
    room = tmp_path / "room"
    room.mkdir()
    r = dump(CoredProgram(c.binary, packed), tmp_path / "guest.vmcore", "--tmpdir", str(room))
    assert r.returncode == 0, r.stderr
    assert list(room.iterdir()) == []
    # The summary's time includes the unpacking.
    assert "; unpacking the core took " in r.stdout


def test_usage_error_exits_2(tmp_path: Path) -> None:
    """A value --help does not allow is a usage error: argparse's usage line, one error line, 2."""
    r = run_cli("dump-guest-memory", "-c", "qemu.core", "--arch", "mips64", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("usage: drgn-qemu dump-guest-memory [-h]")
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "drgn-qemu dump-guest-memory: error: argument --arch: invalid choice: 'mips64'"
    )
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory(cored: GetCore, small_mount: Callable[[str], Path]) -> None:
    c = cored("MODERN")
    d = small_mount("ro,size=1m")
    r = dump(c, d / "guest.vmcore")
    assert_error(r, f"cannot create a file in {d}", "Read-only file system")


def test_pid_missing(tmp_path: Path) -> None:
    r = run_cli("dump-guest-memory", "-p", "999999999", str(tmp_path / "o"))
    assert_error(r, "process 999999999 does not exist")


@pytest.mark.parametrize("fmt", ["elf", "kdump-zlib"])
def test_ctrl_c_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    """
    Ctrl-C during a dump of a real QEMU: exit 130, no file, no traceback; for
    kdump also while compression threads run.
    """
    binary = qemu_binary("10.0")
    # Untouched RAM costs QEMU nothing, and takes us long enough to read
    # (some 3 s here) that the signal surely lands mid-dump.
    memory = "8G"
    with QemuGuest(binary, tmp_path, memory=memory, machine_opts="dump-guest-core=on") as guest:
        guest.stop()
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        proc = subprocess.Popen(
            [
                *drgn_qemu_command(),
                "dump-guest-memory",
                "-p",
                str(guest.pid),
                "-s",
                str(binary),
                "--format",
                fmt,
                str(out_dir / "guest.vmcore"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As from a terminal: a test run started in the background by a
            # shell without job control would hand down an ignored SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert proc.stdout is not None
        # The block table is printed just before the copy starts.
        while "pc.ram" not in proc.stdout.readline():
            assert proc.poll() is None
        # Wait for the temporary file: the dump is then under way.
        deadline = time.monotonic() + 300
        while not (partial := list(out_dir.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "no dump in progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert [p.name.endswith(".partial") for p in partial] == [True], "no dump in progress"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted; no output written" in stderr
    assert list(out_dir.iterdir()) == []


def test_loads_reader_sanity(cored: GetCore, tmp_path: Path) -> None:
    """The test reader itself: a PT_LOAD table pyelftools and readelf agree on."""
    c = cored("MODERN")
    out = tmp_path / "guest.vmcore"
    assert dump(c, out).returncode == 0
    readelf = subprocess.run(
        ["readelf", "-W", "-l", str(out)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    from_readelf = [
        int(line.split()[3], 16) for line in readelf.splitlines() if line.strip().startswith("LOAD")
    ]
    assert from_readelf == [s.paddr for s in loads(out)]


def test_add_vmcoreinfo_errors(cored: GetCore, tmp_path: Path) -> None:
    """add-vmcoreinfo: one line and nothing written for what it cannot repair."""
    text = tmp_path / "notes.txt"
    text.write_text("not a vmcore\n")
    r = run_cli("add-vmcoreinfo", str(text))
    assert_error(r, f"{text} is not an ELF vmcore: not an ELF file")
    r = run_cli("add-vmcoreinfo", str(tmp_path / "missing.vmcore"))
    assert_error(r, "does not exist")
    # A guest with no Linux kernel: the synthetic fixture's RAM.
    vmcore = tmp_path / "guest.vmcore"
    assert dump(cored("MODERN"), vmcore, "-q").returncode == 0
    before = vmcore.read_bytes()
    r = run_cli("add-vmcoreinfo", str(vmcore))
    assert_error(r, "no Linux kernel's VMCOREINFO in", "--vmcoreinfo FILE")
    assert vmcore.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guest.vmcore", "notes.txt"]
    # Given with --vmcoreinfo, it is added; a second time, left alone.
    info = tmp_path / "vmcoreinfo.txt"
    info.write_text(
        "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
    )
    r = run_cli("add-vmcoreinfo", str(vmcore), "--vmcoreinfo", str(info), "-o", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "VMCOREINFO from file" in r.stdout and "OSRELEASE=6.1.0-test" in r.stdout
    assert notes(tmp_path / "o")[-1][:2] == ("VMCOREINFO", 0)
    assert_same_memory(tmp_path / "o", vmcore)
    r = run_cli("add-vmcoreinfo", str(tmp_path / "o"))
    assert r.returncode == 0 and "has a VMCOREINFO note already; left as it is" in r.stdout


def _copy_core(c: CoredProgram, tmp_path: Path) -> Path:
    core = tmp_path / "qemu.core"
    shutil.copyfile(c.core, core)
    return core


@pytest.mark.parametrize("force", [[], ["-f"]], ids=["", "force"])
def test_output_is_an_input(cored: GetCore, tmp_path: Path, force: List[str]) -> None:
    """The core, through its own name, a symlink or a hard link, or the executable, is never the output."""
    c = cored("MODERN")
    core = _copy_core(c, tmp_path)
    before = core.read_bytes()
    (tmp_path / "sym.core").symlink_to(core)
    os.link(core, tmp_path / "hard.core")
    exe = tmp_path / "qemu"
    shutil.copyfile(c.binary, exe)
    exe_bytes = exe.read_bytes()
    cases = [
        (core, core, "output {out} is the QEMU core: it is read"),
        (core, tmp_path / "sym.core", "is the QEMU core {core}"),
        (core, tmp_path / "hard.core", "is the QEMU core {core}"),
        (tmp_path / "sym.core", core, "is the QEMU core {sym}"),
        (core, exe, "is the QEMU executable or debug info file: it is read"),
    ]
    for source, out, message in cases:
        r = run_cli("dump-guest-memory", "--arch", "x86_64", "-c", str(source), "-s", str(exe),
                    *force, str(out))  # fmt: skip
        assert_error(r, message.format(out=out, core=core, sym=tmp_path / "sym.core"))
        assert core.read_bytes() == before and exe.read_bytes() == exe_bytes
    # --ram-file, and the drgn script, where drgn opened the core itself.
    ram = tmp_path / "ram.copy"
    ram.write_bytes(b"\0" * 4096)
    r = run_cli("dump-guest-memory", "--arch", "x86_64", "-c", str(core), "-s", str(exe),
                "--ram-file", f"pc.ram={ram}", *force, str(ram))  # fmt: skip
    assert_error(r, "is the --ram-file of pc.ram")
    assert ram.read_bytes() == b"\0" * 4096
    from harness import DRGN, REPO

    contrib = REPO / "contrib" / "dump_guest_memory.py"
    for out in (core, tmp_path / "hard.core", exe):
        r = subprocess.run([str(DRGN), "-q", "-c", str(core), "-s", str(exe), str(contrib),
                            "--arch", "x86_64", *force, str(out)],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert "it is read to write the output and would be destroyed" in r.stderr
        assert core.read_bytes() == before and exe.read_bytes() == exe_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hard.core", "qemu", "qemu.core", "ram.copy", "sym.core"
    ]  # fmt: skip


def test_output_is_not_a_regular_file(cored: GetCore, tmp_path: Path) -> None:
    """A device node, FIFO or socket named as the output is refused, even with -f."""
    import socket
    import stat

    c = cored("MODERN")
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    kinds = {"null": "a character device", "fifo": "a FIFO", "sock": "a socket"}
    try:
        for name, kind in kinds.items():
            for force in ([], ["-f"]):
                r = dump(c, tmp_path / name, *force)
                assert_error(r, f"exists and is {kind}, not a regular file")
        sock.close()
        assert stat.S_ISCHR((tmp_path / "null").stat().st_mode)
        assert (tmp_path / "null").stat().st_rdev == os.makedev(1, 3)
        assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)
        assert stat.S_ISSOCK((tmp_path / "sock").stat().st_mode)
        # '-' is not standard output, and not a file named '-' either.
        r = subprocess.run([*drgn_qemu_command(), "dump-guest-memory", "--arch", "x86_64", "-c",
                            str(c.core), "-s", str(c.binary), "-"], cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
        assert_error(r, "does not write to standard output", "./-")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null", "sock"]
    finally:
        sock.close()


def test_add_vmcoreinfo_refuses_a_process_core(cored: GetCore, tmp_path: Path) -> None:
    """A QEMU core given to add-vmcoreinfo is left byte for byte as it was."""
    c = cored("MODERN")
    core = _copy_core(c, tmp_path)
    before = core.read_bytes()
    info = tmp_path / "vmcoreinfo.txt"
    info.write_text("OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(_stext)=ffffffff81000000\n")
    for extra in ([], ["--vmcoreinfo", str(info)], ["-o", str(tmp_path / "o")], ["--json"]):
        r = run_cli("add-vmcoreinfo", str(core), *extra)
        assert_error(r, "qemu.core is the core of a process (it has NT_AUXV, NT_FILE",
                     "not a guest vmcore: left as it is", "drgn-qemu dump-guest-memory -c")  # fmt: skip
        assert core.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qemu.core", "vmcoreinfo.txt"]
    # Writing elsewhere, the output is neither the vmcore nor the VMCOREINFO file.
    vmcore = tmp_path / "guest.vmcore"
    assert dump(c, vmcore, "-q").returncode == 0
    os.link(vmcore, tmp_path / "hard.vmcore")
    guest = vmcore.read_bytes()
    for out, message in ((info, "is the --vmcoreinfo file"), (tmp_path / "hard.vmcore",
                                                              "is the vmcore being repaired")):  # fmt: skip
        r = run_cli("add-vmcoreinfo", str(vmcore), "--vmcoreinfo", str(info), "-f", "-o", str(out))
        assert_error(r, message)
    assert vmcore.read_bytes() == guest and info.read_text().startswith("OSRELEASE=6.1.0-test")


def test_add_vmcoreinfo_json(cored: GetCore, tmp_path: Path) -> None:
    import json

    vmcore = tmp_path / "guest.vmcore"
    assert dump(cored("MODERN"), vmcore, "-q").returncode == 0
    info = tmp_path / "vmcoreinfo.txt"
    info.write_text("OSRELEASE=6.1.0-json\nPAGESIZE=4096\nSYMBOL(_stext)=ffffffff81000000\n")
    r = run_cli("add-vmcoreinfo", "--json", "--vmcoreinfo", str(info), str(vmcore))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["added"] is True and doc["output"] == str(vmcore)
    assert doc["vmcoreinfo"] == {"source": f"file {info}", "osrelease": "6.1.0-json",
                                 "kerneloffset": "?"}  # fmt: skip
    assert doc["guest_bytes"] == sum(s.filesz for s in loads(vmcore))
    assert notes(vmcore)[-1][:2] == ("VMCOREINFO", 0)
    r = run_cli("add-vmcoreinfo", "--json", str(vmcore))
    assert r.returncode == 0
    assert json.loads(r.stdout)["added"] is False


def test_guest_vmcore_given_as_core(cored: GetCore, tmp_path: Path) -> None:
    """A guest vmcore given as -c is called what it is, not a core without QEMU's memory."""
    c = cored("MODERN")
    for fmt, kind in (
        ("elf", "an ELF guest vmcore"),
        ("kdump-zlib", "a kdump-compressed guest vmcore"),
    ):
        vmcore = tmp_path / f"guest.{fmt}"
        assert dump(c, vmcore, "-q", "--format", fmt).returncode == 0
        for command in ("dump-guest-memory", "info"):
            out = [str(tmp_path / "o")] if command == "dump-guest-memory" else []
            r = run_cli(command, "-c", str(vmcore), "-s", str(c.binary), *out)
            assert_error(r, f"{vmcore} is {kind}, not the core of a QEMU process",
                         "open it with drgn or crash directly")  # fmt: skip
            assert "coredump_filter" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_options_without_effect(cored: GetCore, tmp_path: Path) -> None:
    """An option that does nothing in a combination is refused (usage) or warned about."""
    c = cored("MODERN")
    assert_usage_error(dump(c, tmp_path / "o", "--no-stop"), "--no-stop only works with -p PID")
    r = run_cli("info", "-p", str(os.getpid()), "--tmpdir", str(tmp_path))
    assert_usage_error(r, "--tmpdir only works with -c CORE")
    # A core that is not compressed has nothing to unpack in --tmpdir.
    r = dump(c, tmp_path / "o", "--tmpdir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"warning: --tmpdir has no effect: {c.core} is not compressed" in r.stderr.splitlines()
    # --no-sparse with kdump writes the zero page the others share: it does something.
    help_text = " ".join(run_cli("dump-guest-memory", "--help").stdout.split())
    assert "in a kdump file, the one zero page they all share" in help_text


def test_window_table_is_the_window(cored: GetCore, tmp_path: Path) -> None:
    """--begin/--length prints the part of each block in the window, not the whole table."""
    r = dump(cored("MODERN"), tmp_path / "o", "--begin", "0x300000", "--length", "0x200000")
    assert r.returncode == 0, r.stderr
    rows = [line.split()[:2] for line in r.stdout.splitlines() if line.startswith("0x")]
    assert rows == [["0x0000000000300000", "0x0000000000400000"],
                    ["0x0000000000400000", "0x0000000000420000"],
                    ["0x0000000000420000", "0x0000000000430000"]]  # fmt: skip
    assert "(the window --begin 0x300000 --length 0x200000 of 5 blocks)" in r.stdout
    assert [(s.paddr, s.paddr + s.filesz) for s in loads(tmp_path / "o")] == [
        (int(a, 16), int(b, 16)) for a, b in rows
    ]


def test_wrong_symbols_refused(cored: GetCore, binaries: Dict[str, Path], tmp_path: Path) -> None:
    """-s naming a file that is not this QEMU's is an error, even where drgn finds the right one."""
    c = cored("MODERN")
    r = dump(CoredProgram(Path("/etc/passwd"), c.core), tmp_path / "o")
    assert_error(r, "-s /etc/passwd is not an ELF file")
    r = dump(CoredProgram(binaries["not_qemu"], c.core), tmp_path / "o")
    assert_error(r, f"-s {binaries['not_qemu']} (build ID ", f"is not the debug info of {c.binary}")
    assert not (tmp_path / "o").exists()


def test_not_qemu_named(tmp_path: Path) -> None:
    """The core (or process) of another program is called what it is, not QEMU without debug info."""
    sleep = subprocess.Popen(["sleep", "300"])
    try:
        core = tmp_path / "sleep.core"
        from harness import gcore

        gcore(sleep.pid, core)
        for args in (["-c", str(core)], ["-c", str(core), "-s", shutil.which("sleep") or "sleep"],
                     ["-p", str(sleep.pid)]):  # fmt: skip
            r = run_cli("dump-guest-memory", *args, str(tmp_path / "o"))
            assert_error(r, "sleep is not QEMU (its executable", "'QEMU emulator version'")
            assert "no debug info" not in r.stderr
    finally:
        sleep.kill()
        sleep.wait()
    assert not (tmp_path / "o").exists()


def test_unreadable_executable(binaries: Dict[str, Path], tmp_path: Path) -> None:
    """QEMU's executable that cannot be read is named, with the reason, not a missing debug link."""
    binary = tmp_path / "qemu-system-x86_64"
    shutil.copy(binaries["MODERN"], binary)
    c = run_and_core(binary, tmp_path / "qemu.core")
    binary.chmod(0)
    # Root reads any file: run without the capabilities that let it.
    setpriv = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    r = subprocess.run([*setpriv, *drgn_qemu_command(), "dump-guest-memory", "-c", str(c.core),
                        str(tmp_path / "o")], capture_output=True, text=True)  # fmt: skip
    assert_error(r, f"cannot read QEMU's executable {binary}: Permission denied")
    assert ".gnu_debuglink" not in r.stderr
    r = subprocess.run([*setpriv, *drgn_qemu_command(), "dump-guest-memory", "-c", str(c.core),
                        "-s", str(binary), str(tmp_path / "o")], capture_output=True, text=True)  # fmt: skip
    assert_error(r, f"cannot read debug info file {binary}: Permission denied")
    assert not (tmp_path / "o").exists()


def test_bt_of_a_thread_at_pc_0(binaries: Dict[str, Path], tmp_path: Path) -> None:
    """%qemu bt says a stack whose program counter is 0 cannot be unwound (no bare '#0 0x0')."""
    from harness import DRGN

    proc = subprocess.Popen([str(binaries["MODERN"])], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        core = tmp_path / "pc0.core"
        subprocess.run(["timeout", "120", "gdb", "-p", str(proc.pid), "-batch", "-ex", "set $pc=0",
                        "-ex", f"gcore {core}"], check=True, capture_output=True)  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    script = 'from drgn.commands import run_command; run_command(prog, "qemu bt")'
    r = subprocess.run([DRGN, "-q", "-c", str(core), "-s", str(binaries["MODERN"]), "-e", script],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "(no stack to unwind: its program counter is 0" in r.stdout, r.stdout
    assert "#0  0x0" not in r.stdout and "#0 0x0" not in r.stdout


def test_reading_keeps_our_bugs(cored: GetCore) -> None:
    """reading() turns drgn's missing members into one line, and leaves our own bugs' tracebacks."""
    from test_synthetic import open_fixture

    from drgn_qemu.errors import UnsupportedError, reading

    prog = open_fixture(cored("MODERN"))
    with pytest.raises(UnsupportedError, match=r"layout \(MR\): 'MemoryRegion' has no member 'x'"):
        with reading("MR"):
            prog["mr_ram"].x  # noqa: B018
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'size'"):
        with reading("MR"):
            None.size  # type: ignore[attr-defined]  # noqa: B018
