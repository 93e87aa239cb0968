# SPDX-License-Identifier: GPL-2.0-or-later
"""
Reading ELF inputs
------------------

The ``drgn_qemu.elffile`` module reads the ELF files drgn-qemu is given, by
path: a process core (its PT_LOAD table and how it can be damaged, its notes,
the files it maps from ``NT_FILE``) and QEMU's executable (a section, the
build ID, ``.gnu_debuglink``, the ``PT_TLS`` segment). The layouts it reads
are :mod:`drgn_qemu.elf`'s.
"""

import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from drgn_qemu.elf import (
    ELFCLASS64,
    ELFDATA2LSB,
    ET_CORE,
    NT_FILE,
    PT_LOAD,
    PT_NOTE,
    PT_TLS,
    parse_notes,
    read_elf_headers,
    read_section,
    struct_order,
)

__all__ = (
    "CoreFileInfo",
    "CoreSegment",
    "FileMapping",
    "core_file_mappings",
    "core_lacks_private_memory",
    "core_segments_damage",
    "read_build_id",
    "read_core_file_info",
    "read_core_notes",
    "read_debuglink",
    "read_elf_section",
    "read_tls_segment",
)


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

    @property
    def name(self) -> str:
        """*path* without Linux's ``" (deleted)"``."""
        return self.path[: -len(" (deleted)")] if self.deleted else self.path


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
        return read_section(f, section, limit)


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
