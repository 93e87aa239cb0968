"""
kdump-compressed output (--format kdump-*) of a stopped firmware-only guest,
against QEMU's own dump-guest-memory of the same guest: QEMU's
kdump-raw-zlib and kdump-raw-lzo (8.2 and later) and the flattened
kdump-zlib and kdump-lzo of every series (turned into the plain layout as
makedumpfile -R does) are byte for byte ours but for utsname.machine; every format reads back, with the test's own kdump reader,
page for page equal to QEMU's ELF dump of the same guest. The Linux-guest
checks (drgn, crash, makedumpfile) are in test_linux_guest.py.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest
from harness import SERIES, QemuGuest, drgn_qemu_command, qemu_binary
from kdump_reader import (
    FLAG_LZO,
    FLAG_SNAPPY,
    FLAG_ZLIB,
    FLAG_ZSTD,
    assert_pages_equal_elf,
    assert_same_kdump_but_machine,
    open_kdump,
    unflatten,
)
from test_real_qemu import load_blobs, run
from vmcore import note_bytes, notes

FORMATS = {"kdump-zlib": FLAG_ZLIB, "kdump-zstd": FLAG_ZSTD, "kdump-snappy": FLAG_SNAPPY,
           "kdump-lzo": FLAG_LZO}  # fmt: skip


@dataclass
class Stopped:
    series: str
    binary: Path
    core: Path
    elf: Path
    #: QEMU's own kdump files: format name -> plain-layout file.
    kdumps: Dict[str, Path]
    #: QEMU's kdump-lzo files (our builds have lzo): format name -> file.
    lzo: Dict[str, Path]
    #: QEMU's kdump-snappy files (our builds have snappy): format name -> file.
    snappy: Dict[str, Path]


@pytest.fixture(scope="module", params=SERIES, ids=lambda s: f"qemu{s}")
def stopped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stopped]:
    series = request.param
    binary = qemu_binary(series)
    work = tmp_path_factory.mktemp(f"kdump-qemu{series}")
    extra, _ = load_blobs(work)
    # Two vCPUs: two CORE and two QEMU notes in the sub-header.
    with QemuGuest(binary, work, extra_args=extra, smp=2) as guest:
        time.sleep(0.5)
        guest.stop()
        elf = guest.dump(work / "qemu.vmcore")
        kdumps = {
            "kdump-zlib (flattened)": unflatten(
                guest.dump(work / "qemu.flat", format="kdump-zlib"), work / "qemu-flat.kdump"
            )
        }
        lzo = {
            "kdump-lzo (flattened)": unflatten(
                guest.dump(work / "qemu-lzo.flat", format="kdump-lzo"), work / "qemu-lzo.kdump"
            )
        }
        snappy = {
            "kdump-snappy (flattened)": unflatten(
                guest.dump(work / "qemu-snappy.flat", format="kdump-snappy"),
                work / "qemu-snappy.kdump",
            )
        }
        if series != "7.2":  # kdump-raw-* came with QEMU 8.2
            kdumps["kdump-raw-zlib"] = guest.dump(work / "qemu-raw.kdump", format="kdump-raw-zlib")
            lzo["kdump-raw-lzo"] = guest.dump(work / "qemu-raw-lzo.kdump", format="kdump-raw-lzo")
            snappy["kdump-raw-snappy"] = guest.dump(
                work / "qemu-raw-snappy.kdump", format="kdump-raw-snappy"
            )
        core = guest.gcore(work / "qemu.core")
    yield Stopped(series, binary, core, elf, kdumps, lzo, snappy)
    for p in work.iterdir():
        p.unlink()


def ours(stopped: Stopped, out: Path, *extra: str) -> Path:
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(stopped.core),
             "-s", str(stopped.binary), *extra, str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return out


def test_zlib_equals_qemu(stopped: Stopped, tmp_path: Path) -> None:
    out = ours(stopped, tmp_path / "ours.kdump", "--format", "kdump-zlib")
    for name, theirs in stopped.kdumps.items():
        print(f"\nQEMU {stopped.series} {name}: {theirs.stat().st_size} bytes, ours "
              f"{out.stat().st_size} bytes")  # fmt: skip
        assert_same_kdump_but_machine(out, theirs, "x86_64")


def test_lzo_equals_qemu(stopped: Stopped, tmp_path: Path) -> None:
    """kdump-lzo: QEMU's own liblzo2 compression, so QEMU's bytes, page for page."""
    out = ours(stopped, tmp_path / "ours.kdump", "--format", "kdump-lzo")
    assert len(stopped.lzo) == (1 if stopped.series == "7.2" else 2)
    for theirs in stopped.lzo.values():
        assert_same_kdump_but_machine(out, theirs, "x86_64")
    assert open_kdump(out).header["status"] == FLAG_LZO


def test_snappy_against_qemu(stopped: Stopped, tmp_path: Path) -> None:
    """
    kdump-snappy against QEMU's own (libsnappy; ours is cramjam's snappy):
    the same headers, notes and bitmaps, the same page frames, each stored
    page decompressing to QEMU's bytes; byte for byte where the two
    compressors agree.
    """
    out = ours(stopped, tmp_path / "ours.kdump", "--format", "kdump-snappy")
    mine = open_kdump(out)
    assert len(stopped.snappy) == (1 if stopped.series == "7.2" else 2)
    for name, theirs in stopped.snappy.items():
        k = open_kdump(theirs)
        assert k.header["status"] == mine.header["status"] == FLAG_SNAPPY
        assert {f: v for f, v in k.header.items() if f != "utsname"} == {
            f: v for f, v in mine.header.items() if f != "utsname"
        }
        assert k.sub == mine.sub and k.notes == mine.notes
        assert [(pfn, data) for pfn, data, _ in k.pages()] == [
            (pfn, data) for pfn, data, _ in mine.pages()
        ]
        same = out.read_bytes()[4096:] == theirs.read_bytes()[4096:]
        print(f"\nQEMU {stopped.series} {name}: byte for byte past the header: {same}")
    assert_pages_equal_elf(mine, stopped.elf)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_back_equal_to_elf(stopped: Stopped, tmp_path: Path, fmt: str) -> None:
    out = ours(stopped, tmp_path / "ours.kdump", "--format", fmt)
    k = open_kdump(out)
    assert k.machine == "x86_64" and k.block_size == 4096
    assert k.header["status"] == FORMATS[fmt] and k.header["nr_cpus"] == 2
    # The same notes as QEMU's ELF dump: prstatus and QEMUCPUState per vCPU.
    elf_notes = notes(stopped.elf)
    assert [n for n, _, _ in elf_notes] == ["CORE", "CORE", "QEMU", "QEMU"]
    assert k.notes == note_bytes(stopped.elf)
    assert k.sub["offset_vmcoreinfo"] == 0 and k.sub["size_vmcoreinfo"] == 0
    counts = assert_pages_equal_elf(k, stopped.elf)
    print(f"\n{fmt}: {counts}, {out.stat().st_size} bytes")
    # The random blobs do not compress: stored as they are; the rest does.
    assert counts[f"flags={FORMATS[fmt]:#x}"] > 0 and counts["flags=0x0"] >= (7 << 20) // 4096
    assert counts["zero"] > counts["pages"] // 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_threads_do_not_change_the_file(stopped: Stopped, tmp_path: Path, fmt: str) -> None:
    one = ours(stopped, tmp_path / "one.kdump", "--format", fmt, "--threads", "1")
    many = ours(stopped, tmp_path / "many.kdump", "--format", fmt, "--threads", "3",
                "--chunk-size", "1M", "--no-sparse")  # fmt: skip
    assert one.read_bytes() == many.read_bytes()


def test_window_refused(stopped: Stopped, tmp_path: Path) -> None:
    out = tmp_path / "ours.kdump"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(stopped.core), "-s",
             str(stopped.binary), "--format", "kdump-zlib", "--begin", "0", "--length", "1M",
             str(out)])  # fmt: skip
    assert r.returncode == 2  # a usage error, as QMP refuses it
    assert r.stderr.strip().endswith("--begin and --length only work with --format elf")
    assert not out.exists()
