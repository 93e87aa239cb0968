"""
Production memory set-ups against real QEMU (each series the tests build):
guest RAM that a core leaves out, and where drgn-qemu then finds it.

- memory-backend-file share=on on a named file (tmpfs where it has room):
  Linux's default coredump_filter (0x33) leaves shared file mappings out,
  so gdb's gcore has no guest RAM; the dump reads it back from the file
  (found from the core's NT_FILE note) and equals QEMU's own QMP dump of
  the same stopped guest. With the file gone: an error naming the block,
  coredump_filter bit 0x08 and -p; --ram-file with a saved copy; and
  --skip-missing, which writes the rest, identical to QEMU's.
- memory-backend-memfd share=on: a shared mapping without a name, which the
  default filter keeps (bit 0x02): in the core, identical to QEMU's.
- the default (private anonymous) RAM under a coredump_filter without bit
  0x01: the core has no heap either; an error naming that bit.
"""

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from harness import SERIES, QemuGuest, drgn_qemu_command, qemu_binary, write_blob
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, loads, read_phys

RAM = 256 << 20
BLOB_ADDR = 0x100000
BLOB_SIZE = 1 << 20


def _ram_dir(tmp: Path) -> Path:
    """tmpfs (/dev/shm) where it has room for the guest's RAM, else the test's directory."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 4 * RAM:
            return Path("/dev/shm")
    except OSError:
        pass
    return tmp


@dataclass
class Cored:
    binary: Path
    core: Path
    #: QEMU's own QMP dump of the same stopped guest.
    qemu_dump: Path
    blob: bytes
    #: The file the RAM was mapped from, and a copy of it.
    ram_file: Path
    ram_copy: Path
    #: ram0's host address (HMP info ramblock).
    hva: int


def _cored(binary: Path, work: Path, backend: str, coredump_filter: str = "") -> Iterator[Cored]:
    blob = write_blob(work / "blob.bin", BLOB_SIZE, 11)
    ram_file = _ram_dir(work) / f"drgn-qemu-test-{uuid.uuid4().hex}"
    props = {
        "file": f"memory-backend-file,id=ram0,size={RAM},mem-path={ram_file},share=on",
        "memfd": f"memory-backend-memfd,id=ram0,size={RAM},share=on",
        "ram": f"memory-backend-ram,id=ram0,size={RAM}",
    }[backend]
    extra = [
        "-object",
        props,
        "-device",
        f"loader,file={work / 'blob.bin'},addr={BLOB_ADDR:#x},force-raw=on",
    ]
    try:
        with QemuGuest(binary, work, memory="256M", machine_opts="dump-guest-core=on,"
                       "memory-backend=ram0", extra_args=extra) as guest:  # fmt: skip
            # Stopped once SeaBIOS has mapped 0xc0000-0xfffff to RAM (PAM):
            # ram0 is then one block, whatever the machine's load (before,
            # pc.rom and an alias of pc.bios lie over it).
            guest.stop_when("info mtree -f",
                            lambda text: "): pc.rom" not in text and "pc.bios @" not in text)  # fmt: skip
            row = next(line.split() for line in guest.hmp("info ramblock").splitlines()
                       if line.split()[:1] == ["ram0"])  # fmt: skip
            hva = int(row[-2] if row[-1] in ("ro", "rw") else row[-1], 16)
            if coredump_filter:
                Path(f"/proc/{guest.pid}/coredump_filter").write_text(coredump_filter)
            qemu_dump = guest.dump(work / "qemu.vmcore")
            core = guest.gcore(work / "qemu.core")
        ram_copy = work / "ram-copy"
        if ram_file.exists():
            shutil.copyfile(ram_file, ram_copy)
        yield Cored(binary, core, qemu_dump, blob, ram_file, ram_copy, hva)
    finally:
        ram_file.unlink(missing_ok=True)


@pytest.fixture(scope="module", params=SERIES)
def file_backed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cored]:
    work = tmp_path_factory.mktemp(f"file-{request.param}")
    yield from _cored(qemu_binary(request.param), work, "file")


def dump(c: Cored, out: Path, *extra: str) -> "subprocess.CompletedProcess[str]":
    return run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(c.core), "-s",
                str(c.binary), *extra, str(out)])  # fmt: skip


def test_file_read_back(file_backed: Cored, tmp_path: Path) -> None:
    c = file_backed
    # The core really has no guest RAM: gcore honoured coredump_filter.
    assert not [s for s in loads(c.core) if s.vaddr <= c.hva < s.vaddr + s.filesz]
    out = tmp_path / "ours.vmcore"
    r = dump(c, out)
    assert r.returncode == 0, r.stderr
    assert_same_file_but_ehsize(out, c.qemu_dump)
    assert read_phys(out, BLOB_ADDR, BLOB_SIZE) == c.blob
    assert f"  ram0: read back from {c.ram_file}\n" in r.stdout
    rows = {line.split()[-1]: line.split()[-2] for line in r.stdout.splitlines()
            if line.startswith("0x")}  # fmt: skip
    assert rows["ram0"] == "file" and rows["pc.bios"] == "core"
    r = dump(c, tmp_path / "j.vmcore", "--json")
    assert r.returncode == 0, r.stderr
    blocks = {b["memory_region"]: b for b in json.loads(r.stdout)["blocks"]}
    assert (blocks["ram0"]["source"], blocks["ram0"]["file"]) == ("file", str(c.ram_file))
    assert blocks["pc.bios"]["source"] == "core"


def test_file_deleted(file_backed: Cored, tmp_path: Path) -> None:
    c = file_backed
    moved = tmp_path / "moved"
    shutil.move(c.ram_file, moved)
    try:
        out = tmp_path / "ours.vmcore"
        r = dump(c, out)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
        for words in ("guest RAM ram0 (guest-physical 0x0-0xfffffff", "memory-backend-file ram0",
                      "is not in the core", "coredump_filter has bit 0x08",
                      f"{c.ram_file} no longer exists", "-p PID", "--skip-missing",
                      "--ram-file ram0=PATH"):  # fmt: skip
            assert words in r.stderr, r.stderr
        assert not out.exists()
        # A copy saved elsewhere, named on the command line.
        r = dump(c, out, "-q", "--ram-file", f"ram0={c.ram_copy}")
        assert r.returncode == 0, r.stderr
        assert_same_file_but_ehsize(out, c.qemu_dump)
        # Or the rest only: QEMU's PT_LOADs but guest RAM's, byte for byte.
        rest = tmp_path / "rest.vmcore"
        r = dump(c, rest, "--skip-missing")
        assert r.returncode == 0, r.stderr
        assert "warning: left out: guest RAM ram0" in r.stderr
        theirs = loads(c.qemu_dump)
        assert [s.paddr for s in theirs] == [0, 0xFFFC0000]
        assert [(s.paddr, s.filesz) for s in loads(rest)] == [(0xFFFC0000, 0x40000)]
        assert read_phys(rest, 0xFFFC0000, 0x40000) == read_phys(c.qemu_dump, 0xFFFC0000, 0x40000)
        rows = [line.split() for line in r.stdout.splitlines() if line.startswith("0x")]
        assert [(row[-2], row[-1]) for row in rows] == [("missing", "ram0"), ("core", "pc.bios")]
    finally:
        shutil.move(moved, c.ram_file)


def test_ram_file_errors(file_backed: Cored, tmp_path: Path) -> None:
    c = file_backed
    short = tmp_path / "short"
    short.write_bytes(b"x" * 4096)
    for arg, words in (
        ("nosuch=/x", "--ram-file nosuch: no guest RAM block of that name"),
        (f"ram0={short}", "fewer than the 268435456 QEMU mapped"),
        ("ram0", "expected ID=PATH"),
    ):
        out = tmp_path / "o"
        r = dump(c, out, "--ram-file", arg)
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
        assert words in r.stderr
        assert not out.exists()


@pytest.mark.parametrize("series", SERIES)
def test_memfd_in_core(series: str, tmp_path: Path) -> None:
    for c in _cored(qemu_binary(series), tmp_path, "memfd"):
        out = tmp_path / "ours.vmcore"
        r = dump(c, out)
        assert r.returncode == 0, r.stderr
        assert_same_file_but_ehsize(out, c.qemu_dump)
        assert read_phys(out, BLOB_ADDR, BLOB_SIZE) == c.blob
        rows = {line.split()[-1]: line.split()[-2] for line in r.stdout.splitlines()
                if line.startswith("0x")}  # fmt: skip
        assert rows == {"ram0": "core", "pc.bios": "core"}


def test_coredump_filter_without_anonymous(tmp_path: Path) -> None:
    """Without bit 0x01 the core has no heap either: said before anything is read."""
    for c in _cored(qemu_binary(SERIES[-1]), tmp_path, "ram", coredump_filter="0x32"):
        out = tmp_path / "ours.vmcore"
        r = dump(c, out)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        for words in ("holds none of QEMU's writable memory",
                      "coredump_filter without bit 0x01 (anonymous private)", "-p PID"):  # fmt: skip
            assert words in r.stderr, r.stderr
        assert not out.exists()


def test_readme_transcript(file_backed: Cored, tmp_path: Path) -> None:
    """The README's transcript of a file-backed guest, rerun on this one."""
    from test_readme import normalized, transcripts

    runs = [(c, e) for c, e in transcripts("Getting a usable QEMU core") if "guest-ram" in
            "".join(e) or c.startswith("rm ")]  # fmt: skip
    assert [c.split()[0] for c, _ in runs] == ["drgn-qemu", "rm", "drgn-qemu"]
    moved = tmp_path / "moved"
    try:
        for command, expected in runs:
            if command.startswith("rm "):
                shutil.move(file_backed.ram_file, moved)
                continue
            args = [str(file_backed.core) if a == "qemu.core" else
                    str(file_backed.binary) if a == "qemu-system-x86_64" else a
                    for a in command.split()[1:]]  # fmt: skip
            r = subprocess.run([*drgn_qemu_command(), *args], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
            got = r.stdout.replace(str(file_backed.ram_file), "/dev/shm/guest-ram")
            assert normalized(got.splitlines()) == normalized(expected)
    finally:
        if moved.exists():
            shutil.move(moved, file_backed.ram_file)


def test_confidential_guest_refused(file_backed: Cored, tmp_path: Path) -> None:
    """
    A confidential guest (current_machine->cgs set): every block refused,
    never ciphertext written. No machine here runs SEV or TDX, so the core
    is made to say so: a copy whose machine's cgs points at the machine's
    accelerator object, whose QOM type name, "tcg-accel" or "kvm-accel",
    is overwritten with "sev-guest" (as long).
    """
    import drgn
    from corruption import _file_offset, _load_segments

    prog = drgn.Program()
    prog.set_core_dump(str(file_backed.core))
    prog.load_debug_info([str(file_backed.binary)])
    machine = prog["current_machine"]
    accel = machine.accelerator.read_()
    name = drgn.cast("Object *", accel).member_("class").type.name.read_()
    assert name.string_() in (b"tcg-accel", b"kvm-accel")
    core = tmp_path / "sev.core"
    shutil.copyfile(file_backed.core, core)
    segments = _load_segments(core)
    with open(core, "r+b") as f:
        for address, data in ((machine.cgs.address_, accel.value_().to_bytes(8, "little")),
                              (name.value_(), b"sev-guest")):  # fmt: skip
            offset = _file_offset(segments, address, len(data))
            assert offset is not None
            f.seek(offset)
            f.write(data)
    out = tmp_path / "o.vmcore"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(core), "-s",
             str(file_backed.binary), str(out)])  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot be dumped: the guest is a confidential guest (sev-guest)" in r.stderr
    assert not out.exists()
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(core), "-s",
             str(file_backed.binary), "--skip-missing", str(out)])  # fmt: skip
    assert r.returncode == 1 and "no guest memory to dump" in r.stderr, r.stderr
    assert not out.exists()
