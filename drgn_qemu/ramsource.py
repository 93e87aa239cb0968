# SPDX-License-Identifier: GPL-2.0-or-later
"""
Where guest RAM's bytes come from
---------------------------------

A core file holds guest RAM only if Linux (or gdb's ``gcore``) wrote it:
memory QEMU marked ``MADV_DONTDUMP`` (``-machine dump-guest-core=off``) is
left out, and so is memory the process's ``coredump_filter`` excludes, by
default shared mappings of named files (bit 3, ``0x08``) and shared
hugetlb memory (bit 6, ``0x40``). The ``drgn_qemu.ramsource`` module works
out, for each guest RAM block, where its bytes are: in the core or the live
process, or still in the file QEMU mapped it from (``memory-backend-file
share=on``, found from the core's ``NT_FILE`` note or the backend's
``mem-path``, or given with ``--ram-file``), and for what is nowhere, the
true reason and its fix.
"""

import functools
import mmap
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from drgn import Object, Program

from drgn_qemu.elffile import FileMapping, core_file_mappings
from drgn_qemu.errors import DrgnQemuError, GuestMemoryError, reading
from drgn_qemu.helpers.machine import (
    machine_confidential_guest_support,
    machine_dump_guest_core,
)
from drgn_qemu.helpers.memory import memory_region_get_ram_block
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock
from drgn_qemu.helpers.qom import object_get_canonical_path_component, object_get_typename
from drgn_qemu.helpers.ramblock import (
    host_memory_backend_file_mem_path,
    qemu_ram_get_fd_offset,
    qemu_ram_is_shared,
    qemu_ram_pagesize,
    ramblock_backend,
    ramblock_guest_memfd,
    ramblock_name,
)
from drgn_qemu.progress import human_size
from drgn_qemu.reader import BackedReader, FileBacking, MemoryReader

__all__ = (
    "block_record",
    "BlockSource",
    "coredump_filter_bit",
    "RamBlockFacts",
    "RamSources",
    "resolve_ram_sources",
)

#: ``coredump_filter`` bits (``Documentation/filesystems/proc.rst``).
COREDUMP_FILTER = {
    "anonymous private": 0x01,
    "anonymous shared": 0x02,
    "file-backed private": 0x04,
    "file-backed shared": 0x08,
    "hugetlb private": 0x20,
    "hugetlb shared": 0x40,
}

_FIX = (
    "set it in the QEMU process's /proc/PID/coredump_filter (systemd: CoredumpFilter=) "
    "before the next crash, or dump a live QEMU with -p PID"
)


def coredump_filter_bit(kind: str) -> int:
    """The ``coredump_filter`` bit that lets a core keep memory of *kind*."""
    return COREDUMP_FILTER[kind]


@dataclass
class RamBlockFacts:
    """What QEMU says of the ``RAMBlock`` behind a guest RAM block."""

    idstr: str
    backend: Optional[str] = None
    backend_type: Optional[str] = None
    mem_path: Optional[str] = None
    shared: bool = False
    page_size: Optional[int] = None
    fd_offset: Optional[int] = None
    guest_memfd: bool = False
    #: Offset of the guest block's start in the RAMBlock.
    offset: int = 0

    @property
    def hugetlb(self) -> bool:
        return self.page_size is not None and self.page_size > mmap.PAGESIZE

    def names(self) -> List[str]:
        """The names ``--ram-file`` accepts for this block."""
        return [n for n in (self.backend, self.idstr) if n]

    def describe(self) -> str:
        parts = [f"RAMBlock {self.idstr}"]
        if self.backend:
            parts.append(f"{self.backend_type or 'backend'} {self.backend}")
        if self.page_size:
            parts.append(f"{human_size(self.page_size)} pages")
        return ", ".join(parts)


