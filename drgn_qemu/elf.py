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

import struct
from dataclasses import dataclass
from typing import BinaryIO, List, Optional, Sequence, Tuple

from drgn_qemu.ranges import GuestRange

__all__ = (
    "ELFCLASS32",
    "ELFCLASS64",
    "ELFDATA2LSB",
    "ELFDATA2MSB",
    "ET_CORE",
    "ElfHeaders",
    "ElfCoreLayout",
    "LoadSegment",
    "PN_XNUM",
    "PT_LOAD",
    "PT_NOTE",
    "PT_TLS",
    "NT_FPREGSET",
    "NT_PRFPREG",
    "NT_PRSTATUS",
    "PROCESS_CORE_NOTES",
    "ProgramHeader",
    "elf_note",
    "note_align",
    "parse_notes",
    "process_core_notes",
    "struct_order",
    "read_section",
    "read_elf_headers",
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


@dataclass(frozen=True)
class LoadSegment:
    """
    A PT_LOAD of *memsz* bytes of guest memory at guest-physical *paddr*,
    seen at guest-virtual *vaddr*.
    """

    paddr: int
    vaddr: int
    memsz: int
    #: The index of the segment whose bytes these are, all of them, and
    #: *vaddr* written as it is. None: the segment holding *paddr* and
    #: QEMU's rules with paging (see :meth:`ElfCoreLayout.offset_range`;
    #: a *vaddr* of 0 is written as *paddr*).
    segment: Optional[int] = None


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
    :param loads: the PT_LOADs, if not one per segment with ``p_vaddr``
        its ``p_paddr`` (as QEMU writes them without paging): with
        ``paging=true``, one per guest-virtual mapping, which point into the
        segments; or one per segment with a ``p_vaddr`` of its own
    """

    def __init__(
        self,
        machine: int,
        elf_class: int,
        endian: int,
        notes: bytes,
        segments: Sequence[GuestRange],
        phdrs_first: bool = False,
        loads: Optional[Sequence["LoadSegment"]] = None,
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
        order = struct_order(endian)
        self._ehdr = struct.Struct(order + _EHDR[elf_class])
        self._phdr = struct.Struct(order + _PHDR[elf_class])
        self._shdr = struct.Struct(order + _SHDR[elf_class])
        limit = 1 << (64 if elf_class == ELFCLASS64 else 32)
        self.loads = (
            list(loads)
            if loads is not None
            else [LoadSegment(s.paddr, s.paddr, s.size, i) for i, s in enumerate(self.segments)]
        )
        self.phnum = 1 + len(self.loads)
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
        phdrs += [self._pack_load(load) for load in self.loads]
        if self.phdrs_first:
            return ehdr + b"".join(phdrs) + (shdr0 if self.shnum else b"") + self.notes
        return ehdr + shdr0 + shdr1 + b"".join(phdrs) + self.notes

    def trailer(self) -> bytes:
        """Return every byte after the last segment's data."""
        return b"" if self.phdrs_first else SHSTRTAB

    def offset_range(self, paddr: int, memsz: int) -> Tuple[int, int]:
        """
        QEMU's ``get_offset_range()``: the file offset of guest-physical
        *paddr* and how many of the *memsz* bytes from there the file holds
        (up to the end of the segment holding *paddr*); ``(-1, 0)`` if no
        segment holds it.
        """
        for segment, offset in zip(self.segments, self.segment_offsets):
            if segment.paddr <= paddr < segment.paddr + segment.size:
                return offset + paddr - segment.paddr, min(memsz, segment.end - paddr)
        return -1, 0

    def _pack_load(self, load: "LoadSegment") -> bytes:
        """A PT_LOAD as QEMU's ``write_elf64_load()`` packs it (fields cut to 32 bits in ELF32)."""
        if load.segment is not None:
            offset = self.segment_offsets[load.segment]
            return self._pack_phdr(PT_LOAD, offset, load.vaddr, load.paddr, load.memsz,
                                   load.memsz)  # fmt: skip
        offset, filesz = self.offset_range(load.paddr, load.memsz)
        mask = (1 << 64) - 1 if self.elf_class == ELFCLASS64 else 0xFFFFFFFF
        paddr, vaddr = load.paddr & mask, load.vaddr & mask
        return self._pack_phdr(PT_LOAD, offset & mask, vaddr or paddr, paddr, filesz & mask,
                               load.memsz & mask)  # fmt: skip

    def _pack_phdr(
        self, p_type: int, offset: int, vaddr: int, paddr: int, filesz: int, memsz: int
    ) -> bytes:
        if self.elf_class == ELFCLASS64:
            return self._phdr.pack(p_type, 0, offset, vaddr, paddr, filesz, memsz, 0)
        return self._phdr.pack(p_type, offset, vaddr, paddr, filesz, memsz, 0, 0)


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


#: ``n_type`` of the note listing a core's mapped files (``fs/binfmt_elf.c``).
NT_FILE = 0x46494C45


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


def read_section(f: BinaryIO, section: str, limit: int = 1 << 16) -> Optional[bytes]:
    """
    Return the first *limit* bytes of a section of an ELF file, found by
    name in its section headers, or None if it has no such section. *f* is
    the file, open for reading.

    :raises ValueError: if the file is not an ELF file
    """
    f.seek(0)
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
