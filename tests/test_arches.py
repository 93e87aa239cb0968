"""
Guest architectures other than x86: a stopped guest of our debug
qemu-system-aarch64 (QEMU 10.0, TCG, -machine virt -cpu cortex-a57, no
firmware, two vCPUs, a blob of known bytes loaded into RAM), dumped by QEMU
over QMP and by drgn-qemu from a gcore of the process: the ELF vmcore is
QEMU's byte for byte but for e_ehsize, notes included, and the kdump-zlib
file QEMU's kdump-raw-zlib but for utsname.machine.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from harness import QemuGuest, cross_qemu_binary, drgn_qemu_command, write_blob
from kdump_reader import assert_pages_equal_elf, assert_same_kdump_but_machine, open_kdump
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, elf_header, loads, notes, read_phys

BLOB = (0x40100000, 1 << 20, 5)


@dataclass
class Stopped:
    binary: Path
    core: Path
    elf: Path
    kdump: Path
    blob: bytes


@pytest.fixture(scope="module")
def aarch64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    binary = cross_qemu_binary("aarch64")
    work = tmp_path_factory.mktemp("aarch64")
    addr, size, seed = BLOB
    blob = write_blob(work / "blob.bin", size, seed)
    extra = [
        "-cpu",
        "cortex-a57",
        "-device",
        f"loader,file={work / 'blob.bin'},addr={addr:#x},force-raw=on",
    ]
    with QemuGuest(binary, work, memory="256M", machine="virt", machine_opts="dump-guest-core=on",
                   extra_args=extra, smp=2) as guest:  # fmt: skip
        time.sleep(0.5)
        guest.stop()
        elf = guest.dump(work / "qemu.vmcore")
        kdump = guest.dump(work / "qemu.kdump", format="kdump-raw-zlib")
        core = guest.gcore(work / "qemu.core")
    yield Stopped(binary, core, elf, kdump, blob)
    for p in work.iterdir():
        p.unlink()


def dump(s: Stopped, out: Path, *extra: str) -> str:
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(s.core), "-s", str(s.binary),
             *extra, str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_aarch64_elf_equals_qemu(aarch64: Stopped, tmp_path: Path) -> None:
    out = tmp_path / "ours.vmcore"
    stdout = dump(aarch64, out)
    header = elf_header(out)
    assert header["e_machine"] == "EM_AARCH64"
    assert header["e_ident"]["EI_CLASS"] == "ELFCLASS64"
    assert header["e_ident"]["EI_DATA"] == "ELFDATA2LSB"
    # virt: RAM at 1 GiB; the flash is a ROM device, not dumped.
    assert [(s.paddr, s.filesz) for s in loads(out)] == [(0x40000000, 256 << 20)]
    # Per vCPU: NT_PRSTATUS (392 bytes), NT_PRFPREG (528 bytes).
    ours = notes(out)
    assert [(n, t, len(d)) for n, t, d in ours] == [("CORE", 1, 392), ("CORE", 2, 528)] * 2
    assert ours == notes(aarch64.elf)
    assert_same_file_but_ehsize(out, aarch64.elf)
    addr, size, _ = BLOB
    assert read_phys(out, addr, size) == aarch64.blob
    assert "AArch64 EL1" in stdout and "wrote " in stdout and "aarch64 vmcore" in stdout


def test_aarch64_arch_given(aarch64: Stopped, tmp_path: Path) -> None:
    out = tmp_path / "ours.vmcore"
    dump(aarch64, out, "-q", "--arch", "aarch64")
    assert_same_file_but_ehsize(out, aarch64.elf)
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(aarch64.core), "-s",
             str(aarch64.binary), "--arch", "x86_64", str(tmp_path / "x")])  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert (
        "--arch x86_64: this QEMU's debug info has no x86_64 vCPU type (it is one for "
        "aarch64 guests)" in r.stderr
    )
    assert not (tmp_path / "x").exists()


def test_aarch64_kdump_equals_qemu(aarch64: Stopped, tmp_path: Path) -> None:
    out = tmp_path / "ours.kdump"
    dump(aarch64, out, "-q", "--format", "kdump-zlib")
    k = open_kdump(out)
    # QEMU's choices for AArch64: 64 KiB pages, phys_base the lowest RAM address.
    assert k.block_size == 65536 and k.sub["phys_base"] == 0x40000000
    assert_same_kdump_but_machine(out, aarch64.kdump, "aarch64")
    assert assert_pages_equal_elf(k, aarch64.elf)["pages"] == (256 << 20) // 65536
