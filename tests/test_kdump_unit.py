"""
The kdump writer on memory made up here: pages shared by two segments,
segments that start or end inside a page, zero pages, pages that do not
compress; read back with the test's own kdump reader, not the writer's code.
"""

import os
import random
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from kdump_reader import FLAG_ZLIB, open_kdump

from drgn_qemu.elf import ELFCLASS64, ELFDATA2LSB
from drgn_qemu.kdump import KdumpHeader, KdumpLayout, PageRun, PartialPage, pages_of_segments
from drgn_qemu.options import DumpOptions
from drgn_qemu.ranges import GuestRange
from drgn_qemu.reader import MemoryFault, MemoryReader
from drgn_qemu.writer import write_kdump

H1, H2, H3, H4 = 0x10000, 0x20000, 0x30000, 0x40000
# (guest-physical address, size, host address)
SEGMENTS = [(0x0, 0x1800, H1), (0x1800, 0x800, H2), (0x3000, 0x100, H3), (0x3200, 0x2000, H4)]


def ranges(segments: List[Tuple[int, int, int]]) -> List[GuestRange]:
    return [GuestRange(*s) for s in segments]


def test_pages_of_segments() -> None:
    assert list(pages_of_segments(ranges(SEGMENTS), 0x1000)) == [
        PageRun(0, 1, H1),
        # Page 1: the end of the first segment and all of the second.
        PartialPage(1, ((0, H1 + 0x1000, 0x800), (0x800, H2, 0x800))),
        # Page 3: 0x100 bytes, a 0x100 gap, then the start of the fourth.
        PartialPage(3, ((0, H3, 0x100), (0x200, H4, 0xE00))),
        PageRun(4, 1, H4 + 0xE00),
        PartialPage(5, ((0, H4 + 0x1E00, 0x200),)),
    ]


class BytesReader(MemoryReader):
    """QEMU's memory as a dict of host address -> bytes."""

    def __init__(self, memory: Dict[int, bytes]) -> None:
        self.memory = memory

    def readinto(self, address: int, buf: memoryview) -> None:
        for base, data in self.memory.items():
            if base <= address and address + len(buf) <= base + len(data):
                buf[:] = data[address - base : address - base + len(buf)]
                return
        raise MemoryFault(address)


