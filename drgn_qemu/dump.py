# SPDX-License-Identifier: GPL-2.0-or-later
"""
Dumping guest memory
--------------------

The ``drgn_qemu.dump`` module is the library behind every entry point
(``drgn-qemu dump-guest-memory``, ``contrib/dump_guest_memory.py``, the REPL):
:func:`dump_guest_memory` writes the guest-physical memory of a QEMU program
as an ELF vmcore laid out like QEMU's own ``dump-guest-memory`` output.
"""

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple, Union

from drgn import Program

from drgn_qemu.arch import ArchDumpInfo, CpuSummary, GuestArch, detect_arch, get_arch
from drgn_qemu.elf import ElfCoreLayout, LoadSegment
from drgn_qemu.errors import (
    CorruptStructureError,
    GuestMemoryError,
    OutputError,
    UnsupportedError,
    reading,
    translate_errors,
)
from drgn_qemu.helpers.cpu import check_cpu_list
from drgn_qemu.helpers.dump import dump_writes_section_headers
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock, guest_phys_blocks, guest_phys_read
from drgn_qemu.options import DumpOptions
from drgn_qemu.output import atomic_output, files_open_for_reading
from drgn_qemu.progress import human_size
from drgn_qemu.ramsource import BlockSource, resolve_ram_sources
from drgn_qemu.ranges import GuestRange
from drgn_qemu.reader import BackedReader, MemoryFault, MemoryReader, ProgramReader
from drgn_qemu.vmcoreinfo import Vmcoreinfo, find_vmcoreinfo, kernel_utsname

if TYPE_CHECKING:
    from drgn_qemu.kdump import KdumpHeader, KdumpLayout

__all__ = (
    "DumpPlan",
    "DumpResult",
    "dump_guest_memory",
    "format_blocks",
    "format_plan",
    "guest_ranges",
    "plan_dump",
    "program_inputs",
    "write_dump",
)


@dataclass
class DumpPlan:
    """What a dump will write, worked out by :func:`plan_dump`."""

    prog: Program
    options: DumpOptions
    arch: GuestArch
    #: The guest-physical RAM blocks, as QEMU computes them.
    blocks: List[GuestPhysBlock]
    #: The memory to write: the blocks, clipped to the begin/length window.
    segments: List[GuestRange]
    #: The file's layout, which writes it: ELF, or kdump-compressed.
    layout: Union[ElfCoreLayout, "KdumpLayout"]
    #: ELF machine, class and byte order, chosen as QEMU does.
    info: ArchDumpInfo
    #: The vCPUs whose registers are in the notes.
    cpus: List[CpuSummary] = field(default_factory=list)
    #: The VMCOREINFO note, if one was found.
    vmcoreinfo: Optional[Vmcoreinfo] = None
    warnings: List[str] = field(default_factory=list)
    #: Where each block's bytes come from, in the order of *blocks*.
    sources: List[BlockSource] = field(default_factory=list)
    #: Reads QEMU's memory for the dump: the reader given to
    #: :func:`plan_dump`, or one reading some blocks back from their files.
    reader: Optional[MemoryReader] = None

    @property
    def skipped(self) -> List[BlockSource]:
        """Blocks (or parts) left out of the dump (``--skip-missing``)."""
        return [s for s in self.sources if s.missing]

    def close(self) -> None:
        """Close the files the plan opened to read guest RAM back."""
        if self.reader is not None:
            _close_backed(self.reader)

    @property
    def format(self) -> str:
        """``elf`` or one of the kdump formats."""
        return self.options.format

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