@dataclass
class BlockSource:
    """Where the bytes of one guest RAM block come from."""

    block: GuestPhysBlock
    #: ``core``, ``process``, ``program`` (through drgn), ``file``, or
    #: ``missing``.
    kind: str
    #: The file read back, for ``file``.
    path: Optional[str] = None
    #: Host ranges ``(address, size)`` not readable from anywhere.
    missing: List[Tuple[int, int]] = field(default_factory=list)
    #: Why, and what to do, for a block with missing parts.
    reason: Optional[str] = None
    facts: Optional[RamBlockFacts] = None
    #: Whether its bytes could be nowhere but in the core (not a
    #: confidential guest's).
    dumpable: bool = True

    def describe(self) -> str:
        """One line: the block, and why its bytes are missing."""
        b = self.block
        missing = sum(n for _, n in self.missing)
        what = f"guest RAM {b.mr_name} (guest-physical 0x{b.target_start:x}-0x{b.target_end - 1:x}"
        if self.facts is not None:
            what += f", {self.facts.describe()}"
        part = "" if missing == b.size else f"{human_size(missing)} of it "
        where = "is not in the core" if self.dumpable else "cannot be dumped"
        return f"{what}, {human_size(b.size)}) {part}{where}: {self.reason}"


@dataclass
class RamSources:
    """What :func:`resolve_ram_sources` found."""

    #: The reader to dump with: the one given, or one that reads some
    #: blocks back from their files.
    reader: MemoryReader
    sources: List[BlockSource]

    @property
    def missing(self) -> List[BlockSource]:
        return [s for s in self.sources if s.missing]


def _facts(prog: Program, block: GuestPhysBlock) -> Optional[RamBlockFacts]:
    if not block.mr:
        return None
    rb, offset = memory_region_get_ram_block(Object(prog, "MemoryRegion *", block.mr))
    facts = RamBlockFacts(
        ramblock_name(rb),
        shared=qemu_ram_is_shared(rb),
        page_size=qemu_ram_pagesize(rb),
        fd_offset=qemu_ram_get_fd_offset(rb),
        guest_memfd=ramblock_guest_memfd(rb),
        offset=offset,
    )
    backend = ramblock_backend(rb)
    if backend is not None:
        facts.backend = object_get_canonical_path_component(backend)
        facts.backend_type = object_get_typename(backend)
        facts.mem_path = host_memory_backend_file_mem_path(backend)
    return facts


@functools.lru_cache(maxsize=4)
def _core_file_mappings(path: str) -> Tuple[FileMapping, ...]:
    """The core's NT_FILE mappings, read once per core; none if it has no readable note."""
    try:
        return tuple(core_file_mappings(path))
    except (OSError, ValueError):
        return ()


def _mapping_of(reader: MemoryReader, address: int) -> Optional[FileMapping]:
    """The file a core says is mapped at *address*, from there on (its offset there)."""
    if reader.path is None:
        return None
    for m in _core_file_mappings(reader.path):
        if m.start <= address < m.end:
            return FileMapping(address, m.end, m.offset + address - m.start, m.path)
    return None


