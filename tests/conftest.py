"""Fixtures shared by the test modules: the C fixture programs, built and cored once."""

import sys
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

# Let tests import harness.py, vmcore.py and fixture_programs.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
