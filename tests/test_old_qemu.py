"""
QEMU 5.2 (Debian bullseye's, built by scripts/build-qemu.sh 5.2), as users of
Debian 11 run it: a QEMU from before the QOM type renames (its
TYPE_MEMORY_REGION is "qemu:memory-region"), before QEMU's ELF dump grew
section headers, and whose HMP prints XMM registers as 32 digits. On a
stopped pc and q35 guest (TCG, 2 vCPUs, known bytes loaded by -device
loader): our ELF vmcore is QMP's file byte for byte (notes included), our
kdump-zlib is its flattened kdump-zlib unflattened, the %qemu views equal
HMP's, and info names the version and machine.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest
from harness import DRGN, QemuGuest, drgn_qemu_command, qemu_binary
from kdump_reader import assert_same_kdump_but_machine, unflatten
from test_real_qemu import load_blobs, run
from vmcore import notes

SERIES = "5.2"
#: The %qemu views and the HMP command each equals.
VIEWS = {"registers -a": "info registers -a", "ramblocks": "info ramblock",
         "mtree -f": "info mtree -f", "cpus": "info cpus"}  # fmt: skip


@dataclass
class Stopped:
    machine: str
    binary: Path
    core: Path
    elf: Path
    flat_kdump: Path
    hmp: Dict[str, str]


@pytest.fixture(scope="module", params=["pc", "q35"])
def stopped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stopped]:
    machine, binary = request.param, qemu_binary(SERIES)
    work = tmp_path_factory.mktemp(f"qemu5.2-{machine}")
    extra, _ = load_blobs(work)
    with QemuGuest(binary, work, machine=machine, extra_args=extra, smp=2) as guest:
        guest.stop()
        hmp = {view: guest.hmp(command).replace("\r\n", "\n") for view, command in VIEWS.items()}
        elf = guest.dump(work / "qemu.vmcore")
        flat = unflatten(guest.dump(work / "qemu.flat", format="kdump-zlib"), work / "qemu.kdump")
        core = guest.gcore(work / "qemu.core")
    yield Stopped(machine, binary, core, elf, flat, hmp)
    for p in work.iterdir():
        p.unlink()


def _ours(stopped: Stopped, out: Path, *extra: str) -> Path:
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(stopped.core),
             "-s", str(stopped.binary), *extra, str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_elf_is_qemus_file(stopped: Stopped, tmp_path: Path) -> None:
    """The whole file: QEMU 5.2's layout (program headers first, no sections), notes, memory."""
    ours = _ours(stopped, tmp_path / "ours.vmcore")
    assert ours.read_bytes() == stopped.elf.read_bytes()
    # Not equal by accident: two vCPUs' CORE and QEMU notes, and the loader's bytes.
    assert [n for n, _, _ in notes(ours)] == ["CORE", "CORE", "QEMU", "QEMU"]
    readelf = subprocess.run(["readelf", "-W", "-h", "-l", str(ours)], check=True,
                             capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert "Start of program headers:          64 (bytes into file)" in readelf
    assert "Number of section headers:         0" in readelf


def test_kdump_is_qemus_file(stopped: Stopped, tmp_path: Path) -> None:
    ours = _ours(stopped, tmp_path / "ours.kdump", "--format", "kdump-zlib")
    assert_same_kdump_but_machine(ours, stopped.flat_kdump, "x86_64")


@pytest.mark.parametrize("view", VIEWS)
def test_views_equal_hmp(stopped: Stopped, view: str) -> None:
    script = f"from drgn.commands import run_command; run_command(prog, {('qemu ' + view)!r})"
    r = subprocess.run([DRGN, "-q", "-c", str(stopped.core), "-s", str(stopped.binary), "-e",
                        script], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == stopped.hmp[view]
    if view == "registers -a":  # QEMU 5.2's format: 32 digits, no space, XMM only
        assert re.search(r"^XMM00=[0-9a-f]{32} XMM01=[0-9a-f]{32}$", r.stdout, re.M)
        assert "YMM" not in r.stdout
    if view == "mtree -f":
        assert "pc.ram" in r.stdout


def test_info(stopped: Stopped) -> None:
    r = run([*drgn_qemu_command(), "info", "-c", str(stopped.core), "-s", str(stopped.binary)])
    assert r.returncode == 0, r.stderr
    version = subprocess.run([str(stopped.binary), "--version"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()[0]  # fmt: skip
    assert version.startswith("QEMU emulator version 5.2")
    lines = r.stdout.splitlines()
    assert lines[0].endswith(f", version {version.split()[-1]}")
    machine = {"pc": "pc-i440fx-5.2", "q35": "pc-q35-5.2"}[stopped.machine]
    assert f"machine: {machine}, accelerator: tcg, run state: paused" in lines
    assert "dump: possible, " in r.stdout
