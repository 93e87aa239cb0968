"""
Dumps of a running QEMU (-p), consistent as QMP's: a guest kernel of a few
instructions (multiboot, loaded by QEMU's -kernel) counts in a loop and
stores the count in two pages, A at 2 MiB then B at 240 MiB; drgn-qemu reads
A long before B. With QEMU's threads stopped for the dump, A and B come from
one moment: equal, or A one ahead (stopped between the two stores). After
the dump QEMU runs on (the count moves again, no tracer left); a QEMU that
was stopped (SIGSTOP) stays stopped; a dumper killed mid-dump leaves it
running. KVM where usable, else TCG.
"""

import os
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest
from harness import SERIES, QemuGuest, drgn_qemu_command, kvm_usable, qemu_binary
from vmcore import read_phys

LOAD = 0x100000
A, B = 0x200000, 0xF000000
RANDOM = 0x1000000  # 64 MiB of random bytes from here: a dump that takes a while


def multiboot_kernel(path: Path) -> None:
    """A multiboot image (the a.out kludge: flags bit 16) whose entry counts forever."""
    magic, flags = 0x1BADB002, 0x00010000
    header = struct.pack("<8I", magic, flags, -(magic + flags) & 0xFFFFFFFF, LOAD, LOAD, 0, 0,
                         LOAD + 32)  # fmt: skip
    code = (
        b"\x41"  # inc ecx
        + b"\x89\x0d"
        + struct.pack("<I", A)  # mov [A], ecx
        + b"\x89\x0d"
        + struct.pack("<I", B)  # mov [B], ecx
        + b"\xeb\xf1"  # jmp back to inc ecx
    )
    path.write_bytes(header + code)


