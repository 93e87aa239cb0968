# SPDX-License-Identifier: GPL-2.0-or-later
"""
ELF core files
--------------

The ``drgn_qemu.elf`` module lays out an ELF ``ET_CORE`` file the way QEMU's
``dump-guest-memory`` does (``dump/dump.c``), and knows nothing about QEMU::

    ELF header
    section headers: [0] NULL (sh_info = real segment count past PN_XNUM),
                     [1] .shstrtab
    program headers: PT_NOTE, then one PT_LOAD per memory segment
    notes
    memory segments, back to back
    section string table ("\\0.shstrtab\\0")

or, with ``phdrs_first``, the way Linux's ``/proc/vmcore`` is laid out, which
makedumpfile needs (it looks for the program headers right after the ELF
header, whatever ``e_phoff`` says)::

    ELF header
    program headers
    section header [0], only when the segment count overflows e_phnum
    notes
    memory segments

Both classes (ELFCLASS32/64) and both byte orders are supported.
"""

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, List, Optional, Sequence, Tuple

from drgn_qemu.ranges import GuestRange

if TYPE_CHECKING:
    from drgn_qemu.options import DumpOptions
    from drgn_qemu.reader import Chunk, MemoryReader

__all__ = (
    "ELFCLASS32",
    "ELFCLASS64",
    "ELFDATA2LSB",
    "ELFDATA2MSB",
    "ET_CORE",
    "CoreFileInfo",
    "CoreSegment",
    "FileMapping",
    "ElfHeaders",
    "ElfCoreLayout",
    "PN_XNUM",
    "PT_LOAD",
    "PT_NOTE",
    "PT_TLS",
    "NT_FPREGSET",
    "NT_PRFPREG",
    "NT_PRSTATUS",
    "PROCESS_CORE_NOTES",
    "core_file_mappings",
    "core_lacks_private_memory",
    "core_segments_damage",
    "SCAN_THREADS",
    "ProgramHeader",
    "elf_note",
    "note_align",
    "parse_notes",
    "process_core_notes",
    "read_build_id",
    "read_core_notes",
    "struct_order",
    "read_core_file_info",
    "read_debuglink",
    "read_elf_section",
    "read_elf_headers",
    "read_tls_segment",
)

ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PT_TLS = 7
SHT_STRTAB = 3
PN_XNUM = 0xFFFF
SHSTRTAB = b"\0.shstrtab\0"

#: Most threads finding the zero pages of an ELF dump by default. Measured
#: on a mapped 8 GiB core of zeros: one thread 1.5 s, two 1.05 s; the scan is
#: bound by memory bandwidth, and each thread holds one more chunk mapped,
#: so no more than two.
SCAN_THREADS = 2

_EHDR = {ELFCLASS64: "16sHHIQQQIHHHHHH", ELFCLASS32: "16sHHIIIIIHHHHHH"}
# Program header fields are in different orders in the two classes.
_PHDR = {ELFCLASS64: "IIQQQQQQ", ELFCLASS32: "IIIIIIII"}
_SHDR = {ELFCLASS64: "IIQQQQIIQQ", ELFCLASS32: "IIIIIIIIII"}


def struct_order(endian: int) -> str:
    """The :mod:`struct` byte-order character of ``ELFDATA2LSB`` or ``ELFDATA2MSB``."""
    return "<" if endian == ELFDATA2LSB else ">"


def note_align(n: int) -> int:
    """*n* rounded up to the 4-byte alignment of ELF note names and descriptors."""
    return (n + 3) & ~3


def elf_note(name: bytes, note_type: int, desc: bytes, endian: int = ELFDATA2LSB) -> bytes:
    """
    Encode one ELF note: ``n_namesz``, ``n_descsz``, ``n_type``, then the name
    (NUL-terminated) and the descriptor, each padded to 4 bytes.
    """
    order = struct_order(endian)
    name_z = name + b"\0"
    return (
        struct.pack(order + "III", len(name_z), len(desc), note_type)
        + name_z.ljust(note_align(len(name_z)), b"\0")
        + desc.ljust(note_align(len(desc)), b"\0")
    )


