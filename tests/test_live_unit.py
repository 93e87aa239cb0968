"""
Reading a live process (``drgn_qemu.reader.ProcessReader``): the pages of
private anonymous memory that ``/proc/PID/pagemap`` says were never touched
are holes, never read; everything else is data. The oracle is a child
process that maps memory and touches the pages the test chose.
"""

import mmap
import os
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

from drgn_qemu.reader import ProcessReader

PAGE = mmap.PAGESIZE
PAGES = 4096  # 16 MiB with 4 KiB pages
TOUCHED = [3, 4, 5, 100, 2048, PAGES - 1]

CHILD = f"""
import mmap, sys
anon = mmap.mmap(-1, {PAGES * PAGE}, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
shared = mmap.mmap(-1, {PAGES * PAGE}, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for i in {TOUCHED}:
    anon[i * {PAGE}] = 0x5A
shared[7 * {PAGE}] = 0x5A
import ctypes
address = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))
print(address(anon), address(shared), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child() -> Iterator[Tuple[int, int, int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    anon, shared = (int(x) for x in proc.stdout.readline().split())
    yield proc.pid, anon, shared
    proc.stdin.close()
    proc.wait()


def runs(pages: List[int], start: int) -> List[Tuple[int, int, bool]]:
    """The extents the touched *pages* make of the mapping at *start*."""
    out: List[Tuple[int, int, bool]] = []
    for i in range(PAGES):
        data = i in pages
        if out and out[-1][2] == data:
            out[-1] = (out[-1][0], out[-1][1] + PAGE, data)
        else:
            out.append((start + i * PAGE, PAGE, data))
    return out


def test_untouched_anonymous_pages_are_holes(child: Tuple[int, int, int]) -> None:
    pid, anon, shared = child
    reader = ProcessReader(pid)
    try:
        assert list(reader.extents(anon, PAGES * PAGE)) == runs(TOUCHED, anon)
        # A window that starts and ends inside pages: the partial pages are data.
        got = list(reader.extents(anon + 3 * PAGE + 10, 4 * PAGE))
        assert got[0] == (anon + 3 * PAGE + 10, PAGE - 10, True)
        assert sum(n for _, n, _ in got) == 4 * PAGE
        # Shared memory may be in the page cache without being mapped: all data.
        assert list(reader.extents(shared, PAGES * PAGE)) == [(shared, PAGES * PAGE, True)]
        # The data read back: the touched bytes.
        buf = memoryview(bytearray(PAGE))
        reader.readinto(anon + 100 * PAGE, buf)
        assert buf[0] == 0x5A and not any(buf[1:])
    finally:
        reader.close()


def test_without_pagemap_all_is_data(child: Tuple[int, int, int]) -> None:
    pid, anon, _ = child
    reader = ProcessReader(pid, pagemap=False)
    try:
        assert list(reader.extents(anon, PAGES * PAGE)) == [(anon, PAGES * PAGE, True)]
    finally:
        reader.close()


def test_pagemap_window_boundaries(
    child: Tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that cross the windows pagemap is read in come back whole."""
    import drgn_qemu.reader

    monkeypatch.setattr(drgn_qemu.reader, "PAGEMAP_WINDOW", 4)
    pid, anon, _ = child
    reader = ProcessReader(pid)
    try:
        assert list(reader.extents(anon, PAGES * PAGE)) == runs(TOUCHED, anon)
    finally:
        reader.close()
    assert os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("vm_readv", [True, False], ids=["process_vm_readv", "proc-mem"])
def test_read_and_fault(child: Tuple[int, int, int], vm_readv: bool) -> None:
    """Both ways of reading give the bytes, and a fault names the address."""
    from drgn_qemu.reader import MemoryFault

    pid, anon, shared = child
    reader = ProcessReader(pid, vm_readv=vm_readv)
    try:
        assert (reader._vm_readv is not None) == vm_readv
        buf = memoryview(bytearray(2 * PAGE))
        reader.readinto(shared + 6 * PAGE, buf)
        assert buf[PAGE] == 0x5A and sum(buf) == 0x5A
        with pytest.raises(MemoryFault) as e:  # page 0 is never mapped
            reader.readinto(0x10, memoryview(bytearray(PAGE)))
        assert e.value.address == 0x10
    finally:
        reader.close()


@pytest.mark.parametrize("vm_readv", [True, False], ids=["process_vm_readv", "proc-mem"])
def test_page_heads(
    child: Tuple[int, int, int], vm_readv: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The VMCOREINFO search's reads: each page's first word, in batches of
    pieces (made 3 here, to cross them) or, without process_vm_readv, as a
    plain read; the child's touched pages start with 0x5A, the rest with 0.
    """
    import drgn_qemu.reader
    from drgn_qemu.reader import MemoryFault

    monkeypatch.setattr(drgn_qemu.reader, "IOV_MAX", 3)
    pid, anon, _ = child
    reader = ProcessReader(pid, vm_readv=vm_readv)
    buf = memoryview(bytearray(PAGES * PAGE))
    try:
        heads = reader.page_heads(anon, PAGES, PAGE, buf)
        mark = int.from_bytes(b"\x5a" + bytes(7), sys.byteorder)
        assert list(heads) == [mark if i in TOUCHED else 0 for i in range(PAGES)]
        # A stride of two pages, starting at page 3: pages 3, 5, 7, ...
        heads = reader.page_heads(anon + 3 * PAGE, 5, 2 * PAGE, buf)
        assert list(heads) == [mark, mark, 0, 0, 0]
        with pytest.raises(MemoryFault):  # page 0 is never mapped
            reader.page_heads(0, 4, PAGE, buf)
    finally:
        reader.close()
