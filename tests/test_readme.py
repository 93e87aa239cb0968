"""
The README is true to the tool: its two set-up commands exist, and its
console and Errors transcripts are what drgn-qemu prints today, rerun on a
guest of the test's own (the demo's: 768 MiB pc, stopped in SeaBIOS) and
compared but for host addresses, the instruction pointer and times; also its first REPL
session, typed into drgn's REPL on a pseudo-terminal, and its usage block.
"""

import os
import re
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from harness import DRGN, REPO, QemuGuest, drgn_qemu_command, qemu_binary

README = (REPO / "README.md").read_text()


def transcripts(section: str) -> List[Tuple[str, List[str]]]:
    """``(command, output lines)`` of each ``$ `` line of the code blocks of a section."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    out: List[Tuple[str, List[str]]] = []
    fence = None  # the opening fence of the block we are in
    for line in body.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line
        elif fence == "```" and line.startswith("$ "):
            out.append((line[2:], []))
        elif fence == "```" and out and out[-1][0] is not None:
            out[-1][1].append(line)
    return out


#: What the package archive serves on the day a machine is set up, which a
#: transcript recorded on another day cannot hold: the guest kernel's release
#: (Debian publishes a new 6.1 or 6.12 build every few weeks, and
#: scripts/fetch-kernel.sh takes the newest), the build cache's directory
#: (named after a hash of the build recipe), QEMU's point release in a suite
#: and the compiler's Debian revision.
FACTS_OF_THE_DAY = [
    (r"\b\d+\.\d+\.\d+(?:-\d+)?(?:\+deb\d+)?-(?:cloud-amd64|cloud-arm64|686-pae|amd64|arm64)\b",
     "RELEASE"),
    (r"(?:~|/root|/home/[^/\s]+)/\.cache/drgn-qemu/[^/\s]+/", "CACHE/"),
    (r"\bversion \d+\.\d+\.\d+\b", "version V"),
    (r"GCC: \(Debian [^)]*\) [\d.]+", "GCC: (Debian V) V"),
    # drgn's greeting: the drgn PyPI serves, and the libraries it was built with.
    (r"^drgn \d+\.\d+\.\d+ \(using .*\)$", "drgn V (using ...)"),
]  # fmt: skip


def normalized(lines: List[str]) -> List[str]:
    """Lines without what differs from run to run, or from one day's package archive to another's."""
    out = []
    for line in lines:
        line = re.sub(r"0x00007[ef][0-9a-f]{10}", "HOST", line)
        line = re.sub(r"rip=0x[0-9a-f]+", "rip=IP", line)
        line = re.sub(r"in \d+\.\d+ s \(\d+ MiB/s\)", "in T s (R MiB/s)", line)
        line = re.sub(r"^wrote \S+:", "wrote OUT:", line)
        for pattern, replacement in FACTS_OF_THE_DAY:
            line = re.sub(pattern, replacement, line)
        out.append(line)
    return out


def test_two_setup_commands() -> None:
    first = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first is not None and README.index(first.group()) < README.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    for command in commands:
        assert (REPO / command).stat().st_mode & 0o111, command


@pytest.fixture(scope="module")
def demo_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Path, Path]]:
    binary = qemu_binary("10.0")  # the demo's QEMU, as the README shows it
    work = tmp_path_factory.mktemp("readme")
    with QemuGuest(binary, work) as guest:  # the demo's guest
        # SeaBIOS idle in real mode, where it stays (see test_plugin.py).
        guest.stop_when("info registers", lambda text: "CS =f000 000f0000 " in text)
        core = guest.gcore(work / "qemu.core")
    yield binary, core
    core.unlink()


def test_console_transcript(demo_core: Tuple[Path, Path], tmp_path: Path) -> None:
    binary, core = demo_core
    ((command, expected),) = transcripts("Running it")[:1]
    assert command.startswith("drgn-qemu dump-guest-memory -c ")
    r = subprocess.run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(core), "-s",
                        str(binary), str(tmp_path / "guest.vmcore")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout
    assert normalized(r.stdout.splitlines()) == normalized(expected)


def test_errors_transcript(demo_core: Tuple[Path, Path], tmp_path: Path) -> None:
    binary, core = demo_core
    runs = transcripts("Errors")
    assert [c.split()[:3] for c, _ in runs] == [["drgn-qemu", "dump-guest-memory", "-c"]] * 2
    (tmp_path / "guest.vmcore.txt").write_text("not a core\n")
    (tmp_path / "qemu.core").symlink_to(core)
    (tmp_path / "guest.vmcore").write_bytes(b"")
    for command, expected in runs:
        args = command.split()[1:]
        r = subprocess.run([*drgn_qemu_command(), *args, "-s", str(binary)], cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 1
        assert r.stdout.splitlines() + r.stderr.splitlines() == expected


def test_usage_is_the_tools() -> None:
    """The README's usage block is what --help prints (at 80 columns)."""
    block = re.search(r"```\n(usage: drgn-qemu dump-guest-memory.*?)\n```", README, re.S)
    assert block is not None
    r = subprocess.run([*drgn_qemu_command(), "dump-guest-memory", "--help"], capture_output=True,
                       text=True, env=dict(os.environ, COLUMNS="80"))  # fmt: skip
    assert r.returncode == 0
    assert r.stdout.split("\n\n")[0] == block.group(1)


