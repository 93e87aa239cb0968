"""
Dumping guest memory
--------------------

The ``drgn_qemu.dump`` module is the library behind every entry point
(``drgn-qemu dump-guest-memory``, ``contrib/dump_guest_memory.py``, the REPL):
:func:`dump_guest_memory` writes the guest-physical memory of a QEMU program
as an ELF vmcore laid out like QEMU's own ``dump-guest-memory`` output.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple, Union

from drgn import Object, Program

from drgn_qemu.arch import ArchDumpInfo, CpuSummary, GuestArch, detect_arch, get_arch
from drgn_qemu.elf import ElfCoreLayout, LoadSegment
from drgn_qemu.errors import (
    CorruptStructureError,
    DrgnQemuError,
    GuestMemoryError,
    OutputError,
    UnsupportedError,
    reading,
    translate_errors,
)
from drgn_qemu.helpers.cpu import check_cpu_list
from drgn_qemu.helpers.machine import RAM_SHARED, machine_dump_guest_core
from drgn_qemu.helpers.memory import memory_region_get_ram_block
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock, guest_phys_blocks
from drgn_qemu.kdump import KDUMP_FORMATS, KdumpLayout, default_threads, write_kdump
from drgn_qemu.output import atomic_output
from drgn_qemu.pipeline import ChunkPipeline
from drgn_qemu.reader import MemoryFault, MemoryReader, ProgramReader
from drgn_qemu.sparse import nonzero_runs, pwrite_all, pwrite_zeros
from drgn_qemu.vmcoreinfo import Vmcoreinfo, find_vmcoreinfo, kernel_utsname

__all__ = (
    "CHUNK_SIZE",
    "DumpResult",
    "DumpSegment",
    "DumpPlan",
    "ELF_LAYOUTS",
    "FORMATS",
    "dump_guest_memory",
    "filter_guest_phys_blocks",
    "format_blocks",
    "format_plan",
    "plan_dump",
    "SCAN_THREADS",
    "write_dump",
)

#: Bytes read from QEMU's memory and written to the vmcore at a time.
#: Measured on a 2 GiB guest of random data (benchmarks/RESULTS.md, and five
#: alternating runs: 4 MiB 0.70-0.80 s, 8 MiB 0.72-1.14 s), 4 MiB is as fast
#: as larger chunks and keeps less mapped: peak RSS 94 MB against 116 MB.
CHUNK_SIZE = 4 << 20

#: Most threads finding the zero pages of an ELF dump by default. Measured
#: on a mapped 8 GiB core of zeros: one thread 1.5 s, two 1.05 s; the scan is
#: bound by memory bandwidth, and each thread holds one more chunk mapped,
#: so no more than two.
SCAN_THREADS = 2

#: Output formats: ELF, or kdump-compressed with one of the compressions.
FORMATS = ("elf", *KDUMP_FORMATS)

#: ELF layouts: QEMU's (section headers first), or the kernel's
#: ``/proc/vmcore`` one (program headers first), which makedumpfile needs.
ELF_LAYOUTS = ("qemu", "kernel")


@dataclass
class DumpSegment:
    """One PT_LOAD of the vmcore: a guest-physical range and where it lives in QEMU."""

    #: First guest-physical address.
    paddr: int
    #: Bytes.
    size: int
    #: Host-virtual address of *paddr* in the QEMU process.
    host_addr: int
    #: Name of the memory region backing it.
    mr_name: str = ""
    #: Address of that ``MemoryRegion``.
    mr: int = 0


@dataclass
class DumpPlan:
    """What a dump will write, worked out by :func:`plan_dump`."""

    arch: GuestArch
    #: The guest-physical RAM blocks, as QEMU computes them.
    blocks: List[GuestPhysBlock]
    #: The PT_LOAD segments: the blocks, clipped to the begin/length window.
    segments: List[DumpSegment]
    #: The file's layout: ELF, or kdump-compressed.
    layout: Union[ElfCoreLayout, KdumpLayout]
    #: ELF machine, class and byte order, chosen as QEMU does.
    info: ArchDumpInfo
    #: The vCPUs whose registers are in the notes.
    cpus: List[CpuSummary] = field(default_factory=list)
    #: The VMCOREINFO note, if one was found.
    vmcoreinfo: Optional[Vmcoreinfo] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def format(self) -> str:
        """``elf`` or one of the kdump formats."""
        layout = self.layout
        return layout.compression if isinstance(layout, KdumpLayout) else "elf"

    @property
    def guest_bytes(self) -> int:
        """Bytes of guest memory to write."""
        return sum(s.size for s in self.segments)


@dataclass
class DumpResult:
    """What :func:`write_dump` did."""

    output: str
    plan: DumpPlan
    file_size: int
    seconds: float


def filter_guest_phys_blocks(
    blocks: List[GuestPhysBlock], begin: Optional[int] = None, length: Optional[int] = None
) -> List[DumpSegment]:
    """
    Turn guest-physical blocks into dump segments, keeping only the part of
    each that lies in ``[begin, begin + length)`` when a window is given, as
    QMP ``dump-guest-memory`` does with its ``begin`` and ``length``.
    """
    if (begin is None) != (length is None):
        raise DrgnQemuError("--begin and --length go together")
    segments = []
    for block in blocks:
        start, end = block.target_start, block.target_end
        if begin is not None and length is not None:
            if length <= 0 or begin < 0:
                raise DrgnQemuError("--length must be positive and --begin not negative")
            start, end = max(start, begin), min(end, begin + length)
            if start >= end:
                continue
        segments.append(
            DumpSegment(
                start,
                end - start,
                block.host_addr + (start - block.target_start),
                block.mr_name,
                block.mr,
            )
        )
    return segments


def format_blocks(blocks: List[GuestPhysBlock]) -> str:
    """Return a table of guest-physical blocks, one line each."""
    lines = [
        "guest RAM blocks:",
        f"{'target_start':<18} {'target_end':<18} {'host_addr':<18} {'size':>10}  memory region",
    ]
    for b in blocks:
        lines.append(
            f"0x{b.target_start:016x} 0x{b.target_end:016x} 0x{b.host_addr:016x} "
            f"{_human(b.size):>10}  {b.mr_name}"
        )
    return "\n".join(lines)


def format_plan(plan: DumpPlan) -> str:
    """Return the dump summary: blocks, vCPUs and VMCOREINFO."""
    lines = [format_blocks(plan.blocks), "vCPUs:"]
    stale = []
    for cpu in plan.cpus:
        lines.append(
            f"  {cpu.index}: {cpu.state}" + (" (registers may be stale)" if cpu.stale else "")
        )
        if cpu.stale:
            stale.append(str(cpu.index))
    if stale:
        lines.append(
            f"  under KVM, QEMU had not synchronized the registers of vCPU {', '.join(stale)} "
            "since they last ran: their notes hold QEMU's older copy"
        )
    vmci = plan.vmcoreinfo
    if vmci is None:
        lines.append("VMCOREINFO: none")
    else:
        lines.append(
            f"VMCOREINFO: from {vmci.source}: OSRELEASE={vmci.osrelease} "
            f"KERNELOFFSET={vmci.kerneloffset}"
        )
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n = n / 1024  # type: ignore[assignment]
    raise AssertionError


def _missing_ram_hint(prog: Program, seg: DumpSegment) -> str:
    """
    Why guest RAM at *seg* may be missing from a core, and what to do, from
    what QEMU says of itself: the machine's ``dump-guest-core``, and whether
    the RAM block is shared memory.
    """
    try:
        with reading("the machine's settings"):
            dump_guest_core = machine_dump_guest_core(prog)
            shared = False
            if seg.mr:
                block, _ = memory_region_get_ram_block(Object(prog, "MemoryRegion *", seg.mr))
                shared = bool(block.flags.value_() & RAM_SHARED)
    except DrgnQemuError:  # damaged too: say what is likeliest
        dump_guest_core, shared = None, False
    if dump_guest_core is False:
        return (
            "QEMU ran with -machine dump-guest-core=off (libvirt sets it unless "
            "<memory dumpCore='on'>; QEMU's own default is on), which keeps guest RAM out "
            "of core dumps; start QEMU with -machine dump-guest-core=on, or dump a live "
            "QEMU with -p PID"
        )
    if shared:
        return (
            "it is shared memory (share=on, memfd or a file), which Linux's core dumps "
            "leave out unless the QEMU process's coredump_filter has bit 0x02 (shared "
            "anonymous) or 0x08 (shared file-backed); set it (systemd: CoredumpFilter=), "
            "or dump a live QEMU with -p PID"
        )
    if dump_guest_core:
        return (
            "QEMU ran with dump-guest-core=on, so its RAMBlock's host pointer may be "
            "damaged, or the core was written without this memory (coredump_filter); "
            "dump a live QEMU with -p PID"
        )
    return (
        "QEMU may have run with -machine dump-guest-core=off (libvirt's default), which "
        "keeps guest RAM out of core dumps; start QEMU with -machine dump-guest-core=on, "
        "or dump a live QEMU with -p PID"
    )


def _check_readable(prog: Program, reader: MemoryReader, segments: List[DumpSegment]) -> None:
    byte = memoryview(bytearray(1))
    for seg in segments:
        if seg.host_addr + seg.size > 1 << 64:
            raise CorruptStructureError(
                f"guest RAM at guest-physical 0x{seg.paddr:x} ({seg.mr_name or 'RAM'}) would be "
                f"at host address 0x{seg.host_addr:x}, beyond the address space: QEMU's "
                "memory map is damaged"
            )
        for addr in (seg.host_addr, seg.host_addr + seg.size - 1):
            try:
                reader.readinto(addr, byte)
            except MemoryFault:
                raise GuestMemoryError(
                    f"guest RAM at guest-physical 0x{seg.paddr:x} ({seg.mr_name or 'RAM'}, "
                    f"host address 0x{addr:x}) is not in the core: " + _missing_ram_hint(prog, seg)
                ) from None


def _phys_base(arch: GuestArch, info: ArchDumpInfo, vmci: Optional[Vmcoreinfo]) -> int:
    """
    The kernel's ``phys_base`` for the kdump header: from VMCOREINFO where
    QEMU's ``vmcoreinfo_update_phys_base()`` looks, else QEMU's guess.
    Linux writes ``NUMBER(phys_base)`` in decimal and ``NUMBER(PHYS_OFFSET)``
    in hex (QEMU parses both as hex); read each as it is written.
    """
    key = arch.vmcoreinfo_phys_base.get(info.machine)
    value = vmci.fields.get(key) if vmci is not None and key else None
    if value is None:
        return info.phys_base
    try:
        number = int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return info.phys_base
    return number & 0xFFFFFFFFFFFFFFFF


@translate_errors("QEMU's data structures")
def plan_dump(
    prog: Program,
    arch: Optional[str] = None,
    begin: Optional[int] = None,
    length: Optional[int] = None,
    vmcoreinfo: Optional[str] = None,
    reader: Optional[MemoryReader] = None,
    format: str = "elf",
    elf_layout: str = "qemu",
) -> DumpPlan:
    """
    Work out what :func:`dump_guest_memory` will write, without writing:
    the guest architecture, the guest-physical blocks, the segments (after
    the *begin*/*length* window), the notes and the file layout.
    """
    if format not in FORMATS:
        raise DrgnQemuError(f"unknown format {format!r} (one of {', '.join(FORMATS)})")
    if elf_layout not in ELF_LAYOUTS:
        raise DrgnQemuError(f"unknown ELF layout {elf_layout!r} (one of {', '.join(ELF_LAYOUTS)})")
    if format != "elf" and begin is not None:
        # QMP dump-guest-memory refuses a window with the kdump formats too.
        raise DrgnQemuError("--begin and --length only work with --format elf")
    if arch:
        guest_arch = get_arch(arch)
        if not guest_arch.matches(prog):
            try:
                found = f" (it is one for {detect_arch(prog).name} guests)"
            except UnsupportedError:
                found = ""
            raise UnsupportedError(
                f"--arch {arch}: this QEMU's debug info has no {arch} vCPU type{found}"
            )
    else:
        guest_arch = detect_arch(prog)
    reader = reader if reader is not None else ProgramReader(prog)
    with reading("QEMU's memory map"):
        blocks = guest_phys_blocks(prog, guest_arch.page_size)
    segments = filter_guest_phys_blocks(blocks, begin, length)
    if not segments:
        raise GuestMemoryError(
            "no guest memory to dump" + (" in that window" if begin is not None else "")
        )
    _check_readable(prog, reader, segments)
    with reading("QEMU's vCPU state"):
        check_cpu_list(prog)
        info = guest_arch.cpu_get_dump_info(prog, blocks)
        notes = guest_arch.cpu_notes(prog, info)
        cpus = guest_arch.describe_cpus(prog)
    with reading("the guest's VMCOREINFO"):
        vmci, warnings = find_vmcoreinfo(
            prog, blocks, guest_arch.page_size, info.endian, vmcoreinfo, reader=reader
        )
    vmcoreinfo_note = None
    if vmci is not None:
        vmcoreinfo_note = len(notes)
        notes += vmci.note
    layout: Union[ElfCoreLayout, KdumpLayout]
    if format == "elf":
        layout = ElfCoreLayout(
            info.machine,
            info.elf_class,
            info.endian,
            notes,
            [LoadSegment(s.paddr, s.size) for s in segments],
            phdrs_first=elf_layout == "kernel",
        )
    else:
        phys_base = _phys_base(guest_arch, info, vmci)
        utsname = None
        if vmci is not None:
            with reading("the guest kernel's utsname"):
                utsname = kernel_utsname(
                    prog,
                    blocks,
                    vmci,
                    lambda vaddr: guest_arch.kernel_paddr(info, vmci.fields, phys_base, vaddr),
                )
        layout = KdumpLayout(
            info.elf_class,
            info.endian,
            info.page_size or guest_arch.page_size,
            guest_arch.kdump_machine(info),
            notes,
            vmcoreinfo_note,
            len(cpus),
            phys_base,
            format,
            [(s.paddr, s.size, s.host_addr) for s in segments],
            utsname,
        )
    return DumpPlan(guest_arch, blocks, segments, layout, info, cpus, vmci, warnings)


def _pieces(
    plan: DumpPlan, layout: ElfCoreLayout, reader: MemoryReader, chunk_size: int
) -> Iterator[Tuple[int, int, int, bool]]:
    """
    The guest memory of every segment as ``(host address, size, file offset,
    has data)`` pieces of at most *chunk_size* bytes; pieces without data
    are holes of a sparse core, zeros that need not be read.
    """
    for seg, offset in zip(plan.segments, layout.segment_offsets):
        for address, size, has_data in reader.extents(seg.host_addr, seg.size):
            out = offset + (address - seg.host_addr)
            if not has_data:
                yield address, size, out, False
                continue
            for done in range(0, size, chunk_size):
                yield address + done, min(chunk_size, size - done), out + done, True


def _copy_all(
    pieces: Iterator[Tuple[int, int, int, bool]],
    reader: MemoryReader,
    fd: int,
    chunk_size: int,
    progress: Optional[Callable[[int], None]],
) -> None:
    """Copy every byte, zeros included (``--no-sparse``)."""
    buf = memoryview(bytearray(chunk_size))
    zeros = memoryview(bytes(chunk_size))
    for address, size, out, has_data in pieces:
        if not has_data:
            pwrite_zeros(fd, size, out, zeros)
        elif not reader.copy(address, size, fd, out):
            view = reader.read_view(address, buf[:size])
            pwrite_all(fd, view, out)
            del view
            reader.release(address, size)
        if progress is not None:
            progress(size)


def _copy_sparse(
    pieces: Iterator[Tuple[int, int, int, bool]],
    reader: MemoryReader,
    fd: int,
    chunk_size: int,
    progress: Optional[Callable[[int], None]],
    threads: int,
) -> None:
    """
    Copy the pages that are not all zero: chunks are read here and scanned
    for zero pages by *threads* threads while earlier chunks' non-zero runs
    are written, in order (numpy lets go of the GIL while it scans). A
    chunk's buffer is reused only once the chunk is written.
    """

    def finish(runs: List[Tuple[int, int]], chunk: Tuple[memoryview, int, int]) -> None:
        view, address, out = chunk
        for a, b in runs:
            if not reader.copy(address + a, b - a, fd, out + a, seen=True):
                pwrite_all(fd, view[a:b], out + a)
        reader.release(address, len(view))
        if progress is not None:
            progress(len(view))

    with ChunkPipeline(threads, chunk_size, finish, "drgn-qemu-scan") as pipeline:
        for address, size, out, has_data in pieces:
            if not has_data:
                if progress is not None:
                    progress(size)
                continue
            buf = pipeline.buffer()
            view = reader.read_view(address, buf[:size])
            pipeline.submit((view, address, out), buf, nonzero_runs, view)
        pipeline.finish_all()


def _fault_error(prog: Program, plan: DumpPlan, e: MemoryFault) -> GuestMemoryError:
    for seg in plan.segments:
        if seg.host_addr <= e.address < seg.host_addr + seg.size:
            return GuestMemoryError(
                f"cannot read guest RAM at guest-physical "
                f"0x{seg.paddr + e.address - seg.host_addr:x} (host address 0x{e.address:x}): "
                + _missing_ram_hint(prog, seg)
            )
    return GuestMemoryError(f"cannot read QEMU's memory at 0x{e.address:x}")


def _write_elf(
    plan: DumpPlan,
    layout: ElfCoreLayout,
    fd: int,
    reader: MemoryReader,
    progress: Optional[Callable[[int], None]],
    chunk_size: int,
    sparse: bool,
    threads: int,
) -> int:
    pwrite_all(fd, memoryview(layout.header()), 0)
    pieces = _pieces(plan, layout, reader, chunk_size)
    if sparse:
        _copy_sparse(pieces, reader, fd, chunk_size, progress, threads)
    else:
        _copy_all(pieces, reader, fd, chunk_size, progress)
    pwrite_all(fd, memoryview(layout.trailer()), layout.shstrtab_offset)
    os.ftruncate(fd, layout.file_size)
    return layout.file_size


def write_dump(
    prog: Program,
    plan: DumpPlan,
    output: str,
    force: bool = False,
    progress: Optional[Callable[[int], None]] = None,
    chunk_size: int = CHUNK_SIZE,
    reader: Optional[MemoryReader] = None,
    sparse: bool = True,
    threads: Optional[int] = None,
) -> DumpResult:
    """
    Write the dump that *plan* describes to *output* (see
    :func:`dump_guest_memory` for the parameters). *reader* reads QEMU's
    memory (default: through drgn); memory is copied through buffers of
    *chunk_size* bytes (one, or one per compression thread and one more),
    so memory use does not grow with the guest.
    """
    start = time.monotonic()
    reader = reader if reader is not None else ProgramReader(prog)
    layout = plan.layout
    with atomic_output(output, force) as f:
        fd = f.fileno()
        try:
            if isinstance(layout, KdumpLayout):
                size = write_kdump(
                    layout,
                    fd,
                    reader,
                    progress,
                    chunk_size,
                    sparse,
                    threads if threads is not None else default_threads(layout.compression),
                )
            else:
                size = _write_elf(
                    plan,
                    layout,
                    fd,
                    reader,
                    progress,
                    chunk_size,
                    sparse,
                    threads if threads is not None else min(default_threads(), SCAN_THREADS),
                )
        except MemoryFault as e:
            raise _fault_error(prog, plan, e) from None
        except OSError as e:
            raise OutputError(f"cannot write {output}: {e.strerror or e}") from None
    return DumpResult(output, plan, size, time.monotonic() - start)


def dump_guest_memory(
    prog: Program,
    output: str,
    *,
    arch: Optional[str] = None,
    begin: Optional[int] = None,
    length: Optional[int] = None,
    vmcoreinfo: Optional[str] = None,
    force: bool = False,
    progress: Optional[Callable[[int], None]] = None,
    chunk_size: int = CHUNK_SIZE,
    reader: Optional[MemoryReader] = None,
    sparse: bool = True,
    format: str = "elf",
    threads: Optional[int] = None,
    elf_layout: str = "qemu",
) -> DumpResult:
    """
    Write the guest-physical memory of a QEMU program as an ELF vmcore, the
    file QMP ``dump-guest-memory`` (``paging=false``, ELF format) would write:
    vCPU register notes and the guest's VMCOREINFO, then one PT_LOAD per
    guest-physical block with ``p_paddr`` the guest address.

    :param prog: a QEMU core or process with QEMU's debug info loaded (see
        :func:`drgn_qemu.program.open_qemu_program`)
    :param output: path of the vmcore; written under a temporary name and
        renamed when complete
    :param arch: guest architecture name; detected from the debug info if
        not given
    :param begin: with *length*, dump only guest-physical
        ``[begin, begin + length)``
    :param length: see *begin*
    :param vmcoreinfo: file with the guest kernel's VMCOREINFO text, used
        instead of looking for it in QEMU and guest RAM
    :param force: overwrite *output* if it exists
    :param progress: called with the number of bytes after each chunk
    :param chunk_size: bytes per read from the program
    :param reader: how to read QEMU's memory (see :func:`drgn_qemu.reader.open_reader`;
        default: through drgn)
    :param sparse: leave all-zero blocks of guest memory as holes in the file
    :param format: ``elf``, or a kdump-compressed format (``kdump-zlib``,
        ``kdump-zstd``, ``kdump-snappy``): the file QMP ``dump-guest-memory``
        writes with ``format=kdump-raw-*``
    :param threads: threads compressing pages for the kdump formats (default:
        one per CPU for zlib, where that is faster; one for zstd and snappy),
        or scanning for zero pages in a sparse ELF file (default: one per
        CPU, at most :data:`SCAN_THREADS`); the file is the same whatever
        their number
    :param elf_layout: ``qemu``: the ELF file QEMU writes, byte for byte;
        ``kernel``: program headers first, as Linux's ``/proc/vmcore``
        (makedumpfile reads only that)
    :raises DrgnQemuError: on every error a user can act on
    """
    plan = plan_dump(prog, arch, begin, length, vmcoreinfo, reader, format, elf_layout)
    return write_dump(prog, plan, output, force, progress, chunk_size, reader, sparse, threads)