def make_memory(page: int) -> Tuple[Dict[int, bytes], List[Tuple[int, int, int]]]:
    rng = random.Random(7)
    text = b"compressible " * (64 * page // 13 + 1)
    # 64 pages: text, zeros, random (incompressible) and text again.
    big = text[: 16 * page] + bytes(16 * page) + rng.randbytes(16 * page) + text[: 16 * page]
    segments = [(0x100000, len(big), 0x7F0000000000), *[(0x200000 + a, s, 0x7F1000000000 + h)
                for a, s, h in SEGMENTS]]  # fmt: skip
    memory = {0x7F0000000000: big, 0x7F1000000000: rng.randbytes(0x80000)}
    return memory, segments


def expected_page(memory: Dict[int, bytes], segments: List[Tuple[int, int, int]], pfn: int,
                  page: int) -> bytes:  # fmt: skip
    out = bytearray(page)
    for paddr, size, host in segments:
        a, b = max(paddr, pfn * page), min(paddr + size, (pfn + 1) * page)
        if a < b:
            for base, data in memory.items():
                if base <= host < base + len(data):
                    off = host - base + (a - paddr)
                    out[a - pfn * page : b - pfn * page] = data[off : off + b - a]
    return bytes(out)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("sparse", [True, False])
def test_write_kdump(tmp_path: Path, threads: int, sparse: bool) -> None:
    page = 4096
    memory, segments = make_memory(page)
    header = KdumpHeader(ELFCLASS64, ELFDATA2LSB, page, "x86_64", 1, 0, "kdump-zlib")
    layout = KdumpLayout(header, b"", ranges(segments))
    out = tmp_path / "k.kdump"
    done: List[int] = []
    options = DumpOptions(chunk_size=5 * page, sparse=sparse, threads=threads)
    with open(out, "wb") as f:
        size = write_kdump(layout, f.fileno(), BytesReader(memory), options, done.append)
    assert size == out.stat().st_size
    # 64 pages of the big segment, then guest pages 0x200, 0x201, 0x203-0x205.
    assert sum(done) == (64 + 5) * page
    k = open_kdump(out)
    pfns = [0x100 + i for i in range(64)] + [0x200, 0x201, 0x203, 0x204, 0x205]
    assert list(k.dumped_pfns()) == pfns
    assert k.header["max_mapnr"] == 0x205  # the page frame of the end: 0x205200
    flags = {}
    for pfn, data, flag in k.pages():
        assert data == expected_page(memory, segments, pfn, page), hex(pfn)
        flags[pfn] = flag
    assert [flags[0x100 + i] for i in (0, 16, 32, 48)] == [FLAG_ZLIB, 0, 0, FLAG_ZLIB]
    # The 16 zero pages share one page of data: the file holds it once.
    assert size < layout.data_offset + page + 32 * page


def test_big_endian_32bit_header(tmp_path: Path) -> None:
    """ELFCLASS32 guests get the 32-bit headers, in the guest's byte order."""
    memory, segments = make_memory(4096)
    header = KdumpHeader(1, 2, 4096, "ppc", 2, 0x1000, "kdump-zlib")
    layout = KdumpLayout(header, b"", ranges(segments))
    out = tmp_path / "k.kdump"
    with open(out, "wb") as f:
        write_kdump(
            layout, f.fileno(), BytesReader(memory), DumpOptions(chunk_size=1 << 20, threads=1)
        )
    data = out.read_bytes()
    assert data[8:12] == b"\0\0\0\x06"  # header_version 6, big-endian
    # disk_dump_header32: the 10-byte timestamp, then status = zlib.
    assert data[8 + 4 + 390 + 10 : 8 + 4 + 390 + 14] == b"\0\0\0\x01"
    # kdump_sub_header32 at block 1: phys_base is 32 bits.
    assert data[4096:4100] == b"\0\0\x10\0"
    assert os.path.getsize(out) > 4 * 4096


class HoleyReader(BytesReader):
    """A sparse core: *holes* ``(address, size)`` read as zeros, and extents say so."""

    def __init__(self, memory: Dict[int, bytes], holes: List[Tuple[int, int]]) -> None:
        super().__init__(memory)
        self.holes = sorted(holes)
        self.read_bytes = 0

    def readinto(self, address: int, buf: memoryview) -> None:
        super().readinto(address, buf)
        self.read_bytes += len(buf)

    def extents(self, address: int, size: int) -> Iterator[Tuple[int, int, bool]]:
        end, at = address + size, address
        for h, n in self.holes:
            lo, hi = max(h, address), min(h + n, end)
            if lo >= hi:
                continue
            if lo > at:
                yield at, lo - at, True
            yield lo, hi - lo, False
            at = hi
        if at < end:
            yield at, end - at, True


@pytest.mark.parametrize("page", [4096, 65536])
def test_holes_are_zero_pages_not_read(tmp_path: Path, page: int) -> None:
    """
    Pages wholly in a hole get the shared zero page without being read; a
    hole's ragged ends (pages larger than its 4 KiB blocks) are read. The
    file is the one a reader without holes writes of the same bytes.
    """
    memory, segments = make_memory(page)
    base = 0x7F0000000000  # the big segment's 16 zero pages: holes, one ragged
    zeros = (base + 16 * page, 16 * page)
    holes = [(zeros[0] + 0x1000, zeros[1] - 0x1000)]
    memory = {
        **memory,
        base: memory[base][: 16 * page] + bytes(16 * page) + memory[base][32 * page :],
    }
    header = KdumpHeader(ELFCLASS64, ELFDATA2LSB, page, "x86_64", 1, 0, "kdump-zlib")
    options = DumpOptions(chunk_size=5 * page, threads=2)
    files = []
    for reader in (BytesReader(memory), HoleyReader(memory, holes)):
        out = tmp_path / f"{type(reader).__name__}.kdump"
        with open(out, "wb") as f:
            write_kdump(KdumpLayout(header, b"", ranges(segments)), f.fileno(), reader, options)
        files.append(out.read_bytes())
    assert files[0] == files[1]
    holey = reader
    assert isinstance(holey, HoleyReader)
    total = sum(s for _, s, _ in segments)
    # Only the hole's whole pages were not read: 15 of them (the first is ragged).
    assert total - holey.read_bytes == 15 * page