def guest_ranges(
    blocks: List[GuestPhysBlock],
    begin: Optional[int] = None,
    length: Optional[int] = None,
    skip: Optional[List[BlockSource]] = None,
) -> List[GuestRange]:
    """
    Turn guest-physical blocks into the ranges to dump, keeping only the
    part of each that lies in ``[begin, begin + length)`` when a window is
    given, as QMP ``dump-guest-memory`` does with its ``begin`` and ``length``,
    and leaving out the missing host ranges of the sources in *skip*.
    """
    holes = {id(s.block): s.missing for s in skip or ()}
    ranges = []
    for block in blocks:
        start, end = block.target_start, block.target_end
        if begin is not None and length is not None:
            start, end = max(start, begin), min(end, begin + length)
            if start >= end:
                continue
        pieces = [(start, end)]
        for host, n in holes.get(id(block), ()):
            gap_start = block.target_start + host - block.host_addr
            gap_end = gap_start + n
            pieces = [
                piece
                for a, b in pieces
                for piece in ((a, min(b, gap_start)), (max(a, gap_end), b))
                if piece[0] < piece[1]
            ]
        for a, b in pieces:
            host_addr = block.host_addr + (a - block.target_start)
            ranges.append(GuestRange(a, b - a, host_addr, block.mr, block.mr_name))
    return ranges


def format_blocks(blocks: List[GuestPhysBlock], sources: Optional[List[BlockSource]] = None) -> str:
    """
    Return a table of guest-physical blocks, one line each; with *sources*,
    where each block's bytes come from (``core``, ``process``, ``file``,
    ``missing``), and a line for each file read back.
    """
    from_ = {id(s.block): s for s in sources or ()}
    lines = [
        "guest RAM blocks:",
        f"{'target_start':<18} {'target_end':<18} {'host_addr':<18} {'size':>10}  "
        + ("from     " if sources else "")
        + "memory region",
    ]
    notes = []
    for b in blocks:
        source = from_.get(id(b))
        column = ""
        if source is not None:
            column = f"{source.kind:<8} "
            if source.kind == "file":
                notes.append(f"  {b.mr_name}: read back from {source.path}")
        lines.append(
            f"0x{b.target_start:016x} 0x{b.target_end:016x} 0x{b.host_addr:016x} "
            f"{human_size(b.size):>10}  {column}{b.mr_name}"
        )
    return "\n".join(lines + notes)


def format_plan(plan: DumpPlan) -> str:
    """
    Return the dump summary: blocks (with ``--begin/--length``, the part of
    each in the window), vCPUs and VMCOREINFO.
    """
    begin, length = plan.options.begin, plan.options.length
    if begin is None or length is None:
        lines = [format_blocks(plan.blocks, plan.sources)]
    else:
        end = begin + length
        window, sources = [], []
        for source in plan.sources:
            b = source.block
            start, stop = max(b.target_start, begin), min(b.target_end, end)
            if start < stop:
                clipped = dataclasses.replace(
                    b,
                    target_start=start,
                    target_end=stop,
                    host_addr=b.host_addr + start - b.target_start,
                )
                window.append(clipped)
                sources.append(dataclasses.replace(source, block=clipped))
        lines = [
            format_blocks(window, sources),
            f"  (the window --begin 0x{begin:x} --length 0x{length:x} of "
            f"{len(plan.blocks)} block{'s' if len(plan.blocks) != 1 else ''})",
        ]
    lines.append("vCPUs:")
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


def _guest_arch(prog: Program, name: Optional[str]) -> GuestArch:
    """The guest architecture: *name* (``--arch``), checked, else detected."""
    if not name:
        return detect_arch(prog)
    guest_arch = get_arch(name)
    if not guest_arch.matches(prog):
        try:
            found = f" (it is one for {detect_arch(prog).name} guests)"
        except UnsupportedError:
            found = ""
        raise UnsupportedError(
            f"--arch {name}: this QEMU's debug info has no {name} vCPU type{found}"
        )
    return guest_arch


@translate_errors("QEMU's data structures")
def _missing_error(missing: List[BlockSource], skipping: bool) -> GuestMemoryError:
    """One line for guest RAM that is nowhere: the first block and why, and every other one."""
    text = missing[0].describe()
    if len(missing) > 1:
        text += "; also missing: " + ", ".join(s.block.mr_name or "RAM" for s in missing[1:])
    if skipping:
        return GuestMemoryError("no guest memory to dump: all of it is missing: " + text)
    return GuestMemoryError(text + "; or pass --skip-missing to dump the rest")


