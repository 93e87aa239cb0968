# SPDX-License-Identifier: GPL-2.0-or-later
"""
kdump-compressed files
----------------------

The ``drgn_qemu.kdump`` module lays out a kdump-compressed dump (makedumpfile's
"diskdump" format, header version 6) the way QEMU's ``dump-guest-memory``
writes its ``kdump-raw-*`` formats (``create_kdump_vmcore()`` in
``dump/dump.c``), and knows nothing about QEMU::

    block 0          disk_dump_header
    block 1          kdump_sub_header, then the ELF notes
    (block aligned)  1st bitmap: which page frames exist
    (block aligned)  2nd bitmap: which page frames are dumped (the same here)
    (block aligned)  one page_desc per dumped page frame
                     page data: one shared all-zero page, then each other
                     page, compressed when that makes it smaller

A block is a guest page. As in QEMU, every page of guest RAM is in both
bitmaps, and all-zero pages take no data: their descriptors point to the one
shared zero page.
"""

import os
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from drgn_qemu.elf import ELFCLASS64, note_align, struct_order
from drgn_qemu.ranges import GuestRange

if TYPE_CHECKING:
    import numpy as np

__all__ = (
    "COMPRESSION_FLAGS",
    "disk_dump_header_struct",
    "kdump_sub_header_struct",
    "KdumpFile",
    "KdumpHeader",
    "KdumpLayout",
    "pack_disk_dump_header",
    "pack_kdump_sub_header",
    "page_desc_dtype",
    "page_descriptors",
    "PageRun",
    "pages_of_segments",
    "PartialPage",
)

KDUMP_SIGNATURE = b"KDUMP   "
KDUMP_HEADER_VERSION = 6
#: ``DUMP_LEVEL``: QEMU only leaves out nothing, but says level 1.
DUMP_LEVEL = 1
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
#: makedumpfile's flag for zstd (QEMU does not write zstd).
DUMP_DH_COMPRESSED_ZSTD = 0x20

#: The ``--format`` names of kdump-compressed output and their header flag.
COMPRESSION_FLAGS: Dict[str, int] = {
    "kdump-zlib": DUMP_DH_COMPRESSED_ZLIB,
    "kdump-zstd": DUMP_DH_COMPRESSED_ZSTD,
    "kdump-snappy": DUMP_DH_COMPRESSED_SNAPPY,
    "kdump-lzo": DUMP_DH_COMPRESSED_LZO,
}

_UTSNAME_FIELD = 65
# disk_dump_header: signature, header_version, new_utsname (6 x 65 bytes),
# timestamp (a struct timeval: 22 bytes reserved in the 64-bit header, 10 in
# the 32-bit one), then status, block_size, sub_hdr_size, bitmap_blocks,
# max_mapnr, total_ram_blocks, device_blocks, written_blocks, current_cpu,
# nr_cpus.
_DISK_DUMP_HEADER = {ELFCLASS64: "8sI390s22s10I", 1: "8sI390s10s10I"}
# kdump_sub_header: phys_base, dump_level, split, start_pfn, end_pfn,
# offset_vmcoreinfo, size_vmcoreinfo, offset_note, note_size,
# offset_eraseinfo, size_eraseinfo, start_pfn_64, end_pfn_64, max_mapnr_64.
_KDUMP_SUB_HEADER = {ELFCLASS64: "QIIQQQQQQQQQQQ", 1: "IIIIIQIQIQIQQQ"}
#: The fields of disk_dump_header and kdump_sub_header, in order.
DISK_DUMP_HEADER_FIELDS = (
    "signature", "header_version", "utsname", "timestamp", "status", "block_size",
    "sub_hdr_size", "bitmap_blocks", "max_mapnr", "total_ram_blocks", "device_blocks",
    "written_blocks", "current_cpu", "nr_cpus",
)  # fmt: skip
KDUMP_SUB_HEADER_FIELDS = (
    "phys_base", "dump_level", "split", "start_pfn", "end_pfn", "offset_vmcoreinfo",
    "size_vmcoreinfo", "offset_note", "note_size", "offset_eraseinfo", "size_eraseinfo",
    "start_pfn_64", "end_pfn_64", "max_mapnr_64",
)  # fmt: skip