class ElfCoreLayout:
    """
    The header of an ELF core file with one PT_NOTE and a PT_LOAD per memory
    segment, with the file offset of each segment's data.

    :param machine: ``e_machine``
    :param elf_class: :data:`ELFCLASS32` or :data:`ELFCLASS64`
    :param endian: :data:`ELFDATA2LSB` or :data:`ELFDATA2MSB`
    :param notes: the notes, already encoded (see :func:`elf_note`)
    :param segments: the guest ranges, one PT_LOAD each, in file order
    :param phdrs_first: program headers right after the ELF header, and no
        section headers but the one that carries a segment count past
        ``PN_XNUM``
    :param vaddrs: each segment's ``p_vaddr``; by default its ``p_paddr``,
        as QEMU writes when it has no virtual address
    """

    def __init__(
        self,
        machine: int,
        elf_class: int,
        endian: int,
        notes: bytes,
        segments: Sequence[GuestRange],
        phdrs_first: bool = False,
        vaddrs: Optional[Sequence[int]] = None,
    ) -> None:
        if elf_class not in _EHDR:
            raise ValueError(f"bad ELF class {elf_class}")
        if endian not in (ELFDATA2LSB, ELFDATA2MSB):
            raise ValueError(f"bad ELF data encoding {endian}")
        self.machine = machine
        self.elf_class = elf_class
        self.endian = endian
        self.notes = notes
        self.segments = list(segments)
        self.vaddrs = list(vaddrs) if vaddrs is not None else [r.paddr for r in self.segments]
        if len(self.vaddrs) != len(self.segments):
            raise ValueError("one p_vaddr per segment")
        order = struct_order(endian)
        self._ehdr = struct.Struct(order + _EHDR[elf_class])
        self._phdr = struct.Struct(order + _PHDR[elf_class])
        self._shdr = struct.Struct(order + _SHDR[elf_class])
        limit = 1 << (64 if elf_class == ELFCLASS64 else 32)
        self.phnum = 1 + len(self.segments)
        if self.phnum > 0xFFFFFFFF:
            raise ValueError("too many segments for an ELF file")
        self.phdrs_first = phdrs_first
        if phdrs_first:
            self.shnum = 1 if self.phnum >= PN_XNUM else 0
            self.phoff = self._ehdr.size
            self.shoff = self.phoff + self.phnum * self._phdr.size if self.shnum else 0
            self.note_offset = self.phoff + self.phnum * self._phdr.size
            self.note_offset += self.shnum * self._shdr.size
        else:
            self.shnum = 2
            self.shoff = self._ehdr.size
            self.phoff = self.shoff + self.shnum * self._shdr.size
            self.note_offset = self.phoff + self.phnum * self._phdr.size
        self.data_offset = self.note_offset + len(notes)
        self.segment_offsets: List[int] = []
        offset = self.data_offset
        for segment in self.segments:
            if segment.paddr + segment.size > limit:
                raise ValueError(
                    f"segment at {segment.paddr:#x} does not fit in ELF class {elf_class}"
                )
            self.segment_offsets.append(offset)
            offset += segment.size
        self.shstrtab_offset = offset
        self.file_size = offset + len(self.trailer())
        if self.file_size > limit:
            raise ValueError(f"the file does not fit in ELF class {elf_class}")

    def header(self) -> bytes:
        """Return every byte before the first segment's data."""
        ident = b"\x7fELF" + bytes([self.elf_class, self.endian, EV_CURRENT])
        ehdr = self._ehdr.pack(
            ident.ljust(16, b"\0"),
            ET_CORE,
            self.machine,
            EV_CURRENT,
            0,  # e_entry
            self.phoff,
            self.shoff,
            0,  # e_flags
            self._ehdr.size,
            self._phdr.size,
            min(self.phnum, PN_XNUM),
            self._shdr.size if self.shnum else 0,  # as Linux and QEMU before 7.2: none, none
            self.shnum,
            1 if self.shnum == 2 else 0,  # e_shstrndx
        )
        # Section 0 carries the real segment count once e_phnum overflows.
        shdr0 = self._shdr.pack(
            0, 0, 0, 0, 0, 0, 0, self.phnum if self.phnum >= PN_XNUM else 0, 0, 0
        )
        shdr1 = self._shdr.pack(
            1, SHT_STRTAB, 0, 0, self.shstrtab_offset, len(SHSTRTAB), 0, 0, 0, 0
        )
        phdrs = [self._pack_phdr(PT_NOTE, self.note_offset, 0, 0, len(self.notes), len(self.notes))]
        for segment, offset, vaddr in zip(self.segments, self.segment_offsets, self.vaddrs):
            phdrs.append(
                self._pack_phdr(PT_LOAD, offset, vaddr, segment.paddr, segment.size, segment.size)
            )
        if self.phdrs_first:
            return ehdr + b"".join(phdrs) + (shdr0 if self.shnum else b"") + self.notes
        return ehdr + shdr0 + shdr1 + b"".join(phdrs) + self.notes

    def trailer(self) -> bytes:
        """Return every byte after the last segment's data."""
        return b"" if self.phdrs_first else SHSTRTAB

    def write(
        self,
        fd: int,
        reader: "MemoryReader",
        options: "DumpOptions",
        progress: Optional[Callable[[int], None]] = None,
    ) -> int:
        """
        Write the file to *fd*: the header, every segment's memory read by
        *reader* (with ``options.sparse``, zero pages become holes), the
        trailer. *progress* is called with the bytes of each chunk done.
        Returns the file's size.

        :raises MemoryFault: if *reader* cannot read the memory
        :raises OSError: if writing fails
        """
        from drgn_qemu.fileio import pwrite_all
        from drgn_qemu.pipeline import default_threads

        pwrite_all(fd, memoryview(self.header()), 0)
        chunks = reader.chunks(self.segments, options.chunk_size)
        if options.sparse:
            threads = options.threads or min(default_threads(), SCAN_THREADS)
            self._copy_sparse(chunks, fd, reader, options.chunk_size, threads, progress)
        else:
            self._copy_all(chunks, fd, reader, options.chunk_size, progress)
        pwrite_all(fd, memoryview(self.trailer()), self.shstrtab_offset)
        os.ftruncate(fd, self.file_size)
        return self.file_size

    def _copy_all(
        self,
        chunks: Iterator["Chunk"],
        fd: int,
        reader: "MemoryReader",
        chunk_size: int,
        progress: Optional[Callable[[int], None]],
    ) -> None:
        """Copy every byte, zeros included (``--no-sparse``)."""
        from drgn_qemu.fileio import pwrite_all, pwrite_zeros

        buf = memoryview(bytearray(chunk_size))
        zeros = memoryview(bytes(chunk_size))
        for chunk in chunks:
            out = self.segment_offsets[chunk.index] + chunk.offset
            if not chunk.has_data:
                pwrite_zeros(fd, chunk.size, out, zeros)
            elif not reader.copy(chunk.address, chunk.size, fd, out):
                view = reader.read_view(chunk.address, buf[: chunk.size])
                pwrite_all(fd, view, out)
                del view
                reader.release(chunk.address, chunk.size)
            if progress is not None:
                progress(chunk.size)

    def _copy_sparse(
        self,
        chunks: Iterator["Chunk"],
        fd: int,
        reader: "MemoryReader",
        chunk_size: int,
        threads: int,
        progress: Optional[Callable[[int], None]],
    ) -> None:
        """
        Copy the pages that are not all zero: chunks are read here and
        scanned for zero pages by *threads* threads while earlier chunks'
        non-zero runs are written, in order (numpy lets go of the GIL while
        it scans). A chunk's buffer is reused only once the chunk is written.
        """
        from drgn_qemu.fileio import pwrite_all
        from drgn_qemu.pipeline import ChunkPipeline
        from drgn_qemu.sparse import nonzero_runs

        def finish(runs: List[Tuple[int, int]], done: Tuple[memoryview, "Chunk"]) -> None:
            view, chunk = done
            address, out = chunk.address, self.segment_offsets[chunk.index] + chunk.offset
            for a, b in runs:
                if not reader.copy(address + a, b - a, fd, out + a, seen=True):
                    pwrite_all(fd, view[a:b], out + a)
            reader.release(address, chunk.size)
            if progress is not None:
                progress(chunk.size)

        with ChunkPipeline(threads, chunk_size, finish, "drgn-qemu-scan") as pipeline:
            for chunk in chunks:
                if not chunk.has_data:
                    if progress is not None:
                        progress(chunk.size)
                    continue
                buf = pipeline.buffer()
                view = reader.read_view(chunk.address, buf[: chunk.size])
                pipeline.submit((view, chunk), buf, nonzero_runs, view)
            pipeline.finish_all()

    def _pack_phdr(
        self, p_type: int, offset: int, vaddr: int, paddr: int, filesz: int, memsz: int
    ) -> bytes:
        if self.elf_class == ELFCLASS64:
            return self._phdr.pack(p_type, 0, offset, vaddr, paddr, filesz, memsz, 0)
        return self._phdr.pack(p_type, offset, vaddr, paddr, filesz, memsz, 0, 0)


