"""
A reader of kdump-compressed files for the tests, written from makedumpfile's
format description (IMPLEMENTATION, diskdump_mod.h) and independent of
drgn_qemu.kdump: headers, bitmaps, page descriptors and page data; and the
conversion of makedumpfile's "flattened" stream (what QEMU writes for
format=kdump-zlib) to the plain layout, as `makedumpfile -R` does.
"""

import mmap
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Tuple

import cramjam
import zstandard

FLAG_ZLIB, FLAG_LZO, FLAG_SNAPPY, FLAG_ZSTD = 0x1, 0x2, 0x4, 0x20
_ZSTD = zstandard.ZstdDecompressor()


@dataclass
class KdumpFile:
    path: Path
    order: str
    header: Dict[str, object]
    sub: Dict[str, int]
    bitmap2: bytes
    desc_offset: int

    @property
    def block_size(self) -> int:
        return int(self.header["block_size"])  # type: ignore[call-overload]

    @property
    def machine(self) -> str:
        uts = self.header["utsname"]
        assert isinstance(uts, bytes)
        return uts[4 * 65 : 5 * 65].split(b"\0")[0].decode()

    @property
    def notes(self) -> bytes:
        data = self.path.read_bytes()
        return data[self.sub["offset_note"] : self.sub["offset_note"] + self.sub["note_size"]]

    @property
    def vmcoreinfo(self) -> bytes:
        data = self.path.read_bytes()
        off, size = self.sub["offset_vmcoreinfo"], self.sub["size_vmcoreinfo"]
        return data[off : off + size]

    def dumped_pfns(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self.bitmap2):
            if byte:
                for bit in range(8):
                    if byte & (1 << bit):
                        yield byte_index * 8 + bit

    def pages(self) -> Iterator[Tuple[int, bytes, int]]:
        """(pfn, page content, flags) of every dumped page, in order."""
        desc = struct.Struct(self.order + "QIIQ")
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for i, pfn in enumerate(self.dumped_pfns()):
                offset, size, flags, _ = desc.unpack_from(m, self.desc_offset + i * desc.size)
                data = m[offset : offset + size]
                assert len(data) == size, f"page data of pfn {pfn} past the end of the file"
                yield pfn, decompress(data, flags, self.block_size), flags


def decompress(data: bytes, flags: int, page_size: int) -> bytes:
    if flags & FLAG_ZLIB:
        out = zlib.decompress(data)
    elif flags & FLAG_ZSTD:
        out = _ZSTD.decompress(data, max_output_size=page_size)
    elif flags & FLAG_SNAPPY:
        out = bytes(cramjam.snappy.decompress_raw(data))
    elif flags & FLAG_LZO:
        # lzallright (lzokay): an LZO1X implementation of its own, not the
        # liblzo2 that QEMU and drgn-qemu compress with.
        import lzallright

        out = lzallright.LZOCompressor.decompress(data, output_size_hint=page_size)
    else:
        out = data
    assert len(out) == page_size
    return out


def open_kdump(path: Path, filtered: bool = False) -> KdumpFile:
    """
    Read a kdump-compressed file's headers. QEMU's (and ours) have two
    equal bitmaps; a *filtered* one (makedumpfile -d) dumps, in its second
    bitmap, a part of the pages its first says exist.
    """
    data = path.read_bytes()[: 1 << 16]
    assert data[:8] == b"KDUMP   ", "not a kdump-compressed file"
    # The header's byte order is the guest's; the version field tells it.
    order = "<" if struct.unpack_from("<I", data, 8)[0] < 0x10000 else ">"
    (version,) = struct.unpack_from(order + "I", data, 8)
    assert version == 6
    names = ["status", "block_size", "sub_hdr_size", "bitmap_blocks", "max_mapnr",
             "total_ram_blocks", "device_blocks", "written_blocks", "current_cpu", "nr_cpus"]  # fmt: skip
    # The 64-bit header reserves 22 bytes for the timestamp, the 32-bit one
    # 10; as libkdumpfile, take the layout whose block size makes sense.
    layouts = {22: "QIIQQQQQQQQQQQ", 10: "IIIIIQIQIQIQQQ"}
    for timestamp in layouts:
        fields = struct.unpack_from(order + "10I", data, 8 + 4 + 390 + timestamp)
        block_size = fields[1]
        if 4096 <= block_size <= 1 << 20 and block_size & (block_size - 1) == 0:
            break
    else:
        raise AssertionError("no sane block size in the kdump header")
    sub_format = layouts[timestamp]
    header: Dict[str, object] = dict(zip(names, fields))
    header["utsname"] = data[12 : 12 + 390]
    block = int(header["block_size"])  # type: ignore[call-overload]
    sub_names = ["phys_base", "dump_level", "split", "start_pfn", "end_pfn",
                 "offset_vmcoreinfo", "size_vmcoreinfo", "offset_note", "note_size",
                 "offset_eraseinfo", "size_eraseinfo", "start_pfn_64", "end_pfn_64",
                 "max_mapnr_64"]  # fmt: skip
    with open(path, "rb") as f:
        f.seek(block)
        raw = f.read(struct.calcsize(order + sub_format))
        sub = dict(zip(sub_names, struct.unpack(order + sub_format, raw)))
        bitmap_blocks = int(header["bitmap_blocks"])  # type: ignore[call-overload]
        sub_hdr = int(header["sub_hdr_size"])  # type: ignore[call-overload]
        half = bitmap_blocks // 2 * block
        f.seek((1 + sub_hdr) * block)
        bitmap1 = f.read(half)
        bitmap2 = f.read(half)
    if filtered:
        assert all(b & ~a == 0 for a, b in zip(bitmap1, bitmap2)), "dumped pages that do not exist"
    else:
        assert bitmap1 == bitmap2, "QEMU-style dumps have the same two bitmaps"
    desc_offset = (1 + sub_hdr + bitmap_blocks) * block
    return KdumpFile(path, order, header, sub, bitmap2, desc_offset)