HeaderFields = Mapping[str, Union[int, bytes]]


def disk_dump_header_struct(order: str, elf_class: int) -> struct.Struct:
    """disk_dump_header of a byte order and ELF class."""
    return struct.Struct(order + _DISK_DUMP_HEADER[elf_class])


def kdump_sub_header_struct(order: str, elf_class: int) -> struct.Struct:
    """kdump_sub_header of a byte order and ELF class."""
    return struct.Struct(order + _KDUMP_SUB_HEADER[elf_class])


def pack_disk_dump_header(order: str, elf_class: int, fields: HeaderFields) -> bytes:
    """
    Encode a disk_dump_header from its fields by name
    (:data:`DISK_DUMP_HEADER_FIELDS`); a field not given is 0 (or empty).
    """
    zero = {"signature": KDUMP_SIGNATURE, "header_version": KDUMP_HEADER_VERSION,
            "utsname": b"", "timestamp": b""}  # fmt: skip
    values = [fields.get(f, zero.get(f, 0)) for f in DISK_DUMP_HEADER_FIELDS]
    return disk_dump_header_struct(order, elf_class).pack(*values)


def pack_kdump_sub_header(order: str, elf_class: int, fields: HeaderFields) -> bytes:
    """Encode a kdump_sub_header from its fields by name; a field not given is 0."""
    values = [fields.get(f, 0) for f in KDUMP_SUB_HEADER_FIELDS]
    return kdump_sub_header_struct(order, elf_class).pack(*values)


