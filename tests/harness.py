"""
Run real QEMU guests for tests, the demo and benchmarks: build (or find) a
debug QEMU with scripts/build-qemu.sh, start a guest with a QMP socket, stop
it, ask QEMU for its own dump, and core the process with gdb's gcore.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from qemu.qmp.legacy import QEMUMonitorProtocol

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_DIRS = ["/usr/share/seabios", "/usr/share/qemu"]
SERIES = ("7.2", "10.0", "10.2")
#: drgn's command, beside the Python running the tests.
DRGN = str(Path(sys.executable).parent / "drgn")

_binaries: Dict[str, Path] = {}


def cached_artifacts(script: str, series: str, *args: str) -> List[Path]:
    """Run scripts/SCRIPT SERIES ARGS, which makes or finds cached artifacts; their paths."""
    out = subprocess.run(
        [str(REPO / "scripts" / script), series, *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,  # a QEMU build on a loaded machine
    ).stdout
    return [Path(line) for line in out.strip().splitlines()]


def cached_artifact(script: str, series: str, *args: str) -> Path:
    """The last of :func:`cached_artifacts`."""
    return cached_artifacts(script, series, *args)[-1]


#: The other targets: QEMU 10.0 only, built with its x86_64 by one configure
#: (scripts/build-qemu.sh), which compiles their common code once.
CROSS_TARGETS = ("aarch64", "ppc64", "s390x", "riscv64", "loongarch64")
#: The series whose x86_64 is built with the other targets.
CROSS_SERIES = "10.0"


def _build(series: str) -> None:
    targets = ("x86_64", *CROSS_TARGETS) if series == CROSS_SERIES else ("x86_64",)
    for target, path in zip(targets, cached_artifacts("build-qemu.sh", series, *targets)):
        _binaries[series if target == "x86_64" else target] = path


def cross_qemu_binary(target: str) -> Path:
    """Return our debug qemu-system-TARGET (QEMU 10.0) of a non-x86 target."""
    if target not in _binaries:
        _build(CROSS_SERIES)
    return _binaries[target]


def qemu_binary(series: str) -> Path:
    """Return our debug qemu-system-x86_64 of a series, building it if missing."""
    if series not in _binaries:
        _build(series)
    return _binaries[series]


def qemu_source_dir(binary: Path) -> Path:
    """The Debian source tree a binary from qemu_binary() was built from."""
    version = (binary.parent / "VERSION").read_text().strip()
    upstream = version.split(":", 1)[-1].rsplit("-", 1)[0]
    return binary.parent.parent / "src" / f"qemu-{upstream}"


def kvm_usable() -> bool:
    """Return whether /dev/kvm can be opened."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def gcore(pid: int, path: Path) -> Path:
    """Write a core file of a running process with gdb's gcore."""
    subprocess.run(
        ["gdb", "-nx", "-batch", "-p", str(pid), "-ex", f"gcore {path}", "-ex", "detach"],
        check=True,
        timeout=900,  # gcore has no timeout of its own
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not path.exists():
        raise RuntimeError(f"gcore did not write {path}")
    return path


class QemuGuest:
    """A QEMU process with a QMP socket, running a firmware-only pc guest."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        accel: str = "tcg",
        memory: str = "768M",
        machine_opts: str = "dump-guest-core=on,max-ram-below-4g=512M",
        extra_args: Sequence[str] = (),
        smp: int = 1,
        machine: str = "pc",
        cwd: Optional[Path] = None,
        core_limit: bool = False,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        #: Where QEMU runs (a kernel core lands there), and whether it may
        #: dump core (RLIMIT_CORE unlimited).
        self.cwd = cwd
        self.core_limit = core_limit
        self.qmp_path = workdir / "qmp.sock"
        # TCG options after "tcg," (thread=single) are kept.
        accel_arg = accel.replace("tcg", "tcg,tb-size=64", 1) if accel.startswith("tcg") else accel
        self.args: List[str] = [
            str(binary),
            "-machine",
            f"{machine},{machine_opts}" if machine_opts else machine,
            "-accel",
            accel_arg,
            "-m",
            memory,
            "-smp",
            str(smp),
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
        ]
        for d in FIRMWARE_DIRS:
            if os.path.isdir(d):
                self.args += ["-L", d]
        self.args += list(extra_args)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.qmp: Optional[QEMUMonitorProtocol] = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "QemuGuest":
        env = dict(os.environ, MALLOC_ARENA_MAX="1")
        self.qmp_path.unlink(missing_ok=True)  # a stale socket would be taken for QEMU's
        self.log = open(self.workdir / "qemu.log", "wb")
        preexec = None
        if self.core_limit:

            def preexec() -> None:
                import resource

                unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
                resource.setrlimit(resource.RLIMIT_CORE, unlimited)

        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.cwd, preexec_fn=preexec)  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.qmp_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"QEMU exited with {self.proc.returncode}: "
                    + (self.workdir / "qemu.log").read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU did not create its QMP socket")
            time.sleep(0.05)
        self.qmp = QEMUMonitorProtocol(str(self.qmp_path))
        self.qmp.connect()
        return self

    def command(self, cmd: str, **kwargs: object) -> object:
        assert self.qmp is not None
        return self.qmp.cmd(cmd, **kwargs)

    def hmp(self, command_line: str, cpu: Optional[int] = None) -> str:
        """An HMP command, for the monitor's default vCPU or vCPU *cpu*."""
        args: Dict[str, object] = {"command-line": command_line}
        if cpu is not None:
            args["cpu-index"] = cpu
        return str(self.command("human-monitor-command", **args))

    def stop(self) -> None:
        self.command("stop")

    def stop_when(
        self, hmp_command: str, ready: Callable[[str], bool], timeout: float = 600
    ) -> str:
        """
        Stop the guest in a state that *ready* accepts in HMP's output of
        *hmp_command*: stop it, look, and let it run on until it is so. A
        test then depends on a state it observed, not on how far the guest
        got in some time (a loaded machine runs it slower). Returns that
        output. *timeout* only ends a guest that never gets there.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.stop()
            text = self.hmp(hmp_command)
            if ready(text):
                return text
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the guest never reached the state awaited; {hmp_command}:\n{text}"
                )
            self.command("cont")
            time.sleep(0.1)

    def dump(self, path: Path, paging: bool = False, **kwargs: object) -> Path:
        """QEMU's own dump-guest-memory (paging off unless given, ELF unless format is)."""
        self.command("dump-guest-memory", paging=paging, protocol=f"file:{path}", **kwargs)
        return path

    def gcore(self, path: Path) -> Path:
        return gcore(self.pid, path)

    def close(self) -> None:
        if self.qmp is not None:
            try:
                self.qmp.close()
            except Exception:
                pass
            self.qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> "QemuGuest":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_blob(path: Path, size: int, seed: int) -> bytes:
    """Write *size* pseudo-random bytes (reproducible from *seed*) to *path*."""
    import random

    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def drgn_qemu_command() -> List[str]:
    """The drgn-qemu console command of the environment running the tests."""
    beside = Path(sys.executable).parent / "drgn-qemu"
    exe = str(beside) if beside.exists() else shutil.which("drgn-qemu")
    if exe is None:
        raise RuntimeError("drgn-qemu is not installed in this environment (pip install -e .)")
    return [exe]