@dataclass
class Counting:
    guest: QemuGuest
    binary: Path
    work: Path

    def count(self, addr: int) -> int:
        text = self.guest.hmp(f"xp /1wx {addr:#x}")
        return int(text.split(":")[1].split()[0], 16)

    def wait_counting(self, past: int = 0) -> int:
        """Wait until the count at A is past *past* (it runs), and return it."""
        deadline = time.monotonic() + 600
        while (n := self.count(A)) == past or n == 0:
            assert time.monotonic() < deadline, "the guest does not count"
            time.sleep(0.05)
        return n

    def dump(self, out: Path, *extra: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([*drgn_qemu_command(), "dump-guest-memory", "-p",
                               str(self.guest.pid), "-s", str(self.binary), *extra, str(out)],
                              capture_output=True, text=True)  # fmt: skip


def thread_states(pid: int) -> List[str]:
    """State letter and TracerPid of each thread of *pid*."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out.append(fields["State"].split()[0] + fields["TracerPid"].strip())
    return out


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 600
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def counting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Counting]:
    work = tmp_path_factory.mktemp("live")
    binary = qemu_binary(SERIES[-1])
    multiboot_kernel(work / "count.mb")
    (work / "random.bin").write_bytes(os.urandom(64 << 20))
    extra = [
        "-kernel",
        str(work / "count.mb"),
        "-device",
        f"loader,file={work / 'random.bin'},addr={RANDOM:#x},force-raw=on",
    ]
    accel = "kvm" if kvm_usable() else "tcg"
    with QemuGuest(binary, work, accel=accel, memory="256M", machine_opts="dump-guest-core=on",
                   extra_args=extra) as guest:  # fmt: skip
        c = Counting(guest, binary, work)
        c.wait_counting()
        yield c


def test_consistent_and_running_after(counting: Counting, tmp_path: Path) -> None:
    out = tmp_path / "live.vmcore"
    r = counting.dump(out)
    assert r.returncode == 0, r.stderr
    assert "QEMU was stopped for " in r.stdout
    a, b = (struct.unpack("<I", read_phys(out, addr, 4))[0] for addr in (A, B))
    assert a > 0 and a - b in (0, 1), (a, b)
    # Let go: no tracer left on any thread, and the guest counts on.
    assert not [s for s in thread_states(counting.guest.pid) if not s.endswith("0")]
    assert counting.guest.command("query-status")["status"] == "running"  # type: ignore[index]
    counting.wait_counting(past=counting.count(A))


def test_json_says_how_long_stopped(counting: Counting, tmp_path: Path) -> None:
    import json

    r = counting.dump(tmp_path / "j.vmcore", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert 0 < doc["stopped_seconds"] <= doc["seconds"] + 1
    assert doc["was_stopped"] is False
    r = counting.dump(tmp_path / "n.vmcore", "--json", "--no-stop")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stopped_seconds"] is None


def test_stopped_qemu_stays_stopped(counting: Counting, tmp_path: Path) -> None:
    pid = counting.guest.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: all(s.startswith("T") for s in thread_states(pid)), "SIGSTOP")
        r = counting.dump(tmp_path / "s.vmcore")
        assert r.returncode == 0, r.stderr
        # What happened: it was stopped already, not stopped for the dump.
        assert "QEMU was stopped already (SIGSTOP) and stays stopped" in r.stdout
        assert "QEMU was stopped for" not in r.stdout
        a, b = (struct.unpack("<I", read_phys(tmp_path / "s.vmcore", x, 4))[0] for x in (A, B))
        assert a - b in (0, 1)
        import json

        r = counting.dump(tmp_path / "j.vmcore", "--json")
        doc = json.loads(r.stdout)
        assert doc["was_stopped"] is True and doc["stopped_seconds"] is None
        # Still stopped, by its SIGSTOP, not traced.
        assert all(s == "T0" for s in thread_states(pid)), thread_states(pid)
    finally:
        os.kill(pid, signal.SIGCONT)
    counting.wait_counting(past=counting.count(A))


def test_dumper_killed_leaves_qemu_running(counting: Counting, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # kdump-zlib of 64 MiB of random bytes on one thread: long enough to be
    # caught while writing; the kill comes once the file is being written.
    proc = subprocess.Popen([*drgn_qemu_command(), "dump-guest-memory", "-q", "-p",
                             str(counting.guest.pid), "-s", str(counting.binary), "--format",
                             "kdump-zlib", "--threads", "1", str(out_dir / "k.kdump")])  # fmt: skip
    try:
        while not list(out_dir.iterdir()) and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the dump ended before it could be killed: {proc.returncode}")
    wait_for(lambda: all(s.endswith("0") for s in thread_states(counting.guest.pid)), "detach")
    assert counting.guest.command("query-status")["status"] == "running"  # type: ignore[index]
    counting.wait_counting(past=counting.count(A))


def qmp_elf_headers(guest: QemuGuest) -> bytes:
    """
    The ELF header, program headers and notes of QEMU's own QMP dump, without
    writing guest memory anywhere: QEMU dumps into a pipe (detached, so that
    the monitor answers while it writes) and the test reads the headers, then
    closes the pipe, which ends QEMU's dump with an error.
    """
    r, w = os.pipe()
    assert guest.qmp is not None
    guest.qmp.send_fd_scm(w)
    guest.command("getfd", fdname="dump")
    os.close(w)
    guest.command("dump-guest-memory", paging=False, protocol="fd:dump", detach=True)
    data = b""
    with os.fdopen(r, "rb") as f:
        while len(data) < 64:
            data += f.read(64 - len(data))
        (phoff,) = struct.unpack_from("<Q", data, 32)
        (phnum,) = struct.unpack_from("<H", data, 56)
        need = phoff + 56 * phnum
        while len(data) < need:
            data += f.read(need - len(data))
    return data[:need]


def peak_rss_kinds(pid: int) -> Dict[str, int]:
    """The peaks (KiB) of RssAnon and RssFile of process *pid*, sampled until it exits."""
    import threading

    peak = {"RssAnon": 0, "RssFile": 0}

    def sample() -> None:
        while True:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        key, _, value = line.partition(":")
                        if key in peak:
                            peak[key] = max(peak[key], int(value.split()[0]))
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # exited, not reaped yet
            except (OSError, ValueError, IndexError):
                return
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    thread.join(timeout=900)
    return peak


def test_kernel_core_of_idle_16g_guest(tmp_path: Path, plain_core_pattern: str) -> None:
    """
    An idle 16 GiB guest's QEMU killed by SIGABRT, cored by the kernel
    (RLIMIT_CORE unlimited, core_pattern a file): the core is sparse, the
    vmcore has QMP's PT_LOADs, and our memory use stays flat.
    """
    pattern = plain_core_pattern
    binary = qemu_binary(SERIES[-1])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    accel = "kvm" if kvm_usable() else "tcg"
    with QemuGuest(binary, tmp_path, accel=accel, memory="16G", cwd=cwd, core_limit=True,
                   machine_opts="dump-guest-core=on") as guest:  # fmt: skip
        guest.stop_when("info registers", lambda text: "CS =f000 000f0000 " in text)
        headers = qmp_elf_headers(guest)
        assert guest.proc is not None
        guest.proc.send_signal(signal.SIGABRT)
        guest.proc.wait()
    cores = list(cwd.iterdir())
    assert len(cores) == 1, f"no kernel core (core_pattern {pattern!r})"
    core = cores[0]
    assert core.stat().st_size > 16 << 30 and core.stat().st_blocks * 512 < 2 << 30
    out = tmp_path / "ours.vmcore"
    proc = subprocess.Popen([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core),
                             "-s", str(binary), str(out)])  # fmt: skip
    peak = peak_rss_kinds(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    print(f"\npeak RSS of the dump: {usage.ru_maxrss >> 10} MiB; sampled peaks: anonymous "
          f"{peak['RssAnon'] >> 10} MiB, the core's mapped pages {peak['RssFile'] >> 10} MiB")  # fmt: skip
    # KiB: what the dump allocates is flat, far from the guest's 16 GiB. Its
    # peak RSS also counts the core's page-cache pages it maps, which the
    # kernel may fault in by the large folio: 87-101 MiB run alone, 362 MiB
    # and 1678 MiB in two full-suite runs, not explained yet; so the bound
    # is on anonymous memory, sampled (a sample can miss a peak, never add one).
    assert peak["RssAnon"] < 256 << 10
    (phoff,) = struct.unpack_from("<Q", headers, 32)
    (phnum,) = struct.unpack_from("<H", headers, 56)

    def loads_of(data: bytes) -> List[Tuple[int, int, int]]:
        out = []
        for i in range(phnum):
            p_type, _, _, _, paddr, filesz, memsz = struct.unpack_from(
                "<IIQQQQQ", data, phoff + 56 * i
            )
            if p_type == 1:
                out.append((paddr, filesz, memsz))
        return out

    with open(out, "rb") as f:
        ours = f.read(len(headers))
    assert loads_of(ours) == loads_of(headers)
    assert sum(filesz for _, filesz, _ in loads_of(ours)) > 16 << 30
    assert out.stat().st_blocks * 512 < 256 << 20  # zeros are holes
