"""
drgn-qemu against QEMU itself: the same stopped guest dumped by QEMU's own
QMP dump-guest-memory and by drgn-qemu from a gcore of the process (and from
the live process), compared byte for byte: the whole file, notes included,
but for e_ehsize, which QEMU gets wrong.

Debug builds of QEMU 7.2 and 10.0 from Debian's source package come from
scripts/build-qemu.sh (cached outside the checkout).
"""

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from harness import REPO, SERIES, QemuGuest, drgn_qemu_command, kvm_usable, qemu_binary, write_blob
from vmcore import (
    assert_same_file_but_ehsize,
    assert_same_memory,
    elf_header,
    loads,
    notes,
    read_phys,
)

from drgn_qemu.dump import dump_guest_memory
from drgn_qemu.helpers import guest_phys_blocks
from drgn_qemu.program import open_qemu_program
from drgn_qemu.reader import IO_MODES

# Known bytes the guest gets at boot through -device loader: (guest address, size, seed).
BLOBS = [(0x1000000, 4 << 20, 1), (0x100200000, 3 << 20, 2)]


def load_blobs(work: Path) -> Tuple[List[str], Dict[int, bytes]]:
    """QEMU's arguments loading :data:`BLOBS` (files written in *work*), and their bytes."""
    blobs, extra = {}, []
    for addr, size, seed in BLOBS:
        path = work / f"blob-{addr:x}.bin"
        blobs[addr] = write_blob(path, size, seed)
        extra += ["-device", f"loader,file={path},addr={addr:#x},force-raw=on"]
    return extra, blobs


@dataclass
class StoppedGuest:
    series: str
    accel: str
    smp: int
    binary: Path
    guest: QemuGuest
    work: Path
    qemu_dump: Path
    core: Path
    blobs: Dict[int, bytes]


def cases() -> List[Tuple[str, str, int]]:
    """(QEMU series, accelerator, vCPUs): one and several vCPUs, TCG and KVM."""
    return [(s, a, n) for s in SERIES for a, n in (("tcg", 1), ("tcg", 2), ("kvm", 2))]


@pytest.fixture(scope="module", params=cases(), ids=lambda c: f"qemu{c[0]}-{c[1]}-smp{c[2]}")
def stopped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoppedGuest]:
    series, accel, smp = request.param
    if accel == "kvm" and not kvm_usable():
        pytest.skip("/dev/kvm is not usable on this machine (the TCG cases still run)")
    binary = qemu_binary(series)
    work = tmp_path_factory.mktemp(f"qemu{series}-{accel}-smp{smp}")
    extra, blobs = load_blobs(work)
    guest = QemuGuest(binary, work, accel, extra_args=extra, smp=smp).start()
    try:
        time.sleep(0.5)  # let the firmware run and write to RAM
        guest.stop()
        t0 = time.monotonic()
        qemu_dump = guest.dump(work / "qemu.vmcore")
        qemu_seconds = time.monotonic() - t0
        core = guest.gcore(work / "qemu.core")
        print(f"\nQEMU {series} {accel} smp {smp}: QMP dump-guest-memory took {qemu_seconds:.2f} s")
        yield StoppedGuest(series, accel, smp, binary, guest, work, qemu_dump, core, blobs)
    finally:
        guest.close()
        for name in ("qemu.vmcore", "qemu.core"):
            (work / name).unlink(missing_ok=True)


def check_blobs(vmcore: Path, blobs: Dict[int, bytes]) -> None:
    for addr, data in blobs.items():
        assert read_phys(vmcore, addr, len(data)) == data, f"blob at {addr:#x}"