@dataclass(frozen=True)
class CoreSegment:
    """A PT_LOAD of a core file: memory at *vaddr*, the first *filesz* bytes at *offset*."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    #: ``p_flags``: ``PF_R``, ``PF_W``, ``PF_X``.
    flags: int = 0


@dataclass(frozen=True)
class CoreFileInfo:
    """What :func:`read_core_file_info` found in an ELF core file's headers."""

    #: Size of the file in bytes.
    file_size: int
    #: Bytes the file needs to hold every segment its headers announce.
    needed_size: int
    #: ``e_machine``.
    machine: int
    #: The PT_LOAD segments, in file order.
    segments: Tuple[CoreSegment, ...] = ()


@dataclass(frozen=True)
class ProgramHeader:
    """One program header of an ELF file."""

    p_type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int
    paddr: int = 0
    flags: int = 0


@dataclass(frozen=True)
class ElfHeaders:
    """An ELF file's header fields that matter here, and its program headers."""

    elf_class: int
    endian: int
    e_type: int
    machine: int
    phoff: int
    shoff: int
    #: Size of the file in bytes.
    file_size: int
    #: Bytes the program header table needs.
    needed_size: int
    #: None if the file is too short for them.
    phdrs: Optional[List[ProgramHeader]]

    def notes(self, f: BinaryIO) -> List[Tuple[bytes, int, bytes]]:
        """``(name, type, descriptor)`` of every note of the PT_NOTE segments in *f*."""
        out = []
        for ph in self.phdrs or ():
            if ph.p_type == PT_NOTE:
                f.seek(ph.offset)
                out += parse_notes(f.read(ph.filesz), self.endian)
        return out