def _div_round_up(n: int, d: int) -> int:
    return -(-n // d)


@dataclass(frozen=True)
class PageRun:
    """*count* whole pages from page frame *pfn* on, contiguous at *host_addr*."""

    pfn: int
    count: int
    host_addr: int


@dataclass(frozen=True)
class PartialPage:
    """
    Page frame *pfn*, only partly backed by memory: ``(offset in the page,
    host address, size)`` pieces, the rest zeros.
    """

    pfn: int
    pieces: Tuple[Tuple[int, int, int], ...]


def pages_of_segments(
    segments: Sequence[GuestRange], page_size: int
) -> Iterator[Union[PageRun, PartialPage]]:
    """
    Return the page frames of guest ranges, sorted and not overlapping, in
    order: a page that two ranges share is one page, as in QEMU's
    ``get_next_page()``.
    """
    pending: Optional[Tuple[int, List[Tuple[int, int, int]]]] = None
    for r in segments:
        paddr, size, host = r.paddr, r.size, r.host_addr
        addr, end = paddr, paddr + size
        while addr < end:
            pfn, off = divmod(addr, page_size)
            if pending is not None and pending[0] != pfn:
                yield PartialPage(pending[0], tuple(pending[1]))
                pending = None
            n = min(end - addr, page_size - off)
            if off == 0 and n == page_size:
                count = (end - addr) // page_size
                yield PageRun(pfn, count, host + (addr - paddr))
                addr += count * page_size
                continue
            if pending is None:
                pending = (pfn, [])
            pending[1].append((off, host + (addr - paddr), n))
            addr += n
            if addr % page_size == 0:
                yield PartialPage(pending[0], tuple(pending[1]))
                pending = None
    if pending is not None:
        yield PartialPage(pending[0], tuple(pending[1]))


@dataclass(frozen=True)
class KdumpHeader:
    """What a kdump-compressed file's headers say besides the memory."""

    #: ``ELFCLASS32`` or ``ELFCLASS64``: which header layout.
    elf_class: int
    #: ``ELFDATA2LSB`` or ``ELFDATA2MSB``: byte order of every field.
    endian: int
    #: The dump's page (and block) size.
    page_size: int
    #: ``utsname.machine`` (QEMU's ``ELF_MACHINE_UNAME``).
    machine: str
    #: Number of vCPUs.
    nr_cpus: int
    #: The kernel's ``phys_base``.
    phys_base: int
    #: One of :data:`KDUMP_FORMATS`.
    compression: str
    #: Offset of the VMCOREINFO note in the notes, if any.
    vmcoreinfo_note: Optional[int] = None
    #: The kernel's ``struct new_utsname``, if known; else the header names
    #: only *machine*.
    utsname: Optional[bytes] = None


class KdumpLayout:
    """
    The headers and bitmaps of a kdump-compressed file, and where its page
    descriptors and page data go.

    :param header: what the headers say
    :param notes: the ELF notes, encoded
    :param segments: the memory, as for :func:`pages_of_segments`
    """

    def __init__(self, header: KdumpHeader, notes: bytes, segments: Sequence[GuestRange]) -> None:
        if header.compression not in COMPRESSION_FLAGS:
            raise ValueError(f"unknown kdump compression {header.compression!r}")
        elf_class, page_size, utsname = header.elf_class, header.page_size, header.utsname
        self.elf_class = elf_class
        self.order = struct_order(header.endian)
        self.page_size = page_size
        self.machine = header.machine
        self.notes = notes
        self.vmcoreinfo_note = header.vmcoreinfo_note
        self.nr_cpus = header.nr_cpus
        self.phys_base = header.phys_base
        self.compression = header.compression
        self.segments = list(segments)
        if utsname is not None and len(utsname) != 6 * _UTSNAME_FIELD:
            raise ValueError("a struct new_utsname is 390 bytes")
        self.utsname = utsname
        if not self.segments:
            raise ValueError("no memory to dump")
        # QEMU's get_max_mapnr(): the page frame of the end of the last block.
        self.max_mapnr = self.segments[-1].end // page_size
        self.len_bitmap = page_size * _div_round_up(_div_round_up(self.max_mapnr, 8), page_size)
        sub_size = kdump_sub_header_struct(self.order, elf_class).size
        self.sub_hdr_blocks = _div_round_up(sub_size + len(notes), page_size)
        self.bitmap_blocks = 2 * (self.len_bitmap // page_size)
        self.note_offset = page_size + sub_size
        self.bitmap_offset = (1 + self.sub_hdr_blocks) * page_size
        self.desc_offset = self.bitmap_offset + self.bitmap_blocks * page_size
        self.pages = 0
        for item in pages_of_segments(self.segments, page_size):
            self.pages += item.count if isinstance(item, PageRun) else 1
        #: Offset of the shared zero page, the first page data.
        self.data_offset = self.desc_offset + PAGE_DESC_SIZE * self.pages

    def header(self) -> bytes:
        """Return the disk_dump_header and kdump_sub_header blocks, with the notes."""
        utsname = bytearray(6 * _UTSNAME_FIELD)
        if self.utsname is not None:
            utsname[:] = self.utsname
        else:
            machine = self.machine.encode()[: _UTSNAME_FIELD - 1]
            utsname[4 * _UTSNAME_FIELD : 4 * _UTSNAME_FIELD + len(machine)] = machine
        dh = pack_disk_dump_header(self.order, self.elf_class, {
            "utsname": bytes(utsname),
            "status": COMPRESSION_FLAGS[self.compression],
            "block_size": self.page_size,
            "sub_hdr_size": self.sub_hdr_blocks,
            "bitmap_blocks": self.bitmap_blocks,
            "max_mapnr": min(self.max_mapnr, 0xFFFFFFFF),
            "nr_cpus": self.nr_cpus,
        })  # fmt: skip
        offset_vmcoreinfo = size_vmcoreinfo = 0
        if self.vmcoreinfo_note is not None:
            namesz, descsz = struct.unpack_from(self.order + "II", self.notes, self.vmcoreinfo_note)
            offset_vmcoreinfo = self.note_offset + self.vmcoreinfo_note + 12 + note_align(namesz)
            size_vmcoreinfo = descsz
        kh = pack_kdump_sub_header(self.order, self.elf_class, {
            "phys_base": self.phys_base,
            "dump_level": DUMP_LEVEL,
            "offset_vmcoreinfo": offset_vmcoreinfo,
            "size_vmcoreinfo": size_vmcoreinfo,
            "offset_note": self.note_offset,
            "note_size": len(self.notes),
            "max_mapnr_64": self.max_mapnr,
        })  # fmt: skip
        out = bytearray(self.bitmap_offset)
        out[: len(dh)] = dh
        out[self.page_size : self.page_size + len(kh)] = kh
        out[self.note_offset : self.note_offset + len(self.notes)] = self.notes
        return bytes(out)

    def bitmap(self) -> bytes:
        """
        Return one bitmap, bit *n* (least significant first) set for each
        page frame *n* in the dump; both bitmaps are this one.
        """
        bits = bytearray(self.len_bitmap)
        for item in pages_of_segments(self.segments, self.page_size):
            if isinstance(item, PartialPage):
                bits[item.pfn // 8] |= 1 << (item.pfn % 8)
                continue
            start, end = item.pfn, item.pfn + item.count
            while start < end and start % 8:
                bits[start // 8] |= 1 << (start % 8)
                start += 1
            while end > start and end % 8:
                end -= 1
                bits[end // 8] |= 1 << (end % 8)
            bits[start // 8 : end // 8] = b"\xff" * ((end - start) // 8)
        return bytes(bits)


def page_desc_dtype(order: str) -> "np.dtype":
    """makedumpfile's ``page_desc``: ``offset``, ``size``, ``flags``, ``page_flags``."""
    import numpy as np

    return np.dtype(
        [("offset", order + "u8"), ("size", order + "u4"),
         ("flags", order + "u4"), ("page_flags", order + "u8")]
    )  # fmt: skip


#: Bytes of one ``page_desc`` (:func:`page_desc_dtype`'s size; numpy, and
#: its import time, only when pages are written or read).
PAGE_DESC_SIZE = 24


def page_descriptors(
    order: str, offsets: "np.ndarray", sizes: "np.ndarray", flags: "np.ndarray"
) -> bytes:
    """Encode page_desc entries: offset, size, flags and page_flags (0)."""
    import numpy as np

    desc = np.zeros(len(offsets), dtype=page_desc_dtype(order))
    desc["offset"] = offsets
    desc["size"] = sizes
    desc["flags"] = flags
    return desc.tobytes()


#: makedumpfile's "flattened" stream (what QEMU writes for kdump-zlib).
FLATTENED_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096


class KdumpFile:
    """
    A kdump-compressed file read back: its headers, notes, and the pages
    its second bitmap says are dumped.

    :param fd: the file, open for reading
    :raises ValueError: if it is not a kdump-compressed file (header
        version 6, a sane block size)
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        head = os.pread(fd, 1 << 16, 0)
        if head[:8] != KDUMP_SIGNATURE or len(head) < 1024:
            raise ValueError("not a kdump-compressed file")
        # The header's byte order is the guest's; the version tells it.
        self.order = "<" if struct.unpack_from("<I", head, 8)[0] < 0x10000 else ">"
        if struct.unpack_from(self.order + "I", head, 8)[0] != KDUMP_HEADER_VERSION:
            raise ValueError("unsupported kdump header version")
        # The 64-bit header reserves 22 bytes for the timestamp, the 32-bit
        # one 10: the layout whose block size makes sense is the file's.
        sane = [
            (elf_class, fields)
            for elf_class, fmt in _DISK_DUMP_HEADER.items()
            for fields in [struct.unpack_from(self.order + fmt, head)]
            if 4096 <= fields[5] <= 1 << 20 and fields[5] & (fields[5] - 1) == 0
        ]
        if not sane:
            raise ValueError("no sane block size in the kdump header")
        self.elf_class, fields = sane[0]
        header = dict(zip(DISK_DUMP_HEADER_FIELDS, fields))
        block = header["block_size"]
        self.header = header
        self.utsname: bytes = fields[2]
        self.block_size = block
        self.sub_struct = kdump_sub_header_struct(self.order, self.elf_class)
        raw = os.pread(fd, self.sub_struct.size, block)
        if len(raw) < self.sub_struct.size:
            raise ValueError("the kdump file ends in its sub-header")
        self.sub = dict(zip(KDUMP_SUB_HEADER_FIELDS, self.sub_struct.unpack(raw)))
        self.notes = os.pread(fd, self.sub["note_size"], self.sub["offset_note"])
        self.bitmap_offset = (1 + header["sub_hdr_size"]) * block
        self.len_bitmap = header["bitmap_blocks"] // 2 * block
        self.desc_offset = self.bitmap_offset + header["bitmap_blocks"] * block
        self.bitmap2 = os.pread(fd, self.len_bitmap, self.bitmap_offset + self.len_bitmap)
        if len(self.bitmap2) < self.len_bitmap:
            raise ValueError("the kdump file ends in its bitmaps")
        import numpy as np

        bits = np.unpackbits(np.frombuffer(self.bitmap2, dtype=np.uint8), bitorder="little")
        #: The dumped page frames, in file order.
        self.pfns: np.ndarray = np.flatnonzero(bits)
        self.data_offset = self.desc_offset + PAGE_DESC_SIZE * len(self.pfns)
        self._descs: Optional[np.ndarray] = None

    @property
    def machine(self) -> str:
        """``utsname.machine``."""
        return (
            self.utsname[4 * _UTSNAME_FIELD : 5 * _UTSNAME_FIELD]
            .split(b"\0")[0]
            .decode(errors="replace")
        )

    def descriptors(self) -> "np.ndarray":
        """Every page descriptor (``offset``, ``size``, ``flags``), in file order."""
        if self._descs is not None:
            return self._descs
        dtype = page_desc_dtype(self.order)
        raw = os.pread(self.fd, dtype.itemsize * len(self.pfns), self.desc_offset)
        if len(raw) < dtype.itemsize * len(self.pfns):
            raise ValueError("the kdump file ends in its page descriptors")
        import numpy as np

        self._descs = np.frombuffer(raw, dtype=dtype)
        return self._descs

    def page(self, offset: int, size: int, flags: int) -> bytes:
        """The content of the page a descriptor describes."""
        data = os.pread(self.fd, size, offset)
        if len(data) < size:
            raise ValueError(f"page data at 0x{offset:x} is past the end of the file")
        if flags & DUMP_DH_COMPRESSED_ZLIB:
            data = zlib.decompress(data)
        elif flags & DUMP_DH_COMPRESSED_ZSTD:
            import zstandard

            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=self.block_size)
        elif flags & DUMP_DH_COMPRESSED_SNAPPY:
            import cramjam

            data = bytes(cramjam.snappy.decompress_raw(data))
        elif flags & DUMP_DH_COMPRESSED_LZO:
            from drgn_qemu.lzo import lzo1x_decompress_safe

            data = lzo1x_decompress_safe(data, self.block_size)
        if len(data) != self.block_size:
            raise ValueError(f"page data at 0x{offset:x} is not a page")
        return data

    def read_phys(self, paddr: int, size: int) -> bytes:
        """
        Read guest-physical memory from the dumped pages.

        :raises LookupError: for memory not in the file
        """
        out = []
        descs = self.descriptors()
        while size > 0:
            pfn, off = divmod(paddr, self.block_size)
            i = int(self.pfns.searchsorted(pfn))
            if i == len(self.pfns) or self.pfns[i] != pfn:
                raise LookupError(f"guest-physical 0x{paddr:x} is not in the kdump file")
            d = descs[i]
            page = self.page(int(d["offset"]), int(d["size"]), int(d["flags"]))
            n = min(size, self.block_size - off)
            out.append(page[off : off + n])
            paddr += n
            size -= n
        return b"".join(out)
