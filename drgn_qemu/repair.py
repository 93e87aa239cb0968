# SPDX-License-Identifier: GPL-2.0-or-later
"""
Repairing vmcores
-----------------

QMP/HMP ``dump-guest-memory``, ``virsh dump --memory-only`` and QEMU's gdb
script write no VMCOREINFO note unless the guest registered one with
``-device vmcoreinfo``, and without it drgn and makedumpfile cannot open
the file. The ``drgn_qemu.repair`` module finds the guest kernel's
VMCOREINFO in the vmcore's own guest memory (or takes it from a file) and
writes a copy of the vmcore with the note added: :func:`add_vmcoreinfo`.

An ELF vmcore is rewritten with :class:`~drgn_qemu.elf.ElfCoreLayout` in the
layout it had (QEMU's, section headers first, or the kernel's), its notes
and the VMCOREINFO note, every PT_LOAD copied once, all-zero pages left as
holes.
"""

import time
from dataclasses import dataclass
from typing import Callable, Optional

from drgn_qemu.elf import (
    ET_CORE,
    PT_LOAD,
    CoreSegment,
    ElfCoreLayout,
    elf_note,
    read_elf_headers,
)
from drgn_qemu.errors import DrgnQemuError, OutputError, ProgramError
from drgn_qemu.options import DumpOptions
from drgn_qemu.output import atomic_output
from drgn_qemu.ranges import GuestRange
from drgn_qemu.reader import CoreFileReader, MemoryFault
from drgn_qemu.vmcoreinfo import Vmcoreinfo, vmcoreinfo_from_file, vmcoreinfo_from_ranges

__all__ = ("AddVmcoreinfoResult", "VmcoreinfoPresent", "add_vmcoreinfo")

#: Guest pages are scanned at this granularity: Linux's VMCOREINFO page is
#: page-aligned, so 4 KiB alignment finds it for every page size.
_SCAN_PAGE = 4096


class VmcoreinfoPresent(DrgnQemuError):
    """The vmcore has a VMCOREINFO note already: nothing to add."""


@dataclass
class AddVmcoreinfoResult:
    """What :func:`add_vmcoreinfo` wrote."""

    output: str
    vmcoreinfo: Vmcoreinfo
    #: Guest memory copied, in bytes.
    guest_bytes: int
    seconds: float


def add_vmcoreinfo(
    path: str,
    output: Optional[str] = None,
    vmcoreinfo: Optional[str] = None,
    force: bool = False,
    progress: Optional[Callable[[int], None]] = None,
) -> AddVmcoreinfoResult:
    """
    Write a copy of the ELF vmcore *path* with the guest kernel's VMCOREINFO
    note added: found in its guest memory (a page that begins with
    ``OSRELEASE=``), or read from the file *vmcoreinfo*.

    :param output: where to write it (atomically); default: replace *path*
    :param force: overwrite *output* if it exists (replacing *path* needs
        no *force*)
    :raises VmcoreinfoPresent: if the vmcore has VMCOREINFO already
    :raises DrgnQemuError: if *path* is not a vmcore, has no Linux kernel's
        VMCOREINFO in it, or the output cannot be written
    """
    start = time.monotonic()
    try:
        with open(path, "rb") as f:
            headers = read_elf_headers(f)
            notes = headers.notes(f) if headers.phdrs is not None else []
    except FileNotFoundError:
        raise ProgramError(f"vmcore {path} does not exist") from None
    except OSError as e:
        raise ProgramError(f"cannot read vmcore {path}: {e.strerror}") from None
    except ValueError as e:
        raise ProgramError(f"{path} is not an ELF vmcore: {e}") from None
    if headers.e_type != ET_CORE or headers.phdrs is None:
        raise ProgramError(f"{path} is not an ELF vmcore (not a complete ET_CORE file)")
    if any(name == b"VMCOREINFO" for name, _, _ in notes):
        raise VmcoreinfoPresent(f"{path} has a VMCOREINFO note already; left as it is")
    loads = [ph for ph in headers.phdrs if ph.p_type == PT_LOAD]
    for ph in loads:
        if ph.memsz != ph.filesz or ph.offset + ph.filesz > headers.file_size:
            raise ProgramError(
                f"{path}: a PT_LOAD at 0x{ph.paddr:x} is not all in the file "
                "(truncated, or not a vmcore of guest memory)"
            )
    ranges = [GuestRange(ph.paddr, ph.filesz, ph.offset) for ph in loads if ph.filesz]
    # The vmcore read at its file offsets.
    reader = CoreFileReader(
        path, segments=[CoreSegment(0, headers.file_size, 0, headers.file_size)]
    )
    try:
        if vmcoreinfo is not None:
            found: Optional[Vmcoreinfo] = vmcoreinfo_from_file(vmcoreinfo, headers.endian)
        else:
            try:
                found = vmcoreinfo_from_ranges(ranges, reader, _SCAN_PAGE, headers.endian)
            except MemoryFault as e:
                raise ProgramError(f"cannot read {path} at offset 0x{e.address:x}") from None
        if found is None:
            raise DrgnQemuError(
                f"no Linux kernel's VMCOREINFO in {path}'s guest memory (no page starts "
                "with OSRELEASE=): not a Linux guest, or its kernel was not up; give the "
                "kernel's VMCOREINFO with --vmcoreinfo FILE"
            )
        # The file's own notes, re-encoded as they were, then VMCOREINFO.
        encoded = b"".join(elf_note(n, t, d, headers.endian) for n, t, d in notes)
        layout = ElfCoreLayout(
            headers.machine,
            headers.elf_class,
            headers.endian,
            encoded + found.note,
            ranges,
            phdrs_first=not (0 < headers.shoff < headers.phoff),
            vaddrs=[ph.vaddr for ph in loads if ph.filesz],
        )
        target = output if output is not None else path
        with atomic_output(target, force or output is None) as out:
            try:
                layout.write(out.fileno(), reader, DumpOptions(), progress)
            except OSError as e:
                raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        reader.close()
    guest_bytes = sum(r.size for r in ranges)
    return AddVmcoreinfoResult(target, found, guest_bytes, time.monotonic() - start)