def _check_file(path: str, offset: int, size: int) -> Optional[str]:
    """Why *path* cannot hold ``size`` bytes at *offset* of guest RAM, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} no longer exists"
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if stat.S_ISREG(st.st_mode):
        if st.st_size < offset + size:
            return (
                f"{path} has {st.st_size} bytes, fewer than the {offset + size} QEMU mapped: "
                "it is not the file QEMU ran with"
            )
    elif not stat.S_ISBLK(st.st_mode) and not stat.S_ISCHR(st.st_mode):
        return f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied"
    return None


def _why_missing(
    facts: Optional[RamBlockFacts],
    dump_guest_core: Optional[bool],
    mapping: Optional[FileMapping],
    file_problem: Optional[str],
) -> str:
    """The reason a block's bytes are not in the core, and its fix."""
    if facts is not None and facts.guest_memfd:
        return (
            "it is a confidential guest's memory, whose private pages are in a guest_memfd, "
            "never in QEMU's address space (what QEMU maps is only the pages shared with "
            "the host): no dump of QEMU can hold it"
        )
    if dump_guest_core is False:
        return (
            "QEMU ran with -machine dump-guest-core=off (libvirt sets it unless "
            "<memory dumpCore='on'>; QEMU's own default is on), which marks guest RAM "
            "MADV_DONTDUMP; start QEMU with -machine dump-guest-core=on, or dump a live "
            "QEMU with -p PID"
        )
    if facts is None:
        return (
            "the core was written without it (coredump_filter, dump-guest-core=off), or "
            "QEMU's host pointer is damaged; dump a live QEMU with -p PID"
        )
    if facts.shared:
        named = (
            mapping is not None and not mapping.deleted and not mapping.name.startswith("/memfd:")
        )
        if facts.hugetlb:
            kind = "hugetlb shared"
            what = "shared hugetlb memory"
        elif named:
            kind = "file-backed shared"
            what = f"mapped shared from the file {mapping.name if mapping else facts.mem_path}"
        else:
            kind = "anonymous shared"
            what = "shared memory without a file name (memfd, share=on RAM, or a deleted file)"
            if mapping is not None and mapping.deleted:
                what = f"mapped shared from {mapping.name}, a file since deleted"
        text = (
            f"it is {what}, which Linux leaves out of core dumps unless the process's "
            f"coredump_filter has bit 0x{coredump_filter_bit(kind):02x} ({kind}); "
        )
        if file_problem is not None:
            text += f"it cannot be read back: {file_problem}; "
        elif mapping is not None and mapping.deleted:
            text += "a deleted file cannot be read back; "
        if named or (mapping is not None and mapping.deleted) or facts.mem_path:
            text += f"a copy of the file can be given with --ram-file {facts.names()[0]}=PATH; "
        return text + _FIX
    kind = "hugetlb private" if facts.hugetlb else "anonymous private"
    setting = " and QEMU ran with -machine dump-guest-core=on" if dump_guest_core else ""
    text = (
        f"it is private {'hugetlb ' if facts.hugetlb else ''}memory{setting}, so Linux keeps "
        f"it in core dumps unless the process's coredump_filter lacks bit "
        f"0x{coredump_filter_bit(kind):02x} ({kind}), or QEMU's host pointer is damaged; "
    )
    if dump_guest_core is None:  # a QEMU that does not say
        text += (
            "or QEMU ran with -machine dump-guest-core=off (libvirt's default), which marks "
            "guest RAM MADV_DONTDUMP: start it with -machine dump-guest-core=on; "
        )
    return text + _FIX


def block_record(source: BlockSource) -> Dict[str, Any]:
    """A guest-physical block and where its bytes are, as ``--json`` shows it (README)."""
    block = source.block
    return {
        "target_start": block.target_start,
        "target_end": block.target_end,
        "host_addr": block.host_addr,
        "size": block.size,
        "memory_region": block.mr_name,
        "source": source.kind,
        "file": source.path,
        "missing_bytes": sum(n for _, n in source.missing),
        "missing_reason": source.reason,
    }


def resolve_ram_sources(
    prog: Program,
    reader: MemoryReader,
    blocks: Sequence[GuestPhysBlock],
    ram_files: Optional[Dict[str, str]] = None,
) -> RamSources:
    """
    Find where each guest RAM block's bytes are: through *reader* (the
    core, the live process), else read back from the file QEMU mapped the
    block shared from, else missing, with the reason.

    :param ram_files: RAM block (backend id or RAMBlock name) to the path
        of a copy of its file (``--ram-file ID=PATH``)
    :raises GuestMemoryError: for a ``--ram-file`` that names no block, or
        whose file cannot hold the block
    """
    ram_files = dict(ram_files or {})
    confidential = _confidential_sources(prog, reader, blocks)
    if confidential is not None:
        return confidential
    resolver = _Resolver(prog, reader, ram_files)
    sources = [resolver.block_source(block) for block in blocks]
    unknown = sorted(set(ram_files) - resolver.used)
    if unknown:
        names = sorted({n for s in sources if s.facts for n in s.facts.names()})
        raise GuestMemoryError(
            f"--ram-file {unknown[0]}: no guest RAM block of that name "
            f"(backend ids and RAMBlock names here: {', '.join(names) or 'none'})"
        )
    if resolver.backings:
        reader = BackedReader(reader, resolver.backings)
    return RamSources(reader, sources)


