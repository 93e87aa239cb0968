# SPDX-License-Identifier: GPL-2.0-or-later
"""
VMCOREINFO
----------

A kernel debugger opens a vmcore through the guest kernel's VMCOREINFO
(``OSRELEASE=``, ``PAGESIZE=``, ``SYMBOL(...)=``, ``KERNELOFFSET=`` lines):
drgn needs it, and crash uses it to find the KASLR offset. The
``drgn_qemu.vmcoreinfo`` module finds it for the vmcore's "VMCOREINFO" note,
in this order:

1. from QEMU's ``-device vmcoreinfo``, where the guest registered its note,
   read and checked exactly as QEMU's ``dump_init()`` does (so the note is
   QEMU's, byte for byte);
2. from guest RAM: Linux keeps the text in a page of its own
   (``vmcoreinfo_data``) that begins with ``OSRELEASE=``;
3. or from a file the user gives (``--vmcoreinfo``), which overrides both.
"""

import array
import re
import struct
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import drgn
from drgn import Program

from drgn_qemu.elf import ELFDATA2LSB, elf_note, note_align, struct_order
from drgn_qemu.errors import DrgnQemuError
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock, guest_phys_read
from drgn_qemu.helpers.vmcoreinfo import FW_CFG_VMCOREINFO_FORMAT_ELF, vmcoreinfo_find
from drgn_qemu.ranges import GuestRange
from drgn_qemu.reader import MemoryFault, MemoryReader, ProgramReader

__all__ = (
    "Vmcoreinfo",
    "find_vmcoreinfo",
    "kernel_utsname",
    "parse_vmcoreinfo",
    "vmcoreinfo_from_device",
    "vmcoreinfo_from_file",
    "vmcoreinfo_from_guest_ram",
    "vmcoreinfo_from_text",
    "vmcoreinfo_from_ranges",
)

#: An ELF note's header: namesz, descsz and type.
NOTE_HEADER_SIZE = 12
#: QEMU's ``MAX_GUEST_NOTE_SIZE``.
MAX_GUEST_NOTE_SIZE = 1 << 20
#: Linux's ``VMCOREINFO_BYTES`` is a page; allow the largest page size.
MAX_VMCOREINFO_TEXT = 64 << 10
_SCAN_CHUNK = 8 << 20
_LINE = re.compile(rb"[A-Za-z0-9_-]+(\([^)\n]*\))?=[^\n]*")


@dataclass
class Vmcoreinfo:
    """A VMCOREINFO note and where it came from."""

    #: Where it was found, for the summary.
    source: str
    #: The encoded ELF note.
    note: bytes
    #: The ``KEY=value`` lines.
    fields: Dict[str, str]
    #: The text itself (what drgn's ``set_linux_kernel_custom()`` takes).
    text: bytes = b""

    @property
    def osrelease(self) -> str:
        return self.fields.get("OSRELEASE", "?")

    @property
    def kerneloffset(self) -> str:
        return self.fields.get("KERNELOFFSET", "?")


def parse_vmcoreinfo(text: bytes) -> Optional[Dict[str, str]]:
    """
    Parse VMCOREINFO text and return its ``KEY=value`` lines, or None if it
    does not look like Linux's VMCOREINFO: every line ``KEY=value`` or
    ``SYMBOL(name)=value``, with ``OSRELEASE=``, ``PAGESIZE=`` and at least
    one ``SYMBOL(...)`` line.
    """
    if not text.startswith(b"OSRELEASE=") or len(text) > MAX_VMCOREINFO_TEXT:
        return None
    fields = {}
    lines = text.rstrip(b"\n").split(b"\n")
    for line in lines:
        if not _LINE.fullmatch(line):
            return None
        key, _, value = line.partition(b"=")
        fields[key.decode()] = value.decode("ascii", errors="replace")
    if "PAGESIZE" not in fields or not any(k.startswith("SYMBOL(") for k in fields):
        return None
    return fields


def vmcoreinfo_from_text(text: bytes, source: str, endian: int) -> Optional[Vmcoreinfo]:
    """
    Return the VMCOREINFO note of *text* (found at *source*), or None if it
    is not Linux's VMCOREINFO (see :func:`parse_vmcoreinfo`).
    """
    fields = parse_vmcoreinfo(text)
    if fields is None:
        return None
    # As Linux's append_elf_note(): name "VMCOREINFO", type 0, the text.
    return Vmcoreinfo(source, elf_note(b"VMCOREINFO", 0, text, endian), fields, text)


def _text_note(text: bytes, source: str, endian: int) -> Vmcoreinfo:
    found = vmcoreinfo_from_text(text, source, endian)
    assert found is not None
    return found


