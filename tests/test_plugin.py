"""
The drgn plugin: %qemu in drgn's REPL and through drgn.commands.run_command,
checked against QEMU's own human monitor for the same stopped process.
"""

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from fixture_programs import GetCore
from harness import SERIES, QemuGuest, qemu_binary
from vmcore import assert_same_file_but_ehsize

DRGN = str(Path(sys.executable).parent / "drgn")


def run_commands(core: Path, binary: Path, *commands: str) -> str:
    code = "from drgn.commands import run_command\n" + "".join(
        f"run_command(prog, {c!r})\n" for c in commands
    )
    r = subprocess.run([DRGN, "-q", "-c", str(core), "-s", str(binary), "-e", code],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module", params=SERIES, ids=lambda s: f"qemu{s}")
def monitored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[str, Path, Path, QemuGuest, str, str]]:
    series = request.param
    binary = qemu_binary(series)
    work = tmp_path_factory.mktemp(f"plugin{series}")
    guest = QemuGuest(binary, work, "tcg", memory="512M", smp=2).start()
    try:
        guest.stop()
        ramblock = guest.hmp("info ramblock").replace("\r\n", "\n")
        cpus = guest.hmp("info cpus").replace("\r\n", "\n")
        core = guest.gcore(work / "qemu.core")
        yield series, binary, core, guest, ramblock, cpus
    finally:
        guest.close()
        (work / "qemu.core").unlink(missing_ok=True)


def test_ramblocks_equal_hmp(monitored: Tuple[str, Path, Path, QemuGuest, str, str]) -> None:
    series, binary, core, _, ramblock, _ = monitored
    ours = run_commands(core, binary, "qemu ramblocks")
    assert "pc.ram" in ours
    if series == "10.0":
        assert ours == ramblock
    else:
        # QEMU 7.2 prints no HVA and RO columns (ours always does, as 10.0):
        # compare the columns it has.
        assert [line[:91] for line in ours.splitlines()] == ramblock.splitlines()


def test_cpus_equal_hmp(monitored: Tuple[str, Path, Path, QemuGuest, str, str]) -> None:
    _, binary, core, _, _, cpus = monitored
    ours = run_commands(core, binary, "qemu cpus")
    assert ours == cpus
    assert ours.count("CPU #") == 2


def test_dump_command_equals_console_command(
    monitored: Tuple[str, Path, Path, QemuGuest, str, str], tmp_path: Path
) -> None:
    _, binary, core, guest, _, _ = monitored
    theirs = guest.dump(tmp_path / "qemu.vmcore")
    out = tmp_path / "repl.vmcore"
    text = run_commands(core, binary, f"qemu dump-guest-memory -q {out}")
    assert text == ""
    assert_same_file_but_ehsize(out, theirs)
    # Errors are one line, not a traceback.
    text = run_commands(core, binary, f"qemu dump-guest-memory -q {out}")
    assert text.strip() == f"%qemu: error: output {out} already exists; use --force to overwrite it"


def test_not_enabled_for_other_programs(cored: GetCore) -> None:
    c = cored("not_qemu")
    r = subprocess.run(
        [DRGN, "-q", "-c", str(c.core), "-s", str(c.binary), "-e",
         "from drgn.commands import run_command\nrun_command(prog, 'qemu cpus')"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode != 0
    assert "CommandNotFoundError" in r.stderr and "qemu" in r.stderr


def test_repl(monitored: Tuple[str, Path, Path, QemuGuest, str, str]) -> None:
    """%qemu typed at drgn's interactive prompt (a pseudo-terminal)."""
    _, binary, core, _, _, cpus = monitored
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(DRGN, [DRGN, "-q", "-c", str(core), "-s", str(binary)])
    output = b""

    def read_until(token: bytes, timeout: float = 60) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while token not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([fd], [], [], 1)[0]:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    break

    try:
        read_until(b">>> ")
        os.write(fd, b"%qemu cpus\n")
        read_until(b"thread_id=", 30)
        read_until(b">>> ", 30)
        os.write(fd, b"exit()\n")
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    for line in cpus.splitlines():
        assert line in text
