"""
``dump-guest-memory --paging`` against QMP's ``paging=true`` on the same
stopped guest, byte for byte: Linux guests with 2 vCPUs in 4-level paging
(QEMU 7.2, 10.0, 10.2), 5-level paging (``-cpu max,la57=on``, CR4.LA57
checked), the whole memory and a begin/length window; a guest still in its
firmware (no paging: QEMU's identity fallback). gdb, which knows nothing of
Linux, reads the guest kernel's release from our file as from QEMU's.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from harness import QemuGuest, drgn_qemu_command, qemu_binary
from linux_guest import boot_linux, fetch_kernel
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, loads, notes

#: A window that cuts mappings at both ends (the kernel's image is above it).
BEGIN, LENGTH = 0x1234000, 0x3000000


@dataclass
class PagingCase:
    name: str
    binary: Path
    core: Path
    #: QMP's paging=true, whole and windowed.
    theirs: Path
    theirs_window: Path
    cr4: int
    vmlinux: Path
    release: str
    #: Booted with nokaslr: the kernel runs at its link address.
    nokaslr: bool = False


CASES = [
    # (name, QEMU series, kernel series, -cpu, nokaslr)
    ("qemu10.0-linux6.1", "10.0", "6.1", None, True),
    ("qemu10.0-linux6.12-la57", "10.0", "6.12", "max,la57=on", False),
    ("qemu7.2-linux6.1", "7.2", "6.1", None, False),
    ("qemu10.2-linux6.12", "10.2", "6.12", None, False),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c[0])
def paging_case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PagingCase]:
    name, series, kernel_series, cpu, nokaslr = request.param
    binary = qemu_binary(series)
    kernel = fetch_kernel(kernel_series)
    work = tmp_path_factory.mktemp(name)
    extra = ["-cpu", cpu] if cpu else []
    guest = boot_linux(binary, work, kernel, True, memory="512M", extra_args=extra, smp=2,
                       cmdline="nokaslr" if nokaslr else "")  # fmt: skip
    try:
        guest.stop()
        cr4 = int(re.search(r"CR4=([0-9a-f]+)", guest.hmp("info registers")).group(1), 16)  # type: ignore[union-attr]
        theirs = guest.dump(work / "qemu.vmcore", paging=True)
        window = guest.dump(work / "qemu-window.vmcore", paging=True, begin=BEGIN, length=LENGTH)
        core = guest.gcore(work / "qemu.core")
    finally:
        guest.close()
    yield PagingCase(
        name, binary, core, theirs, window, cr4, kernel.vmlinux, kernel.release, nokaslr
    )
    for p in work.iterdir():
        p.unlink()


def _ours(c: PagingCase, out: Path, *args: str) -> Path:
    r = run([*drgn_qemu_command(), "dump-guest-memory", "--paging", *args, "-c", str(c.core),
             "-s", str(c.binary), str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_paging_equals_qmp(paging_case: PagingCase, tmp_path: Path) -> None:
    c = paging_case
    la57 = bool(c.cr4 & (1 << 12))
    assert la57 == c.name.endswith("la57")
    ours = _ours(c, tmp_path / "ours.vmcore")
    assert_same_file_but_ehsize(ours, c.theirs)
    mapped = loads(ours)
    # Many mappings, with virtual addresses: the page walk happened.
    assert len(mapped) > 20 and any(x.vaddr != x.paddr for x in mapped)
    # QEMU's quirk: every 4-level address carries bits 63:48, 5-level 63:57.
    top = 0x7F << 57 if la57 else 0xFFFF << 48
    assert all(x.vaddr & top == top for x in mapped if x.vaddr != x.paddr)


def test_paging_window_equals_qmp(paging_case: PagingCase, tmp_path: Path) -> None:
    c = paging_case
    ours = _ours(c, tmp_path / "ours.vmcore", "--begin", hex(BEGIN), "--length", hex(LENGTH))
    assert_same_file_but_ehsize(ours, c.theirs_window)
    assert all(BEGIN <= x.paddr < BEGIN + LENGTH for x in loads(ours))


def test_gdb_reads_the_kernel(paging_case: PagingCase, tmp_path: Path) -> None:
    """
    gdb, with the kernel's symbols only, reads its variables through the
    mappings, from ours as from QEMU's: ``gdb vmlinux VMCORE`` where the
    kernel runs at its link address (nokaslr), the symbols moved by
    VMCOREINFO's KERNELOFFSET where KASLR moved the kernel.
    """
    c = paging_case
    ours = _ours(c, tmp_path / "ours.vmcore")
    vmci = next(desc for name, _, desc in notes(ours) if name == "VMCOREINFO")
    offset = int(re.search(rb"\nKERNELOFFSET=([0-9a-f]+)\n", vmci).group(1), 16)  # type: ignore[union-attr]
    assert (offset == 0) == c.nokaslr
    for vmcore in (ours, c.theirs):
        if c.nokaslr:
            command = ["gdb", "-batch", "-nx", str(c.vmlinux), str(vmcore)]
        else:
            command = ["gdb", "-batch", "-nx", "-ex", f"symbol-file -o {offset:#x} {c.vmlinux}",
                       "-ex", f"core-file {vmcore}"]  # fmt: skip
        out = subprocess.run([*command, "-ex", "print init_uts_ns.name.release"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert f'"{c.release}' in out.stdout, out.stdout + out.stderr


def test_firmware_guest_identity(tmp_path: Path) -> None:
    """No vCPU with paging (SeaBIOS at reset): QEMU's identity mapping, 2 vCPUs."""
    binary = qemu_binary("10.0")
    with QemuGuest(binary, tmp_path, smp=2) as guest:
        guest.stop()
        theirs = guest.dump(tmp_path / "qemu.vmcore", paging=True)
        core = guest.gcore(tmp_path / "qemu.core")
    case = PagingCase("firmware", binary, core, theirs, theirs, 0, Path(), "")
    ours = _ours(case, tmp_path / "ours.vmcore")
    assert_same_file_but_ehsize(ours, theirs)
    assert all(x.vaddr == x.paddr for x in loads(ours))