def repl(command: List[str], lines: List[str], cwd: Path, timeout: float = 300) -> str:
    """Run *lines* in drgn's interactive REPL on a pseudo-terminal; what it printed."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    env = dict(os.environ, TERM="dumb", COLUMNS="200")
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    out = b""

    def read_until_prompt(prompts: int) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout  # only ends a REPL that hangs
        while not (out.count(b">>> ") >= prompts and out.endswith(b">>> ")):
            assert time.monotonic() < deadline, out[-2000:]
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 1 << 16)

    try:
        read_until_prompt(1)
        for line in lines:
            os.write(master, line.encode() + b"\n")
            read_until_prompt(out.count(b">>> ") + 1)
        os.write(master, b"\x04")
        proc.wait(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_repl_transcript(demo_core: Tuple[Path, Path], tmp_path: Path) -> None:
    """The first REPL session of the README, typed into drgn's REPL."""
    binary, core = demo_core
    marker = "\n### In drgn's REPL: `%qemu`\n"
    got, session = repl_session(marker, "$ drgn -q -c qemu.core", binary, core, tmp_path)

    def norm(text: str) -> List[str]:
        return [
            re.sub(r"thread_id=\d+", "thread_id=N", line) for line in normalized(text.splitlines())
        ]

    assert norm(got) == norm("\n".join(session))


def repl_session(
    marker: str, command: str, binary: Path, core: Path, cwd: Path
) -> Tuple[str, List[str]]:
    """
    The README's REPL session after *marker* (started with *command*), typed
    into drgn's REPL on *core* with *binary* in *cwd*: what drgn printed
    from the first input on, and the session's lines. drgn's own greeting
    and imports are checked here.
    """
    body = README.split(marker, 1)[1]
    block = body.split("```\n", 2)[1]
    first, *session = block.rstrip("\n").splitlines()
    assert first == command
    banner, session = split_banner(session)
    inputs = [line[4:] for line in session if line.startswith(">>> ")]
    (cwd / "qemu.core").symlink_to(core)
    got = repl([DRGN, "-q", "-c", "qemu.core", "-s", str(binary)], inputs, cwd)
    at = got.index(">>> " + inputs[0])
    assert normalized(got[:at].rstrip("\n").splitlines()) == normalized(banner)
    return got[at:].rstrip("> \n"), session


def split_banner(session: List[str]) -> Tuple[List[str], List[str]]:
    """A README REPL session's drgn greeting (to its last import line), and the rest."""
    assert session[0].startswith("drgn 0.") and session[1] == "For help, type help(drgn)."
    end = session.index(">>> from drgn.helpers.common import *") + 1
    return session[:end], session[end:]


def test_transcript_comparison_ignores_facts_of_the_day() -> None:
    """
    A transcript recorded with one day's kernel release and build cache still
    matches a run with another day's; a different guest-RAM table does not.
    """
    from test_linux_guest import _vary

    body = README.split("\n### A real Linux guest, into drgn and crash\n", 1)[1]
    recorded = body.split("```\n", 2)[1].splitlines()
    release = "6.1.0-56-cloud-amd64"
    assert any(release in line for line in recorded)
    for other in ("6.1.0-57-cloud-amd64", "6.1.0-123-cloud-amd64", "6.12.57+deb12-cloud-amd64"):
        today = [line.replace(release, other) for line in recorded]
        assert today != recorded
        assert _vary(today) == _vary(recorded), other
    # The build cache's directory is named after a hash of the build recipe:
    # a run on one day's build and on another's compare equal.
    info = README.split("\n### Triage a crashed QEMU: `info`\n", 1)[1].split("```\n", 2)[1]
    assert "/usr/bin/qemu-system-x86_64" in info

    def run_on(build: str) -> List[str]:
        return info.replace("/usr/bin/", f"/root/.cache/drgn-qemu/{build}/").splitlines()

    recorded = run_on("qemu-10.2-25be1a043834")
    for other in ("qemu-10.2-0123456789ab", "qemu-10.2-ffffffffffff"):
        today = run_on(other)
        assert today != recorded
        assert normalized(today) == normalized(recorded), other
    # What the guest is made of is not a fact of the day.
    table = [n for n, line in enumerate(recorded) if line.startswith("0x0000000000000000 ")]
    assert table
    for change in (("128 MiB", "256 MiB"), ("pc.ram", "pc.rom"), ("core ", "file ")):
        today = list(recorded)
        today[table[0]] = today[table[0]].replace(*change)
        assert today != recorded
        assert normalized(today) != normalized(recorded), change
    # Nor is the kernel's release a wildcard for any text.
    linux = body.split("```\n", 2)[1].splitlines()
    today = [line.replace(release, "6.1.0-56-cloud-amd64-extra") for line in linux]
    assert _vary(today) != _vary(linux)