def vmcoreinfo_from_device(
    prog: Program,
    blocks: List[GuestPhysBlock],
    endian: int = ELFDATA2LSB,
    reader: Optional[MemoryReader] = None,
) -> Tuple[Optional[Vmcoreinfo], Optional[str]]:
    """
    Return the guest's note registered with ``-device vmcoreinfo``, checked
    as QEMU's ``dump_init()`` checks it, and a warning (QEMU's wording) when
    the device exists but holds no usable note. Guest RAM is read with
    *reader* (default: through drgn).
    """
    state = vmcoreinfo_find(prog)
    if not state:
        return None, None
    info = state.vmcoreinfo
    guest_format = info.guest_format.value_()
    size = info.size.value_()
    paddr = info.paddr.value_()
    if not state.has_vmcoreinfo:
        return None, "vmcoreinfo device: guest note is not present"
    if size < NOTE_HEADER_SIZE or size > MAX_GUEST_NOTE_SIZE:
        return None, f"vmcoreinfo device: guest note size is invalid: {size}"
    if guest_format != FW_CFG_VMCOREINFO_FORMAT_ELF:
        return None, f"vmcoreinfo device: guest note format is unsupported: {guest_format}"
    try:
        read = reader.read if reader is not None else None
        note = bytearray(guest_phys_read(prog, blocks, paddr, size, read))
    except (LookupError, drgn.FaultError, MemoryFault):
        return None, f"vmcoreinfo device: guest note at 0x{paddr:x} is not in guest RAM"
    order = struct_order(endian)
    namesz, descsz, _ = struct.unpack_from(order + "III", note)
    note_size = NOTE_HEADER_SIZE + note_align(namesz) + note_align(descsz)
    if namesz > MAX_GUEST_NOTE_SIZE or descsz > MAX_GUEST_NOTE_SIZE or note_size > size:
        return None, "vmcoreinfo device: invalid guest note header"
    name = bytes(note[NOTE_HEADER_SIZE : NOTE_HEADER_SIZE + namesz]).rstrip(b"\0")
    desc_at = NOTE_HEADER_SIZE + note_align(namesz)
    text = bytes(note[desc_at : desc_at + descsz])
    if name == b"VMCOREINFO" and desc_at + descsz < note_size:
        # vmcoreinfo_update_phys_base() NUL-terminates the text in place.
        note[desc_at + descsz] = 0
    fields = parse_vmcoreinfo(text.rstrip(b"\0")) or {}
    return Vmcoreinfo(f"vmcoreinfo device (guest note at 0x{paddr:x})", bytes(note[:note_size]),
                      fields, text.rstrip(b"\0")), None  # fmt: skip


def _index_all(heads: "array.array[int]", key: bytes) -> List[int]:
    """
    Return the indices of the words in *heads* equal to the first 8 bytes
    of *key* (compared in C by ``array.index``; numpy would cost a tenth of
    a second to import); the caller checks the rest.
    """
    head = int.from_bytes(key[:8], sys.byteorder)
    found: List[int] = []
    i = 0
    while True:
        try:
            i = heads.index(head, i)
        except ValueError:
            return found
        found.append(i)
        i += 1


def vmcoreinfo_from_guest_ram(
    prog: Program,
    blocks: List[GuestPhysBlock],
    page_size: int,
    endian: int = ELFDATA2LSB,
    reader: Optional[MemoryReader] = None,
) -> Optional[Vmcoreinfo]:
    """
    Find Linux's VMCOREINFO text in guest RAM: a page that begins with
    ``OSRELEASE=`` and holds valid VMCOREINFO up to its first NUL.

    :param reader: how to read QEMU's memory (default: through drgn); holes
        of a sparse core are not read
    """
    ranges = [GuestRange(b.target_start, b.size, b.host_addr) for b in blocks]
    reader = reader if reader is not None else ProgramReader(prog)
    return vmcoreinfo_from_ranges(ranges, reader, page_size, endian)