def parse_notes(data: bytes, endian: int) -> List[Tuple[bytes, int, bytes]]:
    """``(name, type, descriptor)`` of each ELF note in *data* (see :func:`elf_note`)."""
    order = struct_order(endian)
    out = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(order + "III", data, pos)
        pos += 12
        name = data[pos : pos + namesz].rstrip(b"\0")
        pos += note_align(namesz)
        out.append((name, kind, data[pos : pos + descsz]))
        pos += note_align(descsz)
    return out


def read_elf_headers(f: BinaryIO) -> ElfHeaders:
    """
    Read an ELF file's header and program headers.

    :raises ValueError: if the file is not an ELF file, naming why
    """
    ident = f.read(16)
    if len(ident) < 16 or ident[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    elf_class, endian = ident[4], ident[5]
    if elf_class not in _EHDR or endian not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ValueError("not a valid ELF file (bad class or byte order)")
    order = struct_order(endian)
    ehdr_struct = struct.Struct(order + _EHDR[elf_class])
    f.seek(0)
    raw = f.read(ehdr_struct.size)
    if len(raw) < ehdr_struct.size:
        raise ValueError("truncated ELF header")
    ehdr = ehdr_struct.unpack(raw)
    e_type, e_machine, e_phoff, e_phentsize, e_phnum = (ehdr[i] for i in (1, 2, 5, 9, 10))
    phdr_struct = struct.Struct(order + _PHDR[elf_class])
    if e_phnum == PN_XNUM:
        shdr_struct = struct.Struct(order + _SHDR[elf_class])
        f.seek(ehdr[6])
        raw = f.read(shdr_struct.size)
        if len(raw) < shdr_struct.size:
            raise ValueError("truncated ELF section header")
        e_phnum = shdr_struct.unpack(raw)[7]
    if e_phnum and e_phentsize < phdr_struct.size:
        raise ValueError("bad ELF program header size")
    f.seek(0, 2)
    file_size = f.tell()
    needed = e_phoff + e_phnum * e_phentsize
    phdrs: Optional[List[ProgramHeader]] = None
    if needed <= file_size:
        f.seek(e_phoff)
        table = f.read(e_phnum * e_phentsize)
        phdrs = []
        for i in range(e_phnum):
            fields = phdr_struct.unpack_from(table, i * e_phentsize)
            if elf_class == ELFCLASS64:
                phdrs.append(ProgramHeader(*(fields[j] for j in (0, 2, 3, 5, 6, 7, 4, 1))))
            else:
                phdrs.append(ProgramHeader(*(fields[j] for j in (0, 1, 2, 4, 5, 7, 3, 6))))
    return ElfHeaders(
        elf_class, endian, e_type, e_machine, e_phoff, ehdr[6], file_size, needed, phdrs
    )


def read_core_file_info(path: str) -> CoreFileInfo:
    """
    Read an ELF core file's header and program headers.

    :raises ValueError: if the file is not an ELF core file, naming why
    :raises OSError: if the file cannot be read
    """
    with open(path, "rb") as f:
        headers = read_elf_headers(f)
    e_type, e_machine, file_size, needed, phdrs = (
        headers.e_type,
        headers.machine,
        headers.file_size,
        headers.needed_size,
        headers.phdrs,
    )
    if e_type != ET_CORE:
        raise ValueError("an ELF file but not a core dump (e_type is not ET_CORE)")
    if phdrs is None:
        return CoreFileInfo(file_size, needed, e_machine)
    segments = []
    for ph in phdrs:
        if ph.filesz:
            needed = max(needed, ph.offset + ph.filesz)
        if ph.p_type == PT_LOAD:
            segments.append(CoreSegment(ph.vaddr, ph.memsz, ph.offset, ph.filesz, ph.flags))
    return CoreFileInfo(file_size, needed, e_machine, tuple(segments))


@dataclass(frozen=True)
class FileMapping:
    """
    A file mapped in a process, from its core's ``NT_FILE`` note: host
    addresses ``[start, end)`` map *path* from byte *offset*. Linux marks a
    file deleted since by appending ``" (deleted)"`` to *path*.
    """

    start: int
    end: int
    offset: int
    path: str

    @property
    def deleted(self) -> bool:
        """Whether the file no longer has a name (memfd, shared anonymous memory, unlinked)."""
        return self.path.endswith(" (deleted)")


#: ``n_type`` of the note listing a core's mapped files (``fs/binfmt_elf.c``).
NT_FILE = 0x46494C45


def core_file_mappings(path: str) -> List[FileMapping]:
    """
    Return the mapped files a process core lists in its ``NT_FILE`` note
    (written by Linux and by gdb's ``gcore``): ``count, page_size``, then
    ``start, end, file page`` per mapping, then the paths, each ending in
    NUL, all in words of the core's class. An empty list if the core has no
    such note.

    :raises ValueError: if the note is damaged
    """
    with open(path, "rb") as f:
        headers = read_elf_headers(f)
        notes = headers.notes(f)
    word = "Q" if headers.elf_class == ELFCLASS64 else "I"
    size = struct.calcsize(word)
    order = struct_order(headers.endian)
    for name, kind, desc in notes:
        if name != b"CORE" or kind != NT_FILE:
            continue
        if len(desc) < 2 * size:
            raise ValueError("NT_FILE note too short")
        count, page_size = struct.unpack_from(order + 2 * word, desc)
        table = 2 * size + 3 * size * count
        if table > len(desc):
            raise ValueError(f"NT_FILE note too short for its {count} mappings")
        names = desc[table:].split(b"\0")
        if len(names) < count:
            raise ValueError(f"NT_FILE note has fewer paths than its {count} mappings")
        out = []
        for i in range(count):
            start, end, page = struct.unpack_from(order + 3 * word, desc, 2 * size + 3 * size * i)
            path_i = names[i].decode(errors="surrogateescape")
            out.append(FileMapping(start, end, page * page_size, path_i))
        return out
    return []


#: ``n_type`` of the ``CORE`` notes of a vCPU's (or a thread's) registers:
#: general, and floating-point (``NT_FPREGSET`` on s390x).
NT_PRSTATUS = 1
NT_PRFPREG = NT_FPREGSET = 2

#: ``n_type`` of the ``CORE`` notes that only the core of a process has
#: (Linux's ``fs/binfmt_elf.c`` and gdb's ``gcore`` write them): a guest
#: vmcore (QEMU's ``dump-guest-memory``, ours, a kernel's ``/proc/vmcore``)
#: has none of them.
PROCESS_CORE_NOTES = {3: "NT_PRPSINFO", 6: "NT_AUXV", 0x53494749: "NT_SIGINFO", NT_FILE: "NT_FILE"}


def process_core_notes(notes: Sequence[Tuple[bytes, int, bytes]]) -> List[str]:
    """The names of the notes among *notes* that only a process's core has (sorted)."""
    return sorted(
        {PROCESS_CORE_NOTES[t] for n, t, _ in notes if n == b"CORE" and t in PROCESS_CORE_NOTES}
    )


def read_core_notes(path: str, limit: int = 16 << 20) -> List[Tuple[bytes, int, bytes]]:
    """
    The notes of an ELF core file (see :func:`parse_notes`), at most *limit*
    bytes of them: a damaged header cannot make this read the whole file.

    :raises ValueError: if the file is not an ELF file
    :raises OSError: if it cannot be read
    """
    out: List[Tuple[bytes, int, bytes]] = []
    with open(path, "rb") as f:
        headers = read_elf_headers(f)
        for ph in headers.phdrs or ():
            if ph.p_type == PT_NOTE and limit > 0:
                f.seek(ph.offset)
                data = f.read(min(ph.filesz, limit))
                limit -= len(data)
                out += parse_notes(data, headers.endian)
    return out


#: ``p_flags`` bit of a writable segment.
PF_W = 2


def core_lacks_private_memory(segments: Sequence[CoreSegment]) -> bool:
    """
    Return whether a process core holds none of the process's writable
    memory (no PT_LOAD both writable and with bytes in the file): Linux and
    gdb's ``gcore`` wrote it with a ``coredump_filter`` without bit 0
    (anonymous private), so the heap, the stacks and guest RAM are not in it.
    """
    return bool(segments) and not any(s.flags & PF_W and s.filesz for s in segments)


def core_segments_damage(segments: Sequence[CoreSegment], page: int = 4096) -> Optional[str]:
    """
    Return what is impossible in a process core's PT_LOAD table, or None.
    Linux and gdb's gcore write one PT_LOAD per mapping: whole pages (a
    mapping is; what is in the file, all of it, none, or its first page),
    mappings that do not overlap, and data that does not overlap in the
    file. A damaged program header breaks one of these; reading through it
    would put other bytes at an address.
    """
    for i, s in enumerate(segments):
        if s.vaddr % page or s.memsz % page or s.filesz % page or s.filesz > s.memsz:
            return (
                f"PT_LOAD {i} (at 0x{s.vaddr:x}, 0x{s.memsz:x} bytes, 0x{s.filesz:x} in the "
                "file) is not whole pages of a mapping"
            )
    checks = (
        ("the addresses", [(s.vaddr, s.vaddr + s.memsz) for s in segments]),
        ("the file data", [(s.offset, s.offset + s.filesz) for s in segments if s.filesz]),
    )
    for what, spans in checks:
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:
                return f"two PT_LOADs overlap in {what} (at 0x{start:x})"
    return None


def read_elf_section(path: str, section: str, limit: int = 1 << 16) -> Optional[bytes]:
    """
    Return the first *limit* bytes of a section of an ELF file, found by
    name in its section headers, or None if it has no such section.

    :raises ValueError: if the file is not an ELF file
    :raises OSError: if the file cannot be read
    """
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in _EHDR:
            raise ValueError("not an ELF file")
        order = struct_order(ident[5])
        ehdr_struct = struct.Struct(order + _EHDR[ident[4]])
        shdr_struct = struct.Struct(order + _SHDR[ident[4]])
        f.seek(0)
        ehdr = ehdr_struct.unpack(f.read(ehdr_struct.size))
        shoff, shentsize, shnum, shstrndx = ehdr[6], ehdr[11], ehdr[12], ehdr[13]
        if not shoff or shentsize < shdr_struct.size or shstrndx >= shnum:
            return None
        f.seek(shoff)
        table = f.read(shnum * shentsize)
        if len(table) < shnum * shentsize:
            return None
        # (sh_name, sh_offset, sh_size) of each section.
        sections = [
            (fields[0], fields[4], fields[5])
            for fields in (shdr_struct.unpack_from(table, i * shentsize) for i in range(shnum))
        ]
        f.seek(sections[shstrndx][1])
        names = f.read(sections[shstrndx][2])
        wanted = section.encode() + b"\0"
        for name, offset, size in sections:
            if names[name : name + len(wanted)] == wanted:
                f.seek(offset)
                return f.read(min(size, limit))
    return None


def read_build_id(path: str) -> Optional[bytes]:
    """
    The GNU build ID of an ELF file (its ``NT_GNU_BUILD_ID`` note, in
    ``.note.gnu.build-id``, or in a Linux ``vmlinux``'s ``.notes``), or None.

    :raises ValueError: if the file is not an ELF file
    :raises OSError: if it cannot be read
    """
    with open(path, "rb") as f:
        endian = f.read(6)[5:6]
    for section in (".note.gnu.build-id", ".notes"):
        data = read_elf_section(path, section)
        for name, kind, desc in parse_notes(data or b"", endian[0] if endian else ELFDATA2LSB):
            if name == b"GNU" and kind == 3:  # NT_GNU_BUILD_ID
                return desc
    return None


def read_debuglink(path: str) -> Optional[str]:
    """
    Return the file name in an ELF file's ``.gnu_debuglink`` section (where
    its separate debug info is), or None if it has none.

    :raises ValueError: if the file is not an ELF file
    :raises OSError: if the file cannot be read
    """
    data = read_elf_section(path, ".gnu_debuglink", 4096)
    if data is None:
        return None
    return data.split(b"\0", 1)[0].decode(errors="replace") or None


def read_tls_segment(path: str) -> Optional[Tuple[int, int, int]]:
    """
    Return the ``PT_TLS`` segment of an ELF executable or library as
    ``(p_vaddr, p_memsz, p_align)``, or None if it has none.

    :raises ValueError: if the file is not an ELF file
    :raises OSError: if the file cannot be read
    """
    with open(path, "rb") as f:
        phdrs = read_elf_headers(f).phdrs
    for ph in phdrs or ():
        if ph.p_type == PT_TLS:
            return ph.vaddr, ph.memsz, ph.align
    return None