def plan_dump(
    prog: Program,
    options: Optional[DumpOptions] = None,
    reader: Optional[MemoryReader] = None,
    *,
    empty: bool = False,
) -> DumpPlan:
    """
    Work out what :func:`dump_guest_memory` will write, without writing:
    the guest architecture, the guest-physical blocks, the ranges to dump
    (after the begin/length window), the notes and the file layout.

    :param options: what to dump and how (default: all guest RAM, ELF)
    :param reader: how to read QEMU's memory (default: through drgn)
    :param empty: plan even when no guest memory is left to dump (with
        ``options.skip_missing``, what ``info`` shows of a core without
        guest RAM)
    """
    options = options if options is not None else DumpOptions()
    guest_arch = _guest_arch(prog, options.arch)
    reader = reader if reader is not None else ProgramReader(prog)
    blocks = _checked_blocks(prog, guest_arch)
    sources = resolve_ram_sources(prog, reader, blocks, options.ram_files)
    reader = sources.reader
    missing = sources.missing
    try:
        segments = _segments(blocks, options, missing, empty)
    except GuestMemoryError:
        _close_backed(sources.reader)
        raise
    warnings = ["left out: " + source.describe() for source in missing]
    present = [s.block for s in sources.sources if not s.missing]
    with reading("QEMU's vCPU state"):
        check_cpu_list(prog)
        info = guest_arch.cpu_get_dump_info(prog, blocks)
        notes = guest_arch.cpu_notes(prog, info)
        cpus = guest_arch.describe_cpus(prog)
    with reading("the guest's VMCOREINFO"):
        vmci, found_warnings = find_vmcoreinfo(
            prog, present, guest_arch.page_size, info.endian, options.vmcoreinfo, reader=reader
        )
        warnings += found_warnings
    if vmci is not None:
        notes += vmci.note
    layout: Union[ElfCoreLayout, KdumpLayout]
    if options.format == "elf":
        loads = None
        if options.paging:
            loads = _paging_loads(prog, guest_arch, blocks, present, reader, options)
        layout = ElfCoreLayout(
            info.machine,
            info.elf_class,
            info.endian,
            notes,
            segments,
            # QEMU's layout is the one the QEMU in hand writes; the kernel's
            # /proc/vmcore one is what QEMU wrote before 7.2.
            phdrs_first=options.elf_layout == "kernel" or not dump_writes_section_headers(prog),
            loads=loads,
        )
    else:
        # The kdump layout (and numpy) only when used.
        from drgn_qemu import kdump

        utsname = None
        if vmci is not None:
            utsname = _guest_utsname(prog, guest_arch, info, vmci, present, reader)
        header = _kdump_header(guest_arch, info, options.format, len(cpus), vmci, notes, utsname)
        layout = kdump.KdumpLayout(header, notes, segments)
    return DumpPlan(
        prog, options, guest_arch, blocks, segments, layout, info, cpus, vmci, warnings,
        sources.sources, reader,
    )  # fmt: skip


def _paging_loads(
    prog: Program,
    guest_arch: GuestArch,
    blocks: List[GuestPhysBlock],
    present: List[GuestPhysBlock],
    reader: MemoryReader,
    options: DumpOptions,
) -> List[LoadSegment]:
    """
    The PT_LOADs of QMP's ``paging=true``: the vCPUs' mappings (or the
    identity mapping of *blocks*), clipped to the begin/length window as
    QEMU's ``memory_mapping_filter()`` clips them. The page tables are read
    from the *present* blocks.
    """
    from drgn_qemu.paging import GuestPhysReader, qemu_get_guest_memory_mapping

    phys = GuestPhysReader(present, reader.read)
    try:
        with reading("the vCPUs' page tables"):
            mappings = qemu_get_guest_memory_mapping(prog, guest_arch.name, blocks, phys)
    except MemoryFault as e:
        raise GuestMemoryError(
            f"cannot read the guest's page tables: QEMU's memory at 0x{e.address:x} is not in "
            "the core"
        ) from None
    if options.begin is not None and options.length is not None:
        mappings.filter(options.begin, options.length)
    return [LoadSegment(m.phys_addr, m.virt_addr, m.length) for m in mappings]


