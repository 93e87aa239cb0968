# SPDX-License-Identifier: GPL-2.0-or-later
"""
QEMU's executable
-----------------

The ``drgn_qemu.executable`` module reads what QEMU's own executable file
holds and a core may not: read-only constants (gdb's ``gcore`` and Linux
leave read-only file mappings out of a core), and the ``printf`` formats
that tell which way this QEMU prints a monitor view.
"""

from typing import Callable, Optional, Sequence, Tuple, TypeVar

import drgn
from drgn import Program

from drgn_qemu.elf import PT_LOAD, read_elf_headers

__all__ = ("printed_format", "read_constant", "read_constant_string", "read_from_executable")

T = TypeVar("T")


def read_from_executable(prog: Program, read: Callable[[str], T]) -> Optional[T]:
    """
    Return ``read(path)`` of the executable file of the program's main
    module (QEMU's), or None if drgn did not find the file or it cannot be
    read so (``read`` raising :class:`OSError` or :class:`ValueError`).
    """
    path = prog.main_module().loaded_file_path
    if not path:
        return None
    try:
        return read(path)
    except (OSError, ValueError):
        return None


def printed_format(prog: Program, formats: Sequence[Tuple[T, bytes]], default: T) -> T:
    """
    Which of several ``printf`` formats the QEMU in the program prints a
    monitor view with, told by the format string in its own executable
    (what changed is code, not a structure the debug info would show): the
    key of the first found, else *default*.
    """

    def find(path: str) -> T:
        import mmap

        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for key, needle in formats:
                if m.find(needle) >= 0:
                    return key
        return default

    found = read_from_executable(prog, find)
    return default if found is None else found


def read_constant(prog: Program, address: int, size: int) -> bytes:
    """
    Read QEMU's read-only data at *address*: from the program, or, where a
    core left it out (gdb's ``gcore`` and Linux skip read-only file
    mappings, whose bytes are in the file), from QEMU's executable, through
    its program headers and the load bias.

    :raises drgn.FaultError: if neither has it
    """
    try:
        return prog.read(address, size)
    except drgn.FaultError as e:
        fault = e
    module = prog.main_module()
    bias = module.loaded_file_bias
    if bias is None:
        raise fault

    def read(path: str) -> Optional[bytes]:
        with open(path, "rb") as f:
            headers = read_elf_headers(f)
            for ph in headers.phdrs or ():
                vaddr = address - bias
                if (
                    ph.p_type == PT_LOAD
                    and ph.vaddr <= vaddr
                    and vaddr + size <= ph.vaddr + ph.filesz
                ):
                    f.seek(ph.offset + vaddr - ph.vaddr)
                    return f.read(size)
        return None

    data = read_from_executable(prog, read)
    if data is None or len(data) != size:
        raise fault
    return data


def read_constant_string(prog: Program, address: int, limit: int = 256) -> str:
    """A NUL-terminated string of QEMU's read-only data (see :func:`read_constant`)."""
    out = b""
    while len(out) < limit:
        # Page by page: a string near the end of a mapping must not read past it.
        n = min(limit - len(out), 4096 - (address + len(out)) % 4096)
        chunk = read_constant(prog, address + len(out), n)
        if b"\0" in chunk:
            return (out + chunk.split(b"\0", 1)[0]).decode(errors="replace")
        out += chunk
    return out.decode(errors="replace")
