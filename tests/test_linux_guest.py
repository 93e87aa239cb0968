"""
A real Linux guest (Debian's 6.1 and 6.12 cloud kernels, KASLR on, TCG)
under our debug QEMU: QEMU's own QMP dump is the reference, and drgn-qemu's
vmcore from a gcore of QEMU must open in drgn (release, the test's named
task) and crash (sys, ps) exactly as QEMU's does; with -device vmcoreinfo the
two files are identical but for e_ehsize, and without it ours still carries
the VMCOREINFO, found in guest RAM, that QEMU's lacks.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from harness import drgn_qemu_command, qemu_binary
from linux_guest import CANARY, Kernel, boot_linux, crash_output, drgn_kernel_facts, fetch_kernel
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, assert_same_memory, elf_header, notes


@dataclass
class LinuxDump:
    kernel: Kernel
    device: bool
    ours: Path
    theirs: Path
    stdout: str
    stderr: str


def cases() -> List[Tuple[str, str, bool]]:
    """(QEMU series, kernel series, -device vmcoreinfo)."""
    return [
        ("10.0", "6.1", True),
        ("10.0", "6.1", False),
        ("10.0", "6.12", True),
        ("10.0", "6.12", False),
        ("7.2", "6.1", True),
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
        theirs = guest.dump(work / "qemu.vmcore")
        core = guest.gcore(work / "qemu.core")
    finally:
        guest.close()
    ours = work / "ours.vmcore"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(core), "-s", str(binary),
             str(ours)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    core.unlink()
    yield LinuxDump(kernel, device, ours, theirs, r.stdout, r.stderr)
    ours.unlink()
    theirs.unlink()


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


def test_crash_opens_it(linux_dump: LinuxDump) -> None:
    d = linux_dump
    ours = crash_output(d.ours, d.kernel.vmlinux).replace(str(d.ours), "VMCORE")
    theirs = crash_output(d.theirs, d.kernel.vmlinux).replace(str(d.theirs), "VMCORE")
    if d.kernel.release.startswith("6.1.0-"):
        assert f"RELEASE: {d.kernel.release}" in ours
        assert re.search(r"^\s+PID\s+PPID\s+CPU\s+TASK", ours, re.M)
    else:
        # Debian's crash 8.0.2 cannot load 6.12 kernels at all, QEMU's own
        # dump included. Without the device only ours has VMCOREINFO, which
        # takes crash further before it gives up, so the outputs differ.
        assert "RELEASE:" not in ours and "RELEASE:" not in theirs
        if not d.device:
            return
    # Only the DUMPFILE line may differ.
    strip = re.compile(r"^\s*DUMPFILE: .*$", re.M)
    assert strip.sub("", ours) == strip.sub("", theirs)