def _checked_blocks(prog: Program, guest_arch: GuestArch) -> List[GuestPhysBlock]:
    """
    The guest-physical blocks, each checked against the vCPUs' physical
    address width and for a host address.
    """
    with reading("QEMU's memory map"):
        blocks = guest_phys_blocks(prog, guest_arch.page_size)
    with reading("the vCPUs' physical address width"):
        limit = guest_arch.max_phys_addr(prog)
    for block in blocks:
        if limit is not None and block.target_end > limit:
            raise CorruptStructureError(
                f"guest RAM {block.mr_name!r} at guest-physical 0x{block.target_start:x}-"
                f"0x{block.target_end - 1:x} lies beyond the vCPUs' physical address width "
                f"({limit.bit_length() - 1} bits): QEMU's memory map is damaged"
            )
    _check_host_addresses(blocks)
    return blocks


def _segments(
    blocks: List[GuestPhysBlock], options: DumpOptions, missing: List[BlockSource], empty: bool
) -> List[GuestRange]:
    """
    The ranges to dump: the blocks in the begin/length window, without
    *missing* (allowed only with ``options.skip_missing``).

    :raises GuestMemoryError: if memory is missing, or none is left (unless *empty*)
    """
    if missing and not options.skip_missing:
        raise _missing_error(missing, skipping=False)
    segments = guest_ranges(blocks, options.begin, options.length, missing)
    if not segments and not empty:
        if missing and guest_ranges(blocks, options.begin, options.length):
            raise _missing_error(missing, skipping=True)  # there was some: all of it missing
        raise GuestMemoryError(
            "no guest memory to dump" + (" in that window" if options.begin is not None else "")
        )
    return segments


def _guest_utsname(
    prog: Program,
    guest_arch: GuestArch,
    info: ArchDumpInfo,
    vmci: Vmcoreinfo,
    present: List[GuestPhysBlock],
    reader: MemoryReader,
) -> Optional[bytes]:
    """The guest kernel's ``struct new_utsname``, read through *present* blocks."""
    phys_base = guest_arch.kernel_phys_base(info, vmci.fields)
    with reading("the guest kernel's utsname"):
        return kernel_utsname(
            lambda paddr, size: guest_phys_read(
                prog, present, paddr, size, lambda a, n: _read(reader, a, n)
            ),
            vmci,
            lambda vaddr: guest_arch.kernel_paddr(info, vmci.fields, phys_base, vaddr),
        )


def _kdump_header(
    guest_arch: GuestArch,
    info: ArchDumpInfo,
    compression: str,
    nr_cpus: int,
    vmci: Optional[Vmcoreinfo],
    notes: bytes,
    utsname: Optional[bytes],
) -> "KdumpHeader":
    """
    What the kdump file's headers say: QEMU's choices for the guest, and the
    VMCOREINFO note, the last of *notes* when *vmci* is given.
    """
    from drgn_qemu.kdump import KdumpHeader

    return KdumpHeader(
        info.elf_class,
        info.endian,
        info.page_size or guest_arch.page_size,
        guest_arch.kdump_machine(info),
        nr_cpus,
        guest_arch.kernel_phys_base(info, vmci.fields if vmci is not None else {}),
        compression,
        len(notes) - len(vmci.note) if vmci is not None else None,
        utsname,
    )


def _read(reader: MemoryReader, address: int, size: int) -> bytes:
    try:
        return reader.read(address, size)
    except MemoryFault as e:
        raise LookupError(f"cannot read QEMU's memory at 0x{e.address:x}") from None


def _close_backed(reader: MemoryReader) -> None:
    """Close the files of a reader that planning made to read blocks back."""
    if isinstance(reader, BackedReader):
        reader.close()


def _check_host_addresses(blocks: List[GuestPhysBlock]) -> None:
    for block in blocks:
        if block.host_addr + block.size > 1 << 64:
            raise CorruptStructureError(
                f"guest RAM at guest-physical 0x{block.target_start:x} "
                f"({block.mr_name or 'RAM'}) would be at host address 0x{block.host_addr:x}, "
                "beyond the address space: QEMU's memory map is damaged"
            )


