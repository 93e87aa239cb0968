"""
Build and core the C fixture programs of tests/fixtures with gcc -g and
gdb's gcore.
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from harness import gcore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAYOUTS = ("MODERN", "V24", "V15", "V11")
#: The -D flags of each layout (see qemu_layout.c): V11 is MODERN and more.
LAYOUT_DEFINES = {layout: [f"LAYOUT_{layout}"] for layout in LAYOUTS}
LAYOUT_DEFINES["V11"] = ["LAYOUT_MODERN", "LAYOUT_V11"]


def compile_fixture(source: str, out: Path, defines: Sequence[str] = ()) -> Path:
    subprocess.run(
        [
            "gcc",
            "-g",
            "-O0",
            "-Wall",
            "-Werror",
            *[f"-D{d}" for d in defines],
            "-o",
            str(out),
            str(FIXTURES / source),
        ],
        check=True,
    )
    return out


@dataclass
class CoredProgram:
    binary: Path
    core: Path


#: get(layout, mode="ok"): the cored fixture program of a layout and mode.
GetCore = Callable[..., CoredProgram]


def run_and_core(binary: Path, core: Path, *args: str) -> CoredProgram:
    """Run a fixture until it prints "ready", core it with gcore, kill it."""
    proc = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", f"{binary} printed {line!r}"
        gcore(proc.pid, core)
    finally:
        proc.kill()
        proc.wait()
    return CoredProgram(binary, core)
