"""
The user's route, without the test scripts: pip install drgn-qemu from a
checkout (and from a wheel built from it) into a new virtualenv next to a
QEMU, then run drgn-qemu and the installed drgn script. The checkout is
copied without scripts/, tests/ and benchmarks/, so nothing of them can help.
"""

import shutil
import subprocess
from pathlib import Path
from typing import List

from fixture_programs import GetCore
from harness import REPO
from vmcore import loads


def _user_checkout(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout.splitlines()  # fmt: skip
    for name in files:
        if name.split("/")[0] in ("scripts", "tests", "benchmarks", ".ci"):
            continue
        src, dst = REPO / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(src.readlink())
        else:
            shutil.copy2(src, dst)
    return dest


def _venv(path: Path, *install: str) -> Path:
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(path)], check=True)
    r = subprocess.run([str(path / "bin" / "pip"), "install", "-q", *install],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return path / "bin"


def _dump_both_ways(bin_dir: Path, core: Path, binary: Path, out_dir: Path) -> List[Path]:
    """drgn-qemu, then the installed contrib script under drgn: the same file."""
    out_dir.mkdir()
    cli_out, script_out = out_dir / "cli.vmcore", out_dir / "script.vmcore"
    r = subprocess.run([str(bin_dir / "drgn-qemu"), "dump-guest-memory", "-q", "-c", str(core),
                        "-s", str(binary), str(cli_out)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    script = subprocess.run([str(bin_dir / "drgn-qemu"), "--contrib-path"], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert script.startswith(str(bin_dir.parent)), script  # installed, not the checkout's
    r = subprocess.run([str(bin_dir / "drgn"), "-q", "-c", str(core), "-s", str(binary), script,
                        "-q", str(script_out)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert cli_out.read_bytes() == script_out.read_bytes()
    assert loads(cli_out)
    return [cli_out, script_out]


def test_pip_install_from_checkout_and_wheel(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    src = _user_checkout(tmp_path / "drgn-qemu")
    from_checkout = _venv(tmp_path / "venv", str(src))
    first = _dump_both_ways(from_checkout, c.core, c.binary, tmp_path / "out1")
    dist = tmp_path / "dist"
    subprocess.run([str(from_checkout / "pip"), "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(src)], check=True)  # fmt: skip
    (wheel,) = dist.glob("drgn_qemu-*.whl")
    from_wheel = _venv(tmp_path / "venv-wheel", str(wheel))
    second = _dump_both_ways(from_wheel, c.core, c.binary, tmp_path / "out2")
    assert first[0].read_bytes() == second[0].read_bytes()