def _fault_error(plan: DumpPlan, e: MemoryFault) -> GuestMemoryError:
    for seg in plan.segments:
        if seg.host_addr <= e.address < seg.host_addr + seg.size:
            return GuestMemoryError(
                f"cannot read guest RAM at guest-physical "
                f"0x{seg.paddr + e.address - seg.host_addr:x} (host address 0x{e.address:x}): "
                "the core or file holding it is damaged or changed while being read"
            )
    return GuestMemoryError(f"cannot read QEMU's memory at 0x{e.address:x}")


def program_inputs(prog: Program) -> Iterator[Tuple[str, Optional[str]]]:
    """
    The files *prog* reads (QEMU's executable, its debug info, and every
    file this process has open for reading, the core among them), which an
    output must not be (see :func:`drgn_qemu.output.check_output`).
    """
    try:
        module = prog.main_module()
    except LookupError:
        pass
    else:
        yield "QEMU executable", module.loaded_file_path
        yield "QEMU debug info file", module.debug_file_path
    yield from files_open_for_reading()


def _inputs(plan: DumpPlan, reader: MemoryReader) -> Iterator[Tuple[str, Optional[str]]]:
    """The files a dump reads, which its output must not be."""
    yield "QEMU core", getattr(reader, "path", None)
    for source in plan.sources:
        yield f"file of RAM block {source.block.mr_name}", source.path
    for name, path in plan.options.ram_files.items():
        yield f"--ram-file of {name}", path
    yield "--vmcoreinfo file", plan.options.vmcoreinfo
    yield from program_inputs(plan.prog)


def write_dump(
    plan: DumpPlan,
    output: str,
    reader: Optional[MemoryReader] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> DumpResult:
    """
    Write the dump that *plan* describes to *output*: ``plan.layout``
    writes it, reading QEMU's memory with *reader* (default: through drgn)
    through buffers of a chunk (one, or one per thread and one more), so
    memory use does not grow with the guest. *progress* is called with the
    bytes of each chunk done.
    """
    # The writers bring numpy and the compressors: loaded when a dump is written.
    from drgn_qemu.writer import write_layout

    start = time.monotonic()
    reader = reader if reader is not None else plan.reader or ProgramReader(plan.prog)
    with atomic_output(output, plan.options.force, _inputs(plan, reader)) as f:
        try:
            size = write_layout(plan.layout, f.fileno(), reader, plan.options, progress)
        except MemoryFault as e:
            raise _fault_error(plan, e) from None
        except OSError as e:
            raise OutputError(f"cannot write {output}: {e.strerror or e}") from None
    return DumpResult(output, plan, size, time.monotonic() - start)


def dump_guest_memory(
    prog: Program,
    output: str,
    options: Optional[DumpOptions] = None,
    *,
    reader: Optional[MemoryReader] = None,
    progress: Optional[Callable[[int], None]] = None,
    on_plan: Optional[Callable[[DumpPlan], None]] = None,
) -> DumpResult:
    """
    Write the guest-physical memory of a QEMU program as a vmcore: by
    default the ELF file QMP ``dump-guest-memory`` (``paging=false``) would
    write, vCPU register notes and the guest's VMCOREINFO, then one PT_LOAD
    per guest-physical block with ``p_paddr`` the guest address; or the
    kdump-compressed file of its ``kdump-raw-*`` formats. The command line,
    the contrib script and ``%qemu dump-guest-memory`` all call this.

    :param prog: a QEMU core or process with QEMU's debug info loaded (see
        :func:`drgn_qemu.program.open_qemu_program`)
    :param output: path of the vmcore; written under a temporary name and
        renamed when complete
    :param options: what to dump and how (default: all guest RAM, ELF,
        sparse)
    :param reader: how to read QEMU's memory (see
        :func:`drgn_qemu.reader.open_reader`; default: through drgn)
    :param progress: called with the number of bytes after each chunk
    :param on_plan: called with the plan before anything is written (the
        command line prints its summary there)
    :raises DrgnQemuError: on every error a user can act on
    """
    plan = plan_dump(prog, options, reader)
    try:
        if on_plan is not None:
            on_plan(plan)
        return write_dump(plan, output, plan.reader, progress)
    finally:
        plan.close()
