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
holes. A kdump-compressed file (read with :class:`~drgn_qemu.kdump.KdumpFile`)
gets the note, and the kernel's utsname in its header; its pages are copied
as they are.
"""

import contextlib
import dataclasses
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

from drgn_qemu.arch import arch_from_notes
from drgn_qemu.elf import (
    ELFDATA2LSB,
    ELFDATA2MSB,
    ET_CORE,
    PT_LOAD,
    ElfCoreLayout,
    LoadSegment,
    elf_note,
    note_align,
    parse_notes,
    process_core_notes,
    read_elf_headers,
)
from drgn_qemu.elffile import CoreSegment
from drgn_qemu.errors import DrgnQemuError, OutputError, ProgramError
from drgn_qemu.kdump import FLATTENED_SIGNATURE, KDUMP_SIGNATURE
from drgn_qemu.options import DumpOptions
from drgn_qemu.output import atomic_output, check_output
from drgn_qemu.ranges import GuestRange
from drgn_qemu.reader import CoreFileReader, MemoryFault
from drgn_qemu.vmcoreinfo import (
    Vmcoreinfo,
    kernel_utsname,
    vmcoreinfo_from_file,
    vmcoreinfo_from_ranges,
    vmcoreinfo_from_text,
)
from drgn_qemu.writer import write_elf

if TYPE_CHECKING:
    from drgn_qemu.kdump import KdumpFile

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
) -> AddVmcoreinfoResult:
    """
    Write a copy of the vmcore *path* (ELF, or kdump-compressed) with the
    guest kernel's VMCOREINFO note added: found in its guest memory (a page
    that begins with ``OSRELEASE=``), or read from the file *vmcoreinfo*.

    :param output: where to write it (atomically); default: replace *path*
    :param force: overwrite *output* if it exists (replacing *path* needs
        no *force*)
    :raises VmcoreinfoPresent: if the vmcore has VMCOREINFO already
    :raises DrgnQemuError: if *path* is not a vmcore, has no Linux kernel's
        VMCOREINFO in it, or the output cannot be written
    """
    start = time.monotonic()
    if output is not None:  # in place, the checks come once the vmcore is known to be one
        check_output(output, force, _inputs(path, output, vmcoreinfo))
    try:
        with open(path, "rb") as f:
            magic = f.read(len(FLATTENED_SIGNATURE))
    except FileNotFoundError:
        raise ProgramError(f"vmcore {path} does not exist") from None
    except OSError as e:
        raise ProgramError(f"cannot read vmcore {path}: {e.strerror}") from None
    if magic.startswith(KDUMP_SIGNATURE) or magic == FLATTENED_SIGNATURE:
        flattened = magic == FLATTENED_SIGNATURE
        found, guest_bytes, target = _add_vmcoreinfo_kdump(
            path, output, vmcoreinfo, force, flattened
        )
    else:
        found, guest_bytes, target = _add_vmcoreinfo_elf(path, output, vmcoreinfo, force)
    return AddVmcoreinfoResult(target, found, guest_bytes, time.monotonic() - start)


def _inputs(
    path: str, output: Optional[str], vmcoreinfo: Optional[str]
) -> List[Tuple[str, Optional[str]]]:
    """What an output other than *path* itself must not be: the vmcore read, the VMCOREINFO file."""
    if output is None:
        return [("--vmcoreinfo file", vmcoreinfo)]  # in place: the vmcore is the output
    if os.path.abspath(output) == os.path.abspath(path):
        return [("--vmcoreinfo file", vmcoreinfo)]  # -o VMCORE: in place too
    return [("vmcore being repaired", path), ("--vmcoreinfo file", vmcoreinfo)]


def _no_vmcoreinfo(path: str) -> DrgnQemuError:
    return DrgnQemuError(
        f"no Linux kernel's VMCOREINFO in {path}'s guest memory (no page starts with "
        "OSRELEASE=): not a Linux guest, or its kernel was not up; give the kernel's "
        "VMCOREINFO with --vmcoreinfo FILE"
    )


def _add_vmcoreinfo_elf(
    path: str, output: Optional[str], vmcoreinfo: Optional[str], force: bool
) -> Tuple[Vmcoreinfo, int, str]:
    """:func:`add_vmcoreinfo` of an ELF vmcore."""
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
    process = process_core_notes(notes)
    if process:
        raise ProgramError(
            f"{path} is the core of a process (it has {', '.join(process)} notes), not a guest "
            f"vmcore: left as it is; to write the vmcore of a QEMU core's guest, run "
            f"drgn-qemu dump-guest-memory -c {path} OUTPUT"
        )
    if any(name == b"VMCOREINFO" for name, _, _ in notes):
        raise VmcoreinfoPresent(f"{path} has a VMCOREINFO note already; left as it is")
    loads = [ph for ph in headers.phdrs if ph.p_type == PT_LOAD]
    for ph in loads:
        if ph.memsz != ph.filesz or ph.offset + ph.filesz > headers.file_size:
            raise ProgramError(
                f"{path}: a PT_LOAD at 0x{ph.paddr:x} is not all in the file "
                "(truncated, or not a vmcore of guest memory)"
            )
    with_data = [ph for ph in loads if ph.filesz]
    ranges = [GuestRange(ph.paddr, ph.filesz, ph.offset) for ph in with_data]
    # The vmcore read at its file offsets.
    reader = CoreFileReader(
        path, segments=[CoreSegment(0, headers.file_size, 0, headers.file_size)]
    )
    try:
        found: Optional[Vmcoreinfo]
        if vmcoreinfo is not None:
            found = vmcoreinfo_from_file(vmcoreinfo, headers.endian)
        else:
            try:
                found = vmcoreinfo_from_ranges(ranges, reader, _SCAN_PAGE, headers.endian)
            except MemoryFault as e:
                raise ProgramError(f"cannot read {path} at offset 0x{e.address:x}") from None
        if found is None:
            raise _no_vmcoreinfo(path)
        # The file's own notes, re-encoded as they were, then VMCOREINFO.
        encoded = b"".join(elf_note(n, t, d, headers.endian) for n, t, d in notes)
        layout = ElfCoreLayout(
            headers.machine,
            headers.elf_class,
            headers.endian,
            encoded + found.note,
            ranges,
            phdrs_first=not (0 < headers.shoff < headers.phoff),
            # Each PT_LOAD as it was, over its own bytes.
            loads=[LoadSegment(ph.paddr, ph.vaddr, ph.filesz, i) for i, ph in enumerate(with_data)],
        )
        target = output if output is not None else path
        with atomic_output(
            target, force or output is None, _inputs(path, output, vmcoreinfo)
        ) as out:
            try:
                write_elf(layout, out.fileno(), reader, DumpOptions())
            except OSError as e:
                raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        reader.close()
    return found, sum(r.size for r in ranges), target


def _find_in_kdump(k: "KdumpFile", endian: int) -> Optional[Vmcoreinfo]:
    """The kernel's VMCOREINFO page among a kdump file's pages (each stored page once)."""
    seen = set()
    descs = k.descriptors()
    for pfn, d in zip(k.pfns.tolist(), descs.tolist()):
        offset, size, flags, _ = d
        if offset in seen:
            continue  # the shared zero page
        seen.add(offset)
        page = k.page(offset, size, flags)
        if page.startswith(b"OSRELEASE="):
            found = vmcoreinfo_from_text(
                page.split(b"\0", 1)[0], f"guest RAM at 0x{pfn * k.block_size:x}", endian
            )
            if found is not None:
                return found
    return None


def _add_vmcoreinfo_kdump(
    path: str, output: Optional[str], vmcoreinfo: Optional[str], force: bool, flattened: bool
) -> Tuple[Vmcoreinfo, int, str]:
    """
    :func:`add_vmcoreinfo` of a kdump-compressed file (flattened, as QEMU's
    kdump-zlib, or plain): the note goes after the file's notes, the
    sub-header points at its text, the header's utsname becomes the
    kernel's, as makedumpfile writes it (libkdumpfile, so drgn, learns the
    system and architecture from it; QEMU writes only the machine, or
    "Unknown"); bitmaps, descriptors (moved as the notes grow) and page
    data are copied as they are.
    """
    from drgn_qemu import kdump
    from drgn_qemu.writer import unflatten

    target = output if output is not None else path
    with contextlib.ExitStack() as stack:
        src = path
        if flattened:
            directory = os.path.dirname(os.path.abspath(target))
            fd, src = tempfile.mkstemp(prefix=".drgn-qemu-kdump.", suffix=".tmp", dir=directory)
            stack.callback(os.unlink, src)
            try:
                with open(path, "rb") as f:
                    unflatten(f, fd)
            except ValueError as e:
                raise ProgramError(f"{path}: {e}") from None
            except OSError as e:
                raise OutputError(f"cannot unflatten {path} in {directory}: {e.strerror}") from None
            finally:
                os.close(fd)
        fd = os.open(src, os.O_RDONLY)
        stack.callback(os.close, fd)
        try:
            k = kdump.KdumpFile(fd)
            endian = ELFDATA2LSB if k.order == "<" else ELFDATA2MSB
            notes = parse_notes(k.notes, endian)
            arch, info = arch_from_notes(notes, endian, k.block_size)
        except ValueError as e:
            raise ProgramError(
                f"{path} is not a kdump-compressed vmcore we can read: {e}"
            ) from None
        info = dataclasses.replace(info, phys_base=k.sub["phys_base"])
        present = [d for name, _, d in notes if name == b"VMCOREINFO"]
        if present:
            found = vmcoreinfo_from_text(
                present[0].split(b"\0", 1)[0],
                "its own note (the header lacked the kernel's utsname)",
                endian,
            )
            if found is None or k.utsname.startswith(b"Linux\0"):
                raise VmcoreinfoPresent(f"{path} has a VMCOREINFO note already; left as it is")
            # QEMU's own note, but a header without the kernel's utsname
            # (QEMU writes only the machine, or "Unknown"), from which
            # libkdumpfile (drgn) cannot tell the system: the header is
            # repaired.
        elif vmcoreinfo is not None:
            found = vmcoreinfo_from_file(vmcoreinfo, endian)
        else:
            try:
                found = _find_in_kdump(k, endian)
            except ValueError as e:
                raise ProgramError(f"{path}: {e}") from None
        if found is None:
            raise _no_vmcoreinfo(path)
        vmci = found
        phys_base = arch.kernel_phys_base(info, vmci.fields)
        utsname = kernel_utsname(
            k.read_phys, vmci, lambda v: arch.kernel_paddr(info, vmci.fields, phys_base, v)
        )
        with atomic_output(
            target, force or output is None, _inputs(path, output, vmcoreinfo)
        ) as out:
            try:
                _write_kdump_with(k, out.fileno(), b"" if present else vmci.note, utsname)
            except OSError as e:
                raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
    return vmci, len(k.pfns) * k.block_size, target


def _write_kdump_with(k: "KdumpFile", fd: int, note: bytes, utsname: Optional[bytes]) -> None:
    """Write *k* to *fd* with *note* after its notes and *utsname* in its header."""
    from drgn_qemu import kdump
    from drgn_qemu.fileio import pwrite_all

    block = k.block_size
    notes = k.notes + note
    sub = dict(k.sub)
    if note:
        namesz, descsz = struct.unpack_from(k.order + "II", note)
        sub["offset_vmcoreinfo"] = sub["offset_note"] + len(k.notes) + 12 + note_align(namesz)
        sub["size_vmcoreinfo"] = descsz
        sub["note_size"] = len(notes)
    sub_blocks = -(-(k.sub_struct.size + len(notes)) // block)
    delta = (sub_blocks - k.header["sub_hdr_size"]) * block
    if sub["offset_eraseinfo"]:
        sub["offset_eraseinfo"] += delta
    header = dict(k.header, sub_hdr_size=sub_blocks)
    if utsname is not None:
        header["utsname"] = utsname
    dh = kdump.pack_disk_dump_header(k.order, k.elf_class, header)
    head = bytearray((1 + sub_blocks) * block)
    head[: len(dh)] = dh
    kh = kdump.pack_kdump_sub_header(k.order, k.elf_class, sub)
    head[block : block + len(kh)] = kh
    head[sub["offset_note"] : sub["offset_note"] + len(notes)] = notes
    pwrite_all(fd, memoryview(head), 0)
    bitmaps = os.pread(k.fd, k.desc_offset - k.bitmap_offset, k.bitmap_offset)
    pwrite_all(fd, memoryview(bitmaps), k.bitmap_offset + delta)
    descs = k.descriptors().copy()
    descs["offset"] += delta
    pwrite_all(fd, memoryview(descs.tobytes()), k.desc_offset + delta)
    # The page data as it is, shifted: copy_file_range, no Python in between.
    size = os.fstat(k.fd).st_size
    pos = k.data_offset
    while pos < size:
        n = os.copy_file_range(k.fd, fd, size - pos, pos, pos + delta)
        if n <= 0:
            raise OSError("short copy")
        pos += n
    os.ftruncate(fd, size + delta)