def run(cmd: List[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(cmd, capture_output=True, text=True)


def dump_core(stopped: StoppedGuest, out: Path, *extra: str) -> "subprocess.CompletedProcess[str]":
    """drgn-qemu dump-guest-memory of the guest's core, with QEMU's binary."""
    return run(
        [*drgn_qemu_command(), "dump-guest-memory", "-c", str(stopped.core),
         "-s", str(stopped.binary), *extra, str(out)]
    )  # fmt: skip


def test_core_equals_qemu_dump(stopped: StoppedGuest, tmp_path: Path) -> None:
    out = tmp_path / "ours.vmcore"
    t0 = time.monotonic()
    r = dump_core(stopped, out)
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    print(f"drgn-qemu dump from the core took {seconds:.2f} s")
    # QEMU's pc machine with RAM split around the 4 GiB hole and the BIOS ROM.
    assert [(s.paddr, s.filesz) for s in loads(out)] == [
        (0, 512 << 20),
        (0xFFFC0000, 256 << 10),
        (0x100000000, 256 << 20),
    ]
    compared = assert_same_memory(out, stopped.qemu_dump)
    assert compared == (768 << 20) + (256 << 10)
    check_blobs(out, stopped.blobs)
    # The notes: a CORE prstatus per vCPU, then a QEMU note per vCPU, as QEMU.
    ours = notes(out)
    assert ours == notes(stopped.qemu_dump)
    assert [name for name, _, _ in ours] == ["CORE"] * stopped.smp + ["QEMU"] * stopped.smp
    # SeaBIOS leaves the vCPU out of long mode: QEMU writes EM_386, with
    # ELFCLASS64 since the BIOS ROM ends at 4 GiB.
    header = elf_header(out)
    assert header["e_type"] == "ET_CORE"
    assert header["e_machine"] == "EM_386"
    assert header["e_ident"]["EI_CLASS"] == "ELFCLASS64"
    assert_same_file_but_ehsize(out, stopped.qemu_dump)
    assert "pc.ram" in r.stdout and "pc.bios" in r.stdout
    assert f"{stopped.smp - 1}: rip=0x" in r.stdout and "not in long mode" in r.stdout
    assert "no VMCOREINFO found" in r.stderr


def test_pid_equals_qemu_dump(stopped: StoppedGuest, tmp_path: Path) -> None:
    out = tmp_path / "ours.vmcore"
    r = run(
        [
            *drgn_qemu_command(),
            "dump-guest-memory",
            "-q",
            "-p",
            str(stopped.guest.pid),
            "-s",
            str(stopped.binary),
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert_same_memory(out, stopped.qemu_dump)
    check_blobs(out, stopped.blobs)


def test_contrib_script_equals_qemu_dump(stopped: StoppedGuest, tmp_path: Path) -> None:
    out = tmp_path / "ours.vmcore"
    drgn = Path(sys.executable).parent / "drgn"
    r = run(
        [
            str(drgn),
            "--main-symbols",
            "-c",
            str(stopped.core),
            "-s",
            str(stopped.binary),
            str(REPO / "contrib" / "dump_guest_memory.py"),
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert_same_file_but_ehsize(out, stopped.qemu_dump)


def test_window_equals_qemu_dump(stopped: StoppedGuest, tmp_path: Path) -> None:
    # A window that cuts the BIOS ROM and the RAM above 4 GiB.
    begin, length = 0xFFFE0000, 0x100100000 - 0xFFFE0000
    theirs = stopped.guest.dump(tmp_path / "qemu-window.vmcore", begin=begin, length=length)
    out = tmp_path / "ours.vmcore"
    r = dump_core(stopped, out, "--begin", hex(begin), "--length", hex(length))
    assert r.returncode == 0, r.stderr
    assert [(s.paddr, s.filesz) for s in loads(out)] == [
        (0xFFFE0000, 0x20000),
        (0x100000000, 1 << 20),
    ]
    assert_same_file_but_ehsize(out, theirs)


def test_library_function(stopped: StoppedGuest, tmp_path: Path) -> None:
    prog = open_qemu_program(core=str(stopped.core), symbols=[str(stopped.binary)])
    blocks = guest_phys_blocks(prog)
    assert [(b.target_start, b.target_end, b.mr_name) for b in blocks] == [
        (0, 512 << 20, "pc.ram"),
        (0xFFFC0000, 1 << 32, "pc.bios"),
        (1 << 32, (1 << 32) + (256 << 20), "pc.ram"),
    ]
    seen: List[int] = []
    result = dump_guest_memory(prog, str(tmp_path / "lib.vmcore"), progress=seen.append)
    assert sum(seen) == result.plan.guest_bytes == (768 << 20) + (256 << 10)
    assert_same_file_but_ehsize(tmp_path / "lib.vmcore", stopped.qemu_dump)


def test_dump_guest_core_off(tmp_path: Path) -> None:
    """A real QEMU run without dump-guest-core=on: its core has no guest RAM."""
    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, tmp_path, memory="128M", machine_opts="dump-guest-core=off") as guest:
        guest.stop()
        core = guest.gcore(tmp_path / "qemu.core")
    r = run(
        [
            *drgn_qemu_command(),
            "dump-guest-memory",
            "-c",
            str(core),
            "-s",
            str(binary),
            str(tmp_path / "out.vmcore"),
        ]
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "is not in the core" in r.stderr
    assert "-machine dump-guest-core=on" in r.stderr
    # Read from QEMU's own state (current_machine->dump_guest_core), and
    # laid where it belongs: libvirt turns it off, QEMU's default is on.
    assert "QEMU ran with -machine dump-guest-core=off (libvirt sets it" in r.stderr
    assert "(the default)" not in r.stderr
    assert re.search(r"; also missing: (\S+, )*pc\.bios; or pass --skip-missing", r.stderr)
    assert not (tmp_path / "out.vmcore").exists()
    # --skip-missing with nothing left says why.
    r = run([*drgn_qemu_command(), "dump-guest-memory", "--skip-missing", "-c", str(core), "-s",
             str(binary), str(tmp_path / "out.vmcore")])  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("drgn-qemu: error: no guest memory to dump: all of it is missing: ")
    assert "dump-guest-core=off" in last and re.search(r"also missing: (\S+, )*pc\.bios$", last)
    assert not (tmp_path / "out.vmcore").exists()


def test_qemu_default_keeps_guest_ram(tmp_path: Path) -> None:
    """QEMU's default is dump-guest-core=on: a core of a QEMU run without the option dumps."""
    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, tmp_path, memory="128M", machine_opts="") as guest:
        guest.stop()
        assert guest.command("qom-get", path="/machine", property="dump-guest-core") is True
        core = guest.gcore(tmp_path / "qemu.core")
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core), "-s", str(binary),
             str(tmp_path / "out.vmcore")])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sum(s.filesz for s in loads(tmp_path / "out.vmcore")) >= 128 << 20


#: The I/O paths are the reader's, whatever the QEMU: one guest runs them all
#: (the others dump by the default path in the tests above).
@pytest.mark.parametrize("stopped", [("10.0", "tcg", 2)], indirect=True,
                         ids=["qemu10.0-tcg-smp2"])  # fmt: skip
def test_every_io_path_equals_qemu_dump(stopped: StoppedGuest, tmp_path: Path) -> None:
    """Sparse or full, mapped, preadv'd, copy_file_range'd or through drgn, any number of
    threads: QEMU's bytes."""
    for io in IO_MODES:
        for sparse in (True, False):
            out = tmp_path / f"{io}-{sparse}.vmcore"
            flags = ["-q", "--io", io, *([] if sparse else ["--no-sparse"])]
            r = dump_core(stopped, out, *flags)
            assert r.returncode == 0, r.stderr
            assert_same_file_but_ehsize(out, stopped.qemu_dump)
            used = out.stat().st_blocks * 512
            if sparse:
                # A firmware-only guest is mostly zeros: holes, not disk blocks.
                assert used < out.stat().st_size // 10, (io, used)
            else:
                assert used >= out.stat().st_size - (1 << 20), (io, used)
            out.unlink()
    # Zero pages found by 1 or 3 threads, in many small chunks in flight.
    for threads in ("1", "3"):
        out = tmp_path / f"threads-{threads}.vmcore"
        r = dump_core(stopped, out, "-q", "--threads", threads, "--chunk-size", "64K")
        assert r.returncode == 0, r.stderr
        assert_same_file_but_ehsize(out, stopped.qemu_dump)
        out.unlink()
    for io in ("auto", "program"):
        out = tmp_path / f"pid-{io}.vmcore"
        r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "--io", io,
                 "-p", str(stopped.guest.pid), "-s", str(stopped.binary), str(out)])  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert_same_file_but_ehsize(out, stopped.qemu_dump)
        out.unlink()
