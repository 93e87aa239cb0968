"""
Compressed cores (zstd as systemd-coredump stores them, xz, lz4) dump to the
same vmcore as the uncompressed core, and the unpacked temporary core is
gone afterwards, also after a failure.
"""

import filecmp
import subprocess
from pathlib import Path
from typing import List

import pytest
from fixture_programs import CoredProgram, GetCore
from harness import SERIES, QemuGuest, drgn_qemu_command, qemu_binary
from test_errors import assert_error
from test_synthetic import dump_fixture
from vmcore import assert_same_file_but_ehsize

COMPRESSORS = {
    "zst": ["zstd", "-q", "-T2"],
    "xz": ["xz", "-0", "-T2", "-k"],
    "lz4": ["lz4", "-q"],
}


def compress(path: Path, kind: str) -> Path:
    out = path.with_name(path.name + "." + kind)
    if kind == "lz4":
        subprocess.run([*COMPRESSORS[kind], str(path), str(out)], check=True)
    else:
        subprocess.run([*COMPRESSORS[kind], "-f", str(path)], check=True)
    assert out.exists()
    return out


def leftovers(directory: Path) -> List[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".drgn-qemu-core.")]


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_compressed_core_same_vmcore(cored: GetCore, tmp_path: Path, kind: str) -> None:
    c = cored("MODERN")
    plain = tmp_path / "plain.vmcore"
    assert dump_fixture(c, plain, "-q").returncode == 0
    core = tmp_path / "qemu.core"
    core.write_bytes(c.core.read_bytes())
    packed = compress(core, kind)
    core.unlink()
    out = tmp_path / "out" / "guest.vmcore"
    out.parent.mkdir()
    r = dump_fixture(CoredProgram(c.binary, packed), out, "-q")
    assert r.returncode == 0, r.stderr
    assert filecmp.cmp(out, plain, shallow=False)
    assert leftovers(out.parent) == []
    # A failure after unpacking leaves no temporary core either.
    r = dump_fixture(CoredProgram(c.binary, packed), out.parent / "window.vmcore",
                     "--begin", "0x50000000", "--length", "16M")  # fmt: skip
    assert_error(r, "no guest memory to dump in that window")
    assert sorted(p.name for p in out.parent.iterdir()) == ["guest.vmcore"]


def test_damaged_compressed_core(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    core = tmp_path / "qemu.core"
    core.write_bytes(c.core.read_bytes())
    packed = compress(core, "zst")
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) // 2])
    r = dump_fixture(CoredProgram(c.binary, packed), tmp_path / "guest.vmcore")
    assert_error(r, "zstd-compressed core", "is damaged or truncated")
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "guest.vmcore").exists()


def test_real_qemu_zstd_core(tmp_path: Path) -> None:
    """A real QEMU's core, zstd-compressed as systemd-coredump keeps it."""
    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, tmp_path, memory="256M", machine_opts="dump-guest-core=on") as guest:
        guest.stop()
        theirs = guest.dump(tmp_path / "qemu.vmcore")
        core = guest.gcore(tmp_path / "qemu.core")
    packed = compress(core, "zst")
    core.unlink()
    out = tmp_path / "guest.vmcore"
    r = dump_fixture(CoredProgram(binary, packed), out, "-q")
    assert r.returncode == 0, r.stderr
    assert_same_file_but_ehsize(out, theirs)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["zst", "lz4"])
def test_compressed_core_memory_is_flat(tmp_path: Path, kind: str) -> None:
    """
    A 1 GiB guest that is nearly all zeros packs to a few MiB: a few KiB of
    the file stand for GiBs. Unpacking must not hold them in memory (zstd
    took about 950 MB for such a core; the plain core takes about 100 MB).
    """
    binary = qemu_binary(SERIES[-1])
    with QemuGuest(binary, tmp_path, memory="1G", machine_opts="dump-guest-core=on") as guest:
        guest.stop()
        core = guest.gcore(tmp_path / "qemu.core")
    packed = compress(core, kind)
    core.unlink()
    out = tmp_path / "guest.vmcore"
    rss_file = tmp_path / "rss"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *drgn_qemu_command(),
           "dump-guest-memory", "-q", "-c", str(packed), "-s", str(binary), str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    peak_kib = int(rss_file.read_text().split()[-1])
    assert peak_kib < 250 << 10, f"peak RSS {peak_kib >> 10} MiB"
    assert leftovers(tmp_path) == []
