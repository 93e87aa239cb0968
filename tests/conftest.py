"""Fixtures shared by the test modules: the C fixture programs, built and cored once."""

import fcntl
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

# Let tests import harness.py, vmcore.py and fixture_programs.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Seconds any external tool a test runs (gdb's gcore, crash, makedumpfile,
#: drgn-qemu itself...) may take unless the call says otherwise: a hang is
#: a failure naming the command, not a CI run stalled until its limit.
#: (pytest-timeout bounds each test as a whole: pyproject.toml.)
TOOL_TIMEOUT = 900


@functools.wraps(subprocess.run)
def _run_with_timeout(*args: Any, **kwargs: Any) -> "subprocess.CompletedProcess[Any]":
    kwargs.setdefault("timeout", TOOL_TIMEOUT)
    return _subprocess_run(*args, **kwargs)


_subprocess_run = subprocess.run
subprocess.run = _run_with_timeout

from fixture_programs import (  # noqa: E402
    LAYOUT_DEFINES,
    LAYOUTS,
    CoredProgram,
    GetCore,
    compile_fixture,
    run_and_core,
)


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("bin")
    out = {
        layout: compile_fixture(
            "qemu_layout.c", d / f"qemu_layout_{layout}", LAYOUT_DEFINES[layout]
        )
        for layout in LAYOUTS
    }
    out["NO_CPU"] = compile_fixture(
        "qemu_layout.c", d / "qemu_layout_NO_CPU", ["LAYOUT_MODERN", "NO_CPU"]
    )
    out["not_qemu"] = compile_fixture("not_qemu.c", d / "not_qemu")
    return out


_cores: Dict[Tuple[str, str], CoredProgram] = {}


@pytest.fixture(scope="session")
def cored(binaries: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GetCore]:
    d = tmp_path_factory.mktemp("cores")

    def get(layout: str, mode: str = "ok") -> CoredProgram:
        key = (layout, mode)
        if key not in _cores:
            args = [] if layout == "not_qemu" else [mode]
            _cores[key] = run_and_core(binaries[layout], d / f"{layout}-{mode}.core", *args)
        return _cores[key]

    yield get
    _cores.clear()


@pytest.fixture(autouse=True)
def _remove_large_outputs(tmp_path: Path) -> Iterator[None]:
    """Delete each test's vmcores and cores when it ends: they are GiBs each."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > (16 << 20):
            path.unlink()


@pytest.fixture
def plain_core_pattern() -> Iterator[str]:
    """
    The kernel's core_pattern, made to write a core file in the crashing
    process's directory for the test: where systemd-coredump or apport pipe
    cores away ("|..."), or it names another directory, it is set to "core"
    (the tests run as root) and put back after. Its value is returned.
    """
    path = Path("/proc/sys/kernel/core_pattern")
    # One test at a time sets it, whatever else runs on the machine (another
    # pytest worker, another checkout's tests): each puts back what it found.
    with open("/tmp/drgn-qemu-core-pattern.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = path.read_text().rstrip("\n")
        if old.startswith("|") or "/" in old:
            try:
                path.write_text("core\n")
            except OSError as e:
                pytest.fail(f"core_pattern {old!r} sends cores elsewhere and cannot be set: {e}")
        try:
            yield path.read_text().strip()
        finally:
            if path.read_text().rstrip("\n") != old:
                path.write_text(old + "\n")
