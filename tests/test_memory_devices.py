"""
Memory devices against real QEMU: pc-dimm and virtio-mem.

QMP dump-guest-memory (6.2 and later) writes only the plugged blocks of a
virtio-mem device (its RamDiscardManager), never merged with neighbours;
drgn-qemu reads the device's bitmap and must write the same file, byte for
byte. Checked with nothing plugged (a firmware-only guest, every series) and
with memory a Linux guest plugged (the Debian 6.12 cloud kernel's virtio_mem
driver, QEMU 10.0, with -device vmcoreinfo so that both files have the
kernel's note): the requested size set over QMP, and the test waits
until the device says it is plugged. %qemu memory-devices equals HMP 'info
memory-devices' for both.
"""

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from harness import DRGN, SERIES, QemuGuest, drgn_qemu_command, qemu_binary
from linux_guest import boot_linux, fetch_kernel
from vmcore import assert_same_file_but_ehsize, loads

VIRTIO_MEM = ["-object", "memory-backend-ram,id=vmem0,size=512M",
              "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0"]  # fmt: skip
DIMM = ["-object", "memory-backend-ram,id=mem1,size=64M", "-device", "pc-dimm,id=dimm1,memdev=mem1"]
PLUG = 128 << 20


@dataclass
class Stopped:
    binary: Path
    core: Path
    qemu_dump: Path
    hmp: str


def _stop_and_core(guest: QemuGuest, binary: Path, work: Path) -> Stopped:
    guest.stop()
    hmp = guest.hmp("info memory-devices").replace("\r\n", "\n")
    qemu_dump = guest.dump(work / "qemu.vmcore")
    core = guest.gcore(work / "qemu.core")
    return Stopped(binary, core, qemu_dump, hmp)


@pytest.fixture(scope="module", params=SERIES, ids=lambda s: f"qemu{s}")
def unplugged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stopped]:
    binary = qemu_binary(request.param)
    work = tmp_path_factory.mktemp(f"vmem{request.param}")
    with QemuGuest(binary, work, memory="256M,slots=2,maxmem=2G",
                   machine_opts="dump-guest-core=on", extra_args=DIMM + VIRTIO_MEM) as guest:  # fmt: skip
        yield _stop_and_core(guest, binary, work)


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    binary = qemu_binary("10.0")
    work = tmp_path_factory.mktemp("vmem-linux")
    guest = boot_linux(binary, work, fetch_kernel("6.12"), True, memory="512M,maxmem=2G",
                       extra_args=VIRTIO_MEM)  # fmt: skip
    try:
        guest.command("qom-set", path="/machine/peripheral/vm0", property="requested-size",
                      value=PLUG)  # fmt: skip
        # The guest's driver plugs blocks until the device's size is what was asked.
        deadline = time.monotonic() + 600
        while guest.command("qom-get", path="/machine/peripheral/vm0", property="size") != PLUG:
            assert time.monotonic() < deadline, "the guest did not plug the memory"
            time.sleep(0.2)
        yield _stop_and_core(guest, binary, work)
    finally:
        guest.close()


def ours(s: Stopped, out: Path) -> Path:
    r = subprocess.run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(s.core), "-s",
                        str(s.binary), str(out)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def memory_devices(s: Stopped) -> str:
    code = "from drgn.commands import run_command\nrun_command(prog, 'qemu memory-devices')"
    r = subprocess.run([DRGN, "-q", "-c", str(s.core), "-s", str(s.binary), "-e", code],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_unplugged_equals_qemu(unplugged: Stopped, tmp_path: Path) -> None:
    out = ours(unplugged, tmp_path / "ours.vmcore")
    assert_same_file_but_ehsize(out, unplugged.qemu_dump)
    # The DIMM is dumped; the virtio-mem device, with nothing plugged, is not.
    assert [s.paddr for s in loads(out)] == [0, 0xFFFC0000, 0x100000000]
    assert memory_devices(unplugged) == unplugged.hmp
    assert 'Memory device [virtio-mem]: "vm0"' in unplugged.hmp
    assert 'Memory device [dimm]: "dimm1"' in unplugged.hmp


def test_plugged_equals_qemu(plugged: Stopped, tmp_path: Path) -> None:
    out = ours(plugged, tmp_path / "ours.vmcore")
    assert_same_file_but_ehsize(out, plugged.qemu_dump)
    # The plugged blocks are in it: beyond RAM and below 4 GiB, the device.
    assert sum(s.filesz for s in loads(out) if s.paddr >= 0x100000000) == PLUG
    assert memory_devices(plugged) == plugged.hmp
    assert f"  size: {PLUG}\n" in plugged.hmp
