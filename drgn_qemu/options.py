# SPDX-License-Identifier: GPL-2.0-or-later
"""
Dump options
------------

The ``drgn_qemu.options`` module holds what a user chooses about a dump, in
one frozen :class:`DumpOptions`, and the names each choice accepts. It
imports nothing heavy, so that the command line and the REPL command can
describe the options without loading the writers.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional

from drgn_qemu.ranges import MAX_GUEST_PHYS_ADDR

__all__ = (
    "ARCH_NAMES",
    "CHUNK_SIZE",
    "IO_MODES",
    "DumpOptions",
    "ELF_LAYOUTS",
    "FORMATS",
    "KDUMP_FORMATS",
)

#: Bytes read from QEMU's memory and written to the vmcore at a time.
#: Measured on a 2 GiB guest of random data (benchmarks/RESULTS.md, and five
#: alternating runs: 4 MiB 0.70-0.80 s, 8 MiB 0.72-1.14 s), 4 MiB is as fast
#: as larger chunks and keeps less mapped: peak RSS 94 MB against 116 MB.
CHUNK_SIZE = 4 << 20

#: kdump-compressed formats, by compression.
KDUMP_FORMATS = ("kdump-zlib", "kdump-zstd", "kdump-snappy", "kdump-lzo")

#: Output formats: ELF, or kdump-compressed with one of the compressions.
FORMATS = ("elf", *KDUMP_FORMATS)

#: ELF layouts: QEMU's (section headers first), or the kernel's
#: ``/proc/vmcore`` one (program headers first), which makedumpfile needs.
ELF_LAYOUTS = ("qemu", "kernel")

#: How a dump reads QEMU's memory (:func:`drgn_qemu.reader.open_reader`).
IO_MODES = ("auto", "copy-file-range", "pread", "program")

#: The guest architectures (``--arch``), one module each in
#: ``drgn_qemu/arch/``: named here so that declaring the option imports
#: none of them (a test checks the list against the modules).
ARCH_NAMES = ("aarch64", "loongarch64", "ppc64", "riscv64", "s390x", "x86_64")


@dataclass(frozen=True)
class DumpOptions:
    """What to dump and how (see :func:`drgn_qemu.dump.dump_guest_memory`)."""

    #: Guest architecture name; detected from the debug info if None.
    arch: Optional[str] = None
    #: With *length*: dump only guest-physical ``[begin, begin + length)``.
    begin: Optional[int] = None
    length: Optional[int] = None
    #: File with the guest kernel's VMCOREINFO text, instead of looking for it.
    vmcoreinfo: Optional[str] = None
    #: ``elf`` or one of :data:`KDUMP_FORMATS`.
    format: str = "elf"
    #: One of :data:`ELF_LAYOUTS`.
    elf_layout: str = "qemu"
    #: One PT_LOAD per guest-virtual mapping of the vCPUs' page tables
    #: (QMP's ``paging=true``).
    paging: bool = False
    #: Leave all-zero pages as holes in the file.
    sparse: bool = True
    #: Threads compressing (kdump) or scanning for zero pages (ELF); None
    #: for the measured default of each.
    threads: Optional[int] = None
    #: Bytes per read from QEMU's memory.
    chunk_size: int = CHUNK_SIZE
    #: Overwrite the output if it exists.
    force: bool = False
    #: Leave guest RAM that is nowhere to be read out of the vmcore (listed
    #: in the summary and a warning) instead of failing.
    skip_missing: bool = False
    #: RAM block (backend id or RAMBlock name) to a file holding its bytes
    #: (a copy of its ``mem-path`` file).
    ram_files: Dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        from drgn_qemu.errors import UsageError

        if self.format not in FORMATS:
            raise UsageError(f"unknown format {self.format!r} (one of {', '.join(FORMATS)})")
        if self.elf_layout not in ELF_LAYOUTS:
            raise UsageError(
                f"unknown ELF layout {self.elf_layout!r} (one of {', '.join(ELF_LAYOUTS)})"
            )
        if (self.begin is None) != (self.length is None):
            raise UsageError("--begin and --length go together")
        if self.length is not None and (self.length <= 0 or (self.begin or 0) < 0):
            raise UsageError("--length must be positive and --begin not negative")
        if self.length is not None and (self.begin or 0) + self.length > MAX_GUEST_PHYS_ADDR:
            raise UsageError(
                f"--begin 0x{self.begin or 0:x} --length 0x{self.length:x} ends past "
                f"0x{MAX_GUEST_PHYS_ADDR:x}, beyond the widest guest-physical address (52 bits)"
            )
        if self.paging and self.format != "elf":
            # QMP's own reason.
            raise UsageError("kdump-compressed format doesn't support paging or filter")
        if self.begin is not None and self.format != "elf":
            # QMP dump-guest-memory refuses a window with the kdump formats too.
            raise UsageError("--begin and --length only work with --format elf")
        if self.elf_layout != "qemu" and self.format != "elf":
            raise UsageError(f"--elf-layout {self.elf_layout} only works with --format elf")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if self.chunk_size < 1:
            raise UsageError("--chunk-size must be positive")