def vmcoreinfo_from_ranges(
    ranges: List[GuestRange], reader: MemoryReader, page_size: int, endian: int = ELFDATA2LSB
) -> Optional[Vmcoreinfo]:
    """
    Find Linux's VMCOREINFO text in guest memory that *reader* reads at
    the ranges' ``host_addr`` (QEMU's memory, or the offsets of a vmcore
    file): a page that begins with ``OSRELEASE=`` and holds valid
    VMCOREINFO up to its first NUL. Ranges that cannot be read are passed.
    """
    key = b"OSRELEASE="
    buf = memoryview(bytearray(_SCAN_CHUNK))
    page = memoryview(bytearray(page_size))
    for ram in ranges:
        try:
            # Chunks end on guest page boundaries: a key at the start of a
            # page is never split between two chunks.
            for chunk in reader.chunks([ram], len(buf), align=page_size):
                if not chunk.has_data:
                    continue
                start_paddr = ram.paddr + chunk.offset
                first = (-start_paddr) % page_size
                count = (chunk.size - first) // page_size
                if count <= 0:
                    continue
                heads = reader.page_heads(chunk.address + first, count, page_size, buf)
                for i in _index_all(heads, key):
                    paddr = start_paddr + first + i * page_size
                    n = min(page_size, ram.end - paddr)
                    reader.readinto(ram.host_addr + (paddr - ram.paddr), page[:n])
                    text = bytes(page[:n]).split(b"\0", 1)[0]
                    if parse_vmcoreinfo(text) is not None:
                        return _text_note(text, f"guest RAM at 0x{paddr:x}", endian)
        except MemoryFault:
            continue  # not in the core: the dump says so
    return None


def vmcoreinfo_from_file(path: str, endian: int = ELFDATA2LSB) -> Vmcoreinfo:
    """
    Read VMCOREINFO text from a file (e.g. a saved ``/sys/kernel/vmcoreinfo``
    target, or the text of another dump of the same kernel).

    :raises DrgnQemuError: if the file is unreadable or not VMCOREINFO
    """
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_VMCOREINFO_TEXT + 1).split(b"\0", 1)[0]
    except OSError as e:
        raise DrgnQemuError(f"cannot read VMCOREINFO file {path}: {e.strerror}") from None
    if parse_vmcoreinfo(text) is None:
        raise DrgnQemuError(
            f"{path} is not VMCOREINFO text (OSRELEASE=, PAGESIZE= and SYMBOL(...)= lines)"
        )
    return _text_note(text, f"file {path}", endian)


def find_vmcoreinfo(
    prog: Program,
    blocks: List[GuestPhysBlock],
    page_size: int,
    endian: int = ELFDATA2LSB,
    path: Optional[str] = None,
    scan: bool = True,
    reader: Optional[MemoryReader] = None,
) -> Tuple[Optional[Vmcoreinfo], List[str]]:
    """
    Return the VMCOREINFO for the vmcore (file, else device, else guest RAM
    when *scan*) and the warnings to show.
    """
    if path is not None:
        return vmcoreinfo_from_file(path, endian), []
    warnings = []
    found, warning = vmcoreinfo_from_device(prog, blocks, endian, reader)
    if warning:
        warnings.append(warning)
    if found is None and scan:
        found = vmcoreinfo_from_guest_ram(prog, blocks, page_size, endian, reader)
    if found is None:
        warnings.append(
            "no VMCOREINFO found (not a Linux guest, or its kernel was not up yet): "
            "crash and drgn will need the kernel's details another way"
        )
    return found, warnings


#: ``sizeof(struct new_utsname)``: six 65-byte strings.
NEW_UTSNAME_SIZE = 6 * 65


def kernel_utsname(
    read_phys: Callable[[int, int], bytes],
    vmci: Vmcoreinfo,
    kernel_paddr: Callable[[int], Optional[int]],
) -> Optional[bytes]:
    """
    Return the guest kernel's ``struct new_utsname`` (``init_uts_ns.name``)
    read from guest memory, as makedumpfile puts it in a kdump header, or
    None if it cannot be found or does not match VMCOREINFO.

    :param read_phys: reads guest-physical memory: ``(address, size) ->
        bytes``, raising :class:`LookupError` (or drgn's ``FaultError``)
        where there is none
    :param vmci: gives ``SYMBOL(init_uts_ns)`` and ``OFFSET(uts_namespace.name)``
    :param kernel_paddr: the guest-physical address of a kernel virtual
        address (per architecture), or None
    """
    try:
        vaddr = int(vmci.fields["SYMBOL(init_uts_ns)"], 16)
        vaddr += int(vmci.fields.get("OFFSET(uts_namespace.name)", "0"))
    except (KeyError, ValueError):
        return None
    paddr = kernel_paddr(vaddr)
    if paddr is None:
        return None
    try:
        uts = read_phys(paddr, NEW_UTSNAME_SIZE)
    except (LookupError, drgn.FaultError):
        return None
    fields = [uts[i * 65 : (i + 1) * 65] for i in range(6)]
    # Every string NUL-terminated; sysname Linux; the release VMCOREINFO's.
    if any(f[-1] != 0 for f in fields) or fields[0].rstrip(b"\0") != b"Linux":
        return None
    if fields[2].split(b"\0")[0].decode(errors="replace") != vmci.osrelease:
        return None
    return uts
