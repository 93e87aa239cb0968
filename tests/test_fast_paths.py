"""
Every fast path gives the same bytes as the plain one: sparse and full
output, reading a core through a mapping, preadv or drgn, copy_file_range,
and the holes of a sparse core written by the kernel.
"""

import filecmp
import os
import resource
import signal
import subprocess
from pathlib import Path
from typing import Dict, List

import drgn
import pytest
from fixture_programs import CoredProgram, GetCore
from test_synthetic import EXPECTED, dump_fixture, pattern
from vmcore import loads, read_phys

from drgn_qemu.reader import IO_MODES, CoreFileReader

VARIANTS = [(io, sparse) for io in IO_MODES for sparse in (True, False)]


def dump_all_ways(c: CoredProgram, tmp_path: Path) -> Dict[str, Path]:
    outs = {}
    for io, sparse in VARIANTS:
        out = tmp_path / f"{io}-{'sparse' if sparse else 'full'}.vmcore"
        r = dump_fixture(c, out, "--io", io, *([] if sparse else ["--no-sparse"]))
        assert r.returncode == 0, r.stderr
        outs[out.stem] = out
    return outs


def assert_all_equal(outs: Dict[str, Path]) -> None:
    first, *rest = outs.values()
    for other in rest:
        assert filecmp.cmp(first, other, shallow=False), f"{first.name} != {other.name}"


def test_gcore_all_ways_equal(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    outs = dump_all_ways(c, tmp_path)
    assert_all_equal(outs)
    start, size, pieces = EXPECTED["MODERN"][1]
    assert read_phys(outs["auto-sparse"], start, size) == pattern(*pieces[0])


def test_threads_and_chunks_do_not_change_the_file(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN")
    outs = {}
    # Buffers are reused once their chunk is written: a mapped core needs
    # none, the others (pread, drgn) do.
    for io in ("auto", "pread", "program"):
        for threads in ("1", "2", "5"):
            for chunk in ("4K", "64K", "8M"):
                out = tmp_path / f"{io}-{threads}-{chunk}.vmcore"
                r = dump_fixture(c, out, "--io", io, "--threads", threads, "--chunk-size", chunk)
                assert r.returncode == 0, r.stderr
                outs[out.stem] = out
    assert_all_equal(outs)
    start, size, pieces = EXPECTED["MODERN"][1]
    assert read_phys(outs["auto-1-8M"], start, size) == pattern(*pieces[0])


def kernel_core(binary: Path, workdir: Path, pattern_: str, *args: str) -> CoredProgram:
    """
    A core written by the kernel (SIGSEGV, RLIMIT_CORE unlimited), as
    systemd-coredump gets it, with *pattern_* the core_pattern (see the
    plain_core_pattern fixture).
    """

    def unlimited() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    proc = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE, cwd=workdir,
                            preexec_fn=unlimited)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGSEGV)
    proc.wait()
    cores: List[Path] = [p for p in workdir.iterdir() if p.name.startswith("core")]
    assert len(cores) == 1, f"no kernel core in {workdir} (core_pattern {pattern_!r})"
    return CoredProgram(binary, cores[0])


def test_kernel_sparse_core(
    binaries: Dict[str, Path], tmp_path: Path, plain_core_pattern: str
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    c = kernel_core(binaries["MODERN"], work, plain_core_pattern, "holes")
    # The kernel leaves never-touched pages out of the file as holes.
    assert c.core.stat().st_blocks * 512 < c.core.stat().st_size - (1 << 20)
    # pc.ram's host address from the core; the kernel may have merged its
    # mapping with a neighbouring one, so do not look for a segment by size.
    prog = drgn.Program()
    prog.set_core_dump(str(c.core))
    prog.load_debug_info([str(c.binary)])
    host = prog["blocks"][0].host.value_()
    reader = CoreFileReader(str(c.core))
    try:
        extents = list(reader.extents(host, 0x800000))
    finally:
        reader.close()
    holes = [(a - host, n) for a, n, data in extents if not data]
    assert any(a <= 0x200000 and a + n >= 0x400000 for a, n in holes), extents
    outs = dump_all_ways(c, tmp_path)
    assert_all_equal(outs)
    out = outs["auto-sparse"]
    assert [(s.paddr, s.filesz) for s in loads(out)] == [
        (start, size) for start, size, _ in EXPECTED["MODERN"]
    ]
    assert read_phys(out, 0x100000, 0x100000) == pattern("pc.ram", 0x100000, 0x100000)
    assert read_phys(out, 0x200000, 0x200000) == bytes(0x200000)
    assert read_phys(out, 0x100000000, 0x1000) == pattern("pc.ram", 0x400000, 0x1000)
    # Sparse: the untouched 2 MiB take no space (but for the filesystem block
    # that straddles their start, since the file offset is not block-aligned).
    sparse_used = outs["auto-sparse"].stat().st_blocks * 512
    full_used = outs["auto-full"].stat().st_blocks * 512
    assert full_used - sparse_used >= 0x200000 - 4096


def test_reader_refuses_truncated_core(cored: GetCore, tmp_path: Path) -> None:
    core = tmp_path / "cut.core"
    core.write_bytes(cored("MODERN").core.read_bytes()[: 1 << 20])
    with pytest.raises(ValueError, match="truncated"):
        CoreFileReader(str(core))
    assert os.path.exists(core)