def _confidential_sources(
    prog: Program, reader: MemoryReader, blocks: Sequence[GuestPhysBlock]
) -> Optional[RamSources]:
    """Every block missing, if the guest is a confidential guest; else None."""
    try:
        with reading("the machine's confidential guest support"):
            cgs = machine_confidential_guest_support(prog)
    except DrgnQemuError:
        cgs = None
    if cgs is None:
        return None
    # Its memory is encrypted with keys only the CPU holds (SEV, PEF,
    # s390 PV) or not in QEMU at all (TDX, SNP's guest_memfd): what
    # QEMU maps would be ciphertext written as if it were the guest's.
    reason = (
        f"the guest is a confidential guest ({cgs}): its memory is encrypted by the "
        "CPU or kept out of QEMU, so no dump of QEMU holds it"
    )
    return RamSources(reader, [
        BlockSource(b, "missing", missing=[(b.host_addr, b.size)], reason=reason,
                    dumpable=False)
        for b in blocks
    ])  # fmt: skip


class _Resolver:
    """Where each block's bytes are, one block at a time (see :func:`resolve_ram_sources`)."""

    def __init__(self, prog: Program, reader: MemoryReader, ram_files: Dict[str, str]) -> None:
        self.prog = prog
        self.reader = reader
        self.ram_files = ram_files
        #: The ``--ram-file`` names used.
        self.used: Set[str] = set()
        #: The blocks read back from files.
        self.backings: List[FileBacking] = []
        self._dump_guest_core: Optional[bool] = None
        self._have_setting = False

    def block_source(self, block: GuestPhysBlock) -> BlockSource:
        """Where *block*'s bytes are: the input, a file, or missing (and why)."""
        missing = self.reader.missing(block.host_addr, block.size)
        try:
            with reading(f"the RAMBlock of {block.mr_name}"):
                facts: Optional[RamBlockFacts] = _facts(self.prog, block)
        except DrgnQemuError:  # damaged: the dump's own checks say so
            facts = None
        given = None
        if facts is not None:
            for name in facts.names():
                if name in self.ram_files:
                    given = (name, self.ram_files[name])
            if facts.guest_memfd:
                # What QEMU maps is the shared view; the guest's private
                # pages are only in the guest_memfd: never write that view
                # as if it were the guest's memory.
                reason = _why_missing(facts, None, None, None)
                return BlockSource(block, "missing", missing=[(block.host_addr, block.size)],
                                   reason=reason, facts=facts, dumpable=False)  # fmt: skip
        if given is None and not missing:
            return BlockSource(block, self.reader.source, facts=facts)
        # Where the block's bytes are in a file: as the core maps it, or
        # as QEMU's backend and RAMBlock say.
        mapping = _mapping_of(self.reader, block.host_addr)
        path, offset = self._file_of(facts, mapping, given)
        problem: Optional[str] = None
        if path is not None and offset is not None:
            problem = _check_file(path, offset, block.size)
            if problem is None:
                self.backings.append(FileBacking(block.host_addr, block.size, path, offset))
                return BlockSource(block, "file", path=path, facts=facts)
            if given is not None:
                raise GuestMemoryError(f"--ram-file {given[0]}={path}: {problem}")
        reason = _why_missing(facts, self._dump_guest_core_setting(), mapping, problem)
        return BlockSource(block, "missing", missing=missing, reason=reason, facts=facts)

    def _file_of(
        self,
        facts: Optional[RamBlockFacts],
        mapping: Optional[FileMapping],
        given: Optional[Tuple[str, str]],
    ) -> Tuple[Optional[str], Optional[int]]:
        """
        The file holding a block and the block's offset in it: the
        ``--ram-file`` *given*, or the shared file the core maps, or the
        backend's ``mem-path``.
        """
        offset: Optional[int] = None
        if mapping is not None:
            offset = mapping.offset
        elif facts is not None and facts.fd_offset is not None:
            offset = facts.fd_offset + facts.offset
        if given is not None:
            self.used.add(given[0])
            return given[1], offset if offset is not None else facts.offset if facts else 0
        if facts is not None and facts.shared and not facts.guest_memfd:
            if mapping is not None and not mapping.deleted:
                return mapping.name, offset
            if mapping is None and facts.mem_path is not None:
                return facts.mem_path, offset
        return None, offset

    def _dump_guest_core_setting(self) -> Optional[bool]:
        """``-machine dump-guest-core``, read once (None if damaged)."""
        if not self._have_setting:
            try:
                with reading("the machine's settings"):
                    self._dump_guest_core = machine_dump_guest_core(self.prog)
            except DrgnQemuError:
                self._dump_guest_core = None
            self._have_setting = True
        return self._dump_guest_core