def unflatten(flat: Path, out: Path) -> Path:
    """Turn makedumpfile's flattened format into the plain one (makedumpfile -R)."""
    with open(flat, "rb") as f, open(out, "wb") as o:
        head = f.read(4096)
        assert head[:12] == b"makedumpfile", "not a flattened dump"
        while True:
            offset, size = struct.unpack(">qq", f.read(16))
            if offset == -1 and size == -1:
                break
            o.seek(offset)
            o.write(f.read(size))
    return out


def assert_pages_equal_elf(kdump: KdumpFile, elf: Path, every: bool = True) -> Dict[str, int]:
    """
    Every page frame the ELF vmcore's PT_LOADs touch is in the kdump file
    (with *every* false, a filtered file such as makedumpfile -d writes: some
    of them), and no other, with the same bytes (zeros where no segment
    covers part of the page). Returns counts: pages, zero pages, stored
    pages per flag.
    """
    from vmcore import loads

    page = kdump.block_size
    segments = [s for s in loads(elf) if s.filesz]
    expected_pfns = sorted(
        {
            pfn
            for s in segments
            for pfn in range(s.paddr // page, (s.paddr + s.filesz - 1) // page + 1)
        }
    )
    counts: Dict[str, int] = {"pages": 0, "zero": 0}
    seen = []
    zero = bytes(page)
    with open(elf, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for pfn, data, flags in kdump.pages():
            seen.append(pfn)
            want = bytearray(page)
            start, end = pfn * page, (pfn + 1) * page
            for s in segments:
                a, b = max(start, s.paddr), min(end, s.paddr + s.filesz)
                if a < b:
                    want[a - start : b - start] = m[s.offset + a - s.paddr : s.offset + b - s.paddr]
            assert data == want, f"page frame {pfn:#x} differs"
            counts["pages"] += 1
            if want == zero:
                counts["zero"] += 1
            else:
                counts[f"flags={flags:#x}"] = counts.get(f"flags={flags:#x}", 0) + 1
    if every:
        assert seen == expected_pfns, "the dumped page frames are not those of the ELF segments"
    else:
        assert seen == sorted(seen) and set(seen) <= set(expected_pfns), "page frames not the ELF's"
    return counts


#: Where disk_dump_header.utsname and its machine field live.
UTSNAME = slice(12, 12 + 6 * 65)
UTS_MACHINE = slice(12 + 4 * 65, 12 + 5 * 65)


def assert_same_kdump_except(ours: Path, theirs: Path, *skip: slice) -> None:
    """Assert that two kdump files are identical byte for byte outside *skip*."""
    a, b = bytearray(ours.read_bytes()), bytearray(theirs.read_bytes())
    assert len(a) == len(b), f"sizes differ: ours {len(a)}, QEMU's {len(b)}"
    for r in skip:
        a[r] = bytes(r.stop - r.start)
        b[r] = bytes(r.stop - r.start)
    if a != b:
        i = next(i for i in range(len(a)) if a[i] != b[i])
        raise AssertionError(f"the kdump files differ at offset {i:#x}")


def assert_same_kdump_but_machine(ours: Path, theirs: Path, machine: str) -> None:
    """
    Assert that two kdump files are identical byte for byte, except where
    QEMU writes "Unknown" as utsname.machine: it means to write
    ELF_MACHINE_UNAME there, but since dump/dump.c became target-independent
    (QEMU 8.x) it no longer sees the target's cpu.h that defines it. QEMU
    7.2 writes the machine, as we do.
    """
    a, b = ours.read_bytes(), theirs.read_bytes()
    assert a[UTS_MACHINE].rstrip(b"\0") == machine.encode()
    assert b[UTS_MACHINE].rstrip(b"\0") in (b"Unknown", machine.encode())
    assert_same_kdump_except(ours, theirs, UTS_MACHINE)
