"""
drgn-qemu info: a QEMU made to crash (abort() called through gdb, cored by
gcore as the signal lands) and a hung, paused QEMU read live (-p), checked
against what QEMU and the kernel say of the same process.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from harness import DRGN, SERIES, QemuGuest, drgn_qemu_command, qemu_binary


def info(*args: str) -> Tuple[str, dict]:  # type: ignore[type-arg]
    text = subprocess.run([*drgn_qemu_command(), "info", *args], capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    doc = subprocess.run([*drgn_qemu_command(), "info", "--json", *args], capture_output=True,
                         text=True)  # fmt: skip
    assert doc.returncode == 0, doc.stderr
    return text.stdout, json.loads(doc.stdout)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Path, Path, int]]:
    binary = qemu_binary(SERIES[-1])
    work = tmp_path_factory.mktemp("crashed")
    guest = QemuGuest(binary, work, memory="128M").start()
    try:
        # SeaBIOS idle in real mode (see test_plugin.py): its memory map is
        # settled then (before, the ROMs below 1 MiB are regions of their own).
        guest.stop_when("info registers", lambda text: "CS =f000 000f0000 " in text)
        pid = guest.pid
        core = work / "qemu.core"
        # abort() in QEMU's main thread: gdb stops at the SIGABRT, gcore
        # writes the core with it, as the kernel would for a crash.
        subprocess.run(["gdb", "-nx", "-batch", "-p", str(pid), "-ex", "call (void)abort()",
                        "-ex", f"gcore {core}", "-ex", "kill"], capture_output=True,
                       check=True)  # fmt: skip
    finally:
        guest.close()
    yield binary, core, pid
    core.unlink()


def test_crashed_qemu(crashed: Tuple[Path, Path, int]) -> None:
    binary, core, pid = crashed
    text, doc = info("-c", str(core), "-s", str(binary))
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]  # fmt: skip
    assert version == f"QEMU emulator version {doc['qemu']['version']}"
    assert f"version {doc['qemu']['version']}" in text
    # How it was built: Debian's gcc (the .comment of the binary, as readelf
    # -p .comment shows it), both accelerators of our builds, its debug info.
    comment = subprocess.run(["readelf", "-p", ".comment", str(binary)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    build = doc["qemu"]["build"]
    assert build["compiler"].startswith("GCC: (Debian") and build["compiler"] in comment
    assert {"kvm", "tcg"} <= set(build["accelerators"])
    assert build["debug_info"] == str(binary)
    assert f"built with: {build['compiler']}; accelerators: " in text
    assert doc["machine"].startswith("pc-i440fx-") and doc["accelerator"] == "tcg"
    assert doc["run_state"] == "paused"  # QMP stop, before the crash
    assert f"machine: {doc['machine']}, accelerator: tcg, run state: paused" in text
    # The signal and the thread it hit: QEMU's main thread, whose tid is its pid.
    assert doc["crash"]["signal"] == 6 and doc["crash"]["name"] == "SIGABRT"
    assert doc["crash"]["thread"] == pid and pid in doc["threads"]
    assert f"crash: signal 6 (SIGABRT) in thread {pid}" in text
    assert re.search(r"^#\d+ +abort ", doc["crash"]["backtrace"], re.M)
    assert doc["crash"]["backtrace"].rstrip("\n") in text
    # What a dump would contain.
    assert doc["dump"]["possible"] is True
    assert [b["memory_region"] for b in doc["dump"]["blocks"]] == ["pc.ram", "pc.bios"]
    assert doc["dump"]["vmcoreinfo"] is None and "VMCOREINFO: none" in text
    assert "dump: possible, 128.2 MiB of guest memory" in text
    # The same in the REPL's %qemu info.
    r = subprocess.run([DRGN, "-q", "-c", str(core), "-s", str(binary), "-e",
                        "from drgn.commands import run_command\nrun_command(prog, 'qemu info')"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == text


def test_hung_qemu_live(tmp_path: Path) -> None:
    """A paused QEMU read live: its run state and threads, no crash."""
    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, tmp_path, memory="128M") as guest:
        guest.stop()
        text, doc = info("-p", str(guest.pid), "-s", str(binary))
        tids = sorted(int(t) for t in os.listdir(f"/proc/{guest.pid}/task"))
    assert doc["run_state"] == "paused" and doc["crash"] is None
    assert doc["threads"] == tids
    assert f"threads: {len(tids)} (" in text and "crash: none" in text
    assert doc["dump"]["possible"] is True


def test_info_without_guest_ram(tmp_path: Path) -> None:
    """dump-guest-core=off: info says the dump is not possible, and why."""
    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, tmp_path, memory="128M", machine_opts="dump-guest-core=off") as guest:
        guest.stop()
        core = guest.gcore(tmp_path / "qemu.core")
    text, doc = info("-c", str(core), "-s", str(binary))
    assert doc["dump"]["possible"] is False
    error = doc["dump"]["error"]
    assert "QEMU ran with -machine dump-guest-core=off" in error
    assert f"dump: not possible: {error}" in text
    # All the rest is shown: machine, the vCPUs, and every block, each missing.
    assert doc["machine"].startswith("pc-i440fx-") and doc["run_state"] == "paused"
    blocks = doc["dump"]["blocks"]
    names = [b["memory_region"] for b in blocks]
    assert names[0] == "pc.ram" and names[-1] == "pc.bios", names
    assert {b["source"] for b in blocks} == {"missing"}
    assert [c["index"] for c in doc["dump"]["vcpus"]] == [0]
    assert "\nvCPUs:\n  0: " in text and text.count(" missing  ") == len(blocks)
    # The error names every block, the first with its reason.
    assert error.startswith("guest RAM pc.ram ") and error.endswith(
        f"; also missing: {', '.join(names[1:])}; or pass --skip-missing to dump the rest"
    )


def test_kernel_written_crash_core(tmp_path: Path, plain_core_pattern: str) -> None:
    """
    A QEMU killed by SIGABRT and cored by the kernel (RLIMIT_CORE
    unlimited, core_pattern a file), as a real crash is: the signal, the
    thread it hit (QEMU's main thread, which does not block it) and that
    thread's frames in QEMU's main loop.
    """
    import signal

    binary = qemu_binary(SERIES[-1])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with QemuGuest(binary, tmp_path, memory="128M", cwd=cwd, core_limit=True) as guest:
        guest.stop_when("info registers", lambda text: "CS =f000 000f0000 " in text)
        pid = guest.pid
        # The main thread back asleep in the main loop (the monitor's
        # coroutine done with our last command): a state the test sees.
        stat = Path(f"/proc/{pid}/task/{pid}/stat")
        deadline = time.monotonic() + 600  # only ends a QEMU that never idles
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "S":
            assert time.monotonic() < deadline, "QEMU's main thread never went idle"
            time.sleep(0.01)
        assert guest.proc is not None
        guest.proc.send_signal(signal.SIGABRT)
        guest.proc.wait()
    (core,) = cwd.iterdir()
    text, doc = info("-c", str(core), "-s", str(binary))
    assert doc["crash"]["signal"] == 6 and doc["crash"]["name"] == "SIGABRT"
    assert doc["crash"]["thread"] == pid and pid in doc["threads"]
    assert f"crash: signal 6 (SIGABRT) in thread {pid}" in text
    # The main thread's frames: where it was, in the main loop or in a
    # coroutine it was running (both seen), unwound from the kernel's notes.
    bt = doc["crash"]["backtrace"]
    assert re.search(r"^#0 +\w+ \(", bt, re.M) and "(no backtrace" not in bt, bt
    assert re.search(r"^#\d+ +(main|qemu_main|qemu_default_main|main_loop_wait|qemu_poll_ns|"
                     r"os_host_main_loop_wait|coroutine_trampoline|qemu_coroutine_switch)\b",
                     bt, re.M), bt  # fmt: skip
    assert doc["run_state"] == "paused" and doc["dump"]["possible"] is True


def test_readme_transcript(crashed: Tuple[Path, Path, int]) -> None:
    """The README's info transcript is what info prints for the same kind of crash."""
    from test_readme import README, normalized

    binary, core, _ = crashed
    body = README.split("\n### Triage a crashed QEMU: `info`\n", 1)[1]
    block = body.split("```\n", 2)[1]
    command, *expected = block.rstrip("\n").splitlines()
    assert command.startswith("$ drgn-qemu info -c qemu.core -s ")
    text, _ = info("-c", str(core), "-s", str(binary))

    def norm(lines: List[str]) -> List[str]:
        out = []
        for line in normalized(lines):
            if re.match(r"#\d+ +0x[0-9a-f]+$", line):
                continue  # gdb's own frames past abort(): addresses of the moment
            line = re.sub(r"\S*/qemu-system-x86_64", "QEMU", line)
            line = re.sub(r"build ID [0-9a-f]+", "build ID B", line)
            line = re.sub(r"0x7f[0-9a-f]{10}", "ADDR", line)
            if line.startswith(("threads:", "crash:", "Thread ")):
                line = re.sub(r"\b\d{2,}\b", "T", line)
            out.append(line)
        return out

    assert norm(text.splitlines()) == norm(expected)


def test_readme_json_has_the_tools_fields(crashed: Tuple[Path, Path, int]) -> None:
    """The README's info --json example has the fields the tool prints, no more, no fewer."""
    from test_readme import README

    binary, core, _ = crashed
    body = README.split("`--json` gives the same as one object", 1)[1]
    readme_doc = json.loads(body.split("```\n", 2)[1].split("\n", 1)[1])
    _, doc = info("-c", str(core), "-s", str(binary))

    def keys(value: object, path: str = "") -> set:  # type: ignore[type-arg]
        if isinstance(value, dict):
            return {f"{path}/{k}" for k in value} | {
                key for k, v in value.items() for key in keys(v, f"{path}/{k}")
            }
        if isinstance(value, list) and value:
            return keys(value[0], path + "[]")
        return set()

    # The README's example is of a QEMU that did not crash: "crash" is null there.
    assert keys(readme_doc) == keys(doc) - {k for k in keys(doc) if k.startswith("/crash/")}
