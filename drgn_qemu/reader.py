# SPDX-License-Identifier: GPL-2.0-or-later
"""
Reading QEMU's memory
---------------------

The dump copies gigabytes of guest RAM out of QEMU's address space. The
``drgn_qemu.reader`` module reads it into reused buffers, as fast as the
input allows, with a plain path behind every fast one:

* :class:`ProgramReader`: through drgn's ``Program.read`` (any program);
* :class:`CoreFileReader`: straight from a core file, through its PT_LOAD
  table: a read-only mapping of the file to look at memory without copying
  it (or ``preadv`` into the caller's buffer), holes of a sparse core (as the
  kernel and systemd-coredump write them) skipped with ``SEEK_DATA``, and
  ``copy_file_range`` for copies that need not pass through Python;
* :class:`ProcessReader`: ``/proc/PID/mem`` of a live QEMU;
* :class:`BackedReader`: one of these, with some host ranges read from the
  files that back them (guest RAM a core left out, still in its file).

All readers give the same bytes; the tests compare their outputs.
"""

import array
import bisect
import ctypes
import errno
import mmap as mmap_module
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, cast

import drgn
from drgn import Program

from drgn_qemu.elffile import CoreSegment, read_core_file_info
from drgn_qemu.options import IO_MODES
from drgn_qemu.ranges import GuestRange

__all__ = (
    "BackedReader",
    "Chunk",
    "CoreFileReader",
    "FileBacking",
    "MemoryFault",
    "MemoryReader",
    "ProcessReader",
    "ProgramReader",
    "IO_MODES",
    "open_reader",
)


class MemoryFault(Exception):
    """QEMU's memory at :attr:`address` cannot be read (not in the core)."""

    def __init__(self, address: int) -> None:
        super().__init__(f"cannot read QEMU's memory at 0x{address:x}")
        self.address = address


@dataclass(frozen=True)
class Chunk:
    """
    A piece of at most a chunk of one of the ranges given to
    :meth:`MemoryReader.chunks`: read it with :meth:`MemoryReader.read_view`,
    then :meth:`MemoryReader.release` it.
    """

    #: The range, and its position in the ranges given.
    range: GuestRange
    index: int
    #: Offset of the chunk in the range.
    offset: int
    size: int
    #: False for a hole of a sparse core: zeros, not to be read.
    has_data: bool

    @property
    def address(self) -> int:
        """Host-virtual address of the chunk."""
        return self.range.host_addr + self.offset


class MemoryReader:
    """
    Reads QEMU's memory at host-virtual addresses. :meth:`readinto` and
    :meth:`read_view` may be called from several threads at once (the ELF
    writer reads chunks in its scanning threads).
    """

    #: Where the bytes come from: ``core`` or ``process``.
    source = "core"
    #: The core file read, if the bytes come from one (its ``NT_FILE``
    #: note says which files are mapped where).
    path: Optional[str] = None

    def readinto(self, address: int, buf: memoryview) -> None:
        """Fill *buf* with the memory at *address*, or raise :class:`MemoryFault`."""
        raise NotImplementedError

    def read(self, address: int, size: int) -> bytes:
        """Return the *size* bytes at *address*, or raise :class:`MemoryFault`."""
        buf = bytearray(size)
        self.readinto(address, memoryview(buf))
        return bytes(buf)

    def extents(self, address: int, size: int) -> Iterator[Tuple[int, int, bool]]:
        """
        Split ``[address, address + size)`` into ``(address, size, has_data)``
        runs; runs without data read as zeros (holes of a sparse core).
        """
        yield address, size, True

    def missing(self, address: int, size: int) -> List[Tuple[int, int]]:
        """
        Return the ``(address, size)`` runs of ``[address, address + size)``
        that cannot be read (left out of a core). This reader looks at the
        first and last byte: all of it is missing if either is.
        """
        byte = memoryview(bytearray(1))
        for probe in (address, address + size - 1):
            try:
                self.readinto(probe, byte)
            except MemoryFault:
                return [(address, size)]
        return []

    def chunks(
        self, ranges: Iterable[GuestRange], chunk_size: int, holes: bool = True, align: int = 1
    ) -> Iterator[Chunk]:
        """
        Walk *ranges* in order, a chunk of at most *chunk_size* bytes at a
        time: the one loop every reader of guest memory runs. With *holes*,
        holes of a sparse core come as chunks without data, of any size.
        Data chunks end on a multiple of *align* in guest-physical memory
        (unless a range ends first), so a guest page is never split.

        :raises MemoryFault: if a range is not in QEMU's memory
        """
        for index, r in enumerate(ranges):
            pieces = self.extents(r.host_addr, r.size) if holes else [(r.host_addr, r.size, True)]
            for address, size, has_data in pieces:
                offset = address - r.host_addr
                if not has_data:
                    yield Chunk(r, index, offset, size, False)
                    continue
                end = offset + size
                while offset < end:
                    n = min(chunk_size, end - offset)
                    cut = (r.paddr + offset + n) % align
                    if offset + n < end and n > cut:
                        n -= cut
                    yield Chunk(r, index, offset, n, True)
                    offset += n

    def copy(self, address: int, size: int, fd: int, offset: int, seen: bool = False) -> bool:
        """
        Copy memory to file *fd* at *offset* without passing it through
        Python, if this reader can and it pays; return whether it did.
        *seen* says the memory was just looked at through :meth:`read_view`,
        so that writing it from there may cost less.
        """
        return False

    def read_view(self, address: int, buf: memoryview) -> memoryview:
        """
        Return the ``len(buf)`` bytes of memory at *address*: a read-only view
        of them where the reader can give one without copying (a mapping of
        the core file), else *buf* filled by :meth:`readinto`. Call
        :meth:`release` when done with it.
        """
        self.readinto(address, buf)
        return buf

    def page_heads(
        self, address: int, count: int, stride: int, buf: memoryview
    ) -> "array.array[int]":
        """
        Return the first machine word (8 bytes, native order) at each of
        *count* addresses *stride* bytes apart from *address*: how a search
        for a page's first bytes reads memory. *buf* (at least ``count *
        stride`` bytes) may be used to read through; it is released after.

        :raises MemoryFault: if the memory cannot be read
        """
        size = count * stride
        data = self.read_view(address, buf[:size])
        try:
            return array.array("Q", data.cast("B").cast("Q")[:: stride // 8])
        finally:
            del data
            self.release(address, size)

    def release(self, address: int, size: int) -> None:
        """
        Say that memory returned by :meth:`read_view` is no longer needed, so
        that its pages leave this process (they stay in the page cache):
        memory use stays flat however large the guest.
        """

    def close(self) -> None:
        pass


class ProgramReader(MemoryReader):
    """
    Reads through ``drgn.Program.read``: works for any program drgn opens.
    One read at a time: a Program is not made to be shared between threads.
    """

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        self.source = "process" if prog.flags & drgn.ProgramFlags.IS_LIVE else "core"
        self._lock = threading.Lock()

    def readinto(self, address: int, buf: memoryview) -> None:
        try:
            with self._lock:
                buf[:] = self.prog.read(address, len(buf))
        except drgn.FaultError as e:
            raise MemoryFault(e.address) from None


class _FdReader(MemoryReader):
    fd: int

    def _pread(self, buf: memoryview, offset: int, address: int) -> None:
        done = 0
        while done < len(buf):
            try:
                n = os.preadv(self.fd, [buf[done:]], offset + done)
            except OSError as e:
                if e.errno in (errno.EIO, errno.EFAULT):
                    raise MemoryFault(address + done) from None
                raise
            if n <= 0:
                raise MemoryFault(address + done)
            done += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CoreFileReader(_FdReader):
    """
    Reads QEMU's memory straight from its ELF core file.

    :param path: the core file
    :param copy_file_range: when :meth:`copy` uses ``copy_file_range``:
        ``"never"``, ``"unseen"`` (for memory not just looked at through a
        mapping) or ``"always"``
    :param mmap: whether :meth:`read_view` may map the file
    :param segments: where memory is in the file, instead of the core's
        PT_LOADs (a vmcore read at its file offsets: one segment at 0)
    """

    source = "core"

    def __init__(
        self,
        path: str,
        copy_file_range: str = "unseen",
        mmap: bool = True,
        segments: Optional[List[CoreSegment]] = None,
    ) -> None:
        if segments is None:
            info = read_core_file_info(path)
            if info.needed_size > info.file_size:
                raise ValueError(f"core file {path} is truncated")
            segments = list(info.segments)
        self.path = path
        self.segments: List[CoreSegment] = sorted(segments, key=lambda s: s.vaddr)
        self._starts = [s.vaddr for s in self.segments]
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        if copy_file_range not in ("never", "unseen", "always"):
            raise ValueError(f"copy_file_range={copy_file_range!r}")
        self.copy_file_range = copy_file_range if hasattr(os, "copy_file_range") else "never"
        self._map: Optional[mmap_module.mmap] = None
        if mmap and os.fstat(self.fd).st_size:
            try:
                self._map = mmap_module.mmap(self.fd, 0, access=mmap_module.ACCESS_READ)
                self._map.madvise(mmap_module.MADV_SEQUENTIAL)
            except (OSError, ValueError, AttributeError):
                pass
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):
            pass

    def read_view(self, address: int, buf: memoryview) -> memoryview:
        if self._map is not None:
            pieces = list(self._pieces(address, len(buf)))
            if len(pieces) == 1 and pieces[0][2] is not None:
                offset = pieces[0][2]
                return memoryview(self._map)[offset : offset + len(buf)]
        return super().read_view(address, buf)

    def release(self, address: int, size: int) -> None:
        if self._map is None:
            return
        for _, n, offset in self._pieces(address, size):
            if offset is None:
                continue
            # Whole pages inside the range only.
            start = -(-offset // mmap_module.PAGESIZE) * mmap_module.PAGESIZE
            end = (offset + n) // mmap_module.PAGESIZE * mmap_module.PAGESIZE
            if end > start:
                self._map.madvise(mmap_module.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive; the GC will unmap it
                pass
            self._map = None
        super().close()

    def _pieces(self, address: int, size: int) -> Iterator[Tuple[int, int, Optional[int]]]:
        """(address, size, file offset or None for memory past p_filesz)."""
        end = address + size
        while address < end:
            i = bisect.bisect_right(self._starts, address) - 1
            if i < 0 or address >= self.segments[i].vaddr + self.segments[i].memsz:
                raise MemoryFault(address)
            seg = self.segments[i]
            n = min(end, seg.vaddr + seg.memsz) - address
            delta = address - seg.vaddr
            if delta < seg.filesz:
                n = min(n, seg.filesz - delta)
                yield address, n, seg.offset + delta
            else:
                yield address, n, None
            address += n

    def missing(self, address: int, size: int) -> List[Tuple[int, int]]:
        out: List[Tuple[int, int]] = []
        end = address + size
        while address < end:
            i = bisect.bisect_right(self._starts, address) - 1
            seg = self.segments[i] if i >= 0 else None
            if seg is None or address >= seg.vaddr + seg.memsz:
                # Not in a PT_LOAD (gdb's gcore leaves such mappings out).
                nxt = self._starts[i + 1] if i + 1 < len(self._starts) else end
                n = min(end, nxt) - address
                gap = True
            else:
                in_file = seg.vaddr + seg.filesz
                gap = address >= in_file  # past p_filesz (Linux writes the header only)
                n = min(end, seg.vaddr + seg.memsz if gap else in_file) - address
            if gap:
                if out and out[-1][0] + out[-1][1] == address:
                    out[-1] = (out[-1][0], out[-1][1] + n)
                else:
                    out.append((address, n))
            address += n
        return out

    def readinto(self, address: int, buf: memoryview) -> None:
        done = 0
        for piece, n, offset in self._pieces(address, len(buf)):
            if offset is None:
                # Left out of the core (MADV_DONTDUMP, coredump_filter).
                raise MemoryFault(piece)
            self._pread(buf[done : done + n], offset, piece)
            done += n

    def extents(self, address: int, size: int) -> Iterator[Tuple[int, int, bool]]:
        for piece, n, offset in self._pieces(address, size):
            if offset is None:
                raise MemoryFault(piece)
            end = offset + n
            pos = offset
            while pos < end:
                try:
                    data = os.lseek(self.fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # only a hole up to the end of the file
                        data = end
                    else:  # no SEEK_DATA here: all data
                        data = pos
                data = min(data, end)
                if data > pos:
                    yield piece + (pos - offset), data - pos, False
                    pos = data
                    continue
                try:
                    hole = min(os.lseek(self.fd, pos, os.SEEK_HOLE), end)
                except OSError:
                    hole = end
                yield piece + (pos - offset), hole - pos, True
                pos = hole

    def copy(self, address: int, size: int, fd: int, offset: int, seen: bool = False) -> bool:
        if self.copy_file_range == "never" or (seen and self.copy_file_range == "unseen"):
            return False
        pieces = list(self._pieces(address, size))
        if any(p[2] is None for p in pieces):
            return False
        for _, n, src in pieces:
            assert src is not None
            done = 0
            while done < n:
                try:
                    copied = os.copy_file_range(self.fd, fd, n - done, src + done, offset + done)
                except OSError as e:
                    if e.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        # Not between these files: the caller reads instead.
                        self.copy_file_range = "never"
                        return False
                    raise
                if copied <= 0:
                    raise MemoryFault(address)
                done += copied
            offset += n
        return True


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _libc_process_vm_readv() -> Optional[Callable[..., int]]:
    """libc's ``process_vm_readv()``, or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                   ctypes.c_ulong, ctypes.c_ulong]  # fmt: skip
    return cast(Callable[..., int], fn)


#: Most pieces one ``process_vm_readv()`` takes (``UIO_MAXIOV``).
IOV_MAX = 1024
#: Bits of a ``/proc/PID/pagemap`` entry: the page is present, or swapped.
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
#: Pagemap entries looked at at a time: 512 KiB of them, for 2 GiB of memory.
PAGEMAP_WINDOW = 1 << 16


def _anonymous_private_mappings(pid: int) -> List[Tuple[int, int]]:
    """
    ``(start, end)`` of the private anonymous mappings of a process (from
    ``/proc/PID/maps``: no file, private), the only ones whose pages that
    are neither present nor swapped are zero: a shared or file mapping's
    page may be in the page cache without being mapped here.
    """
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) < 5 or fields[1][3:4] != "p" or fields[4] != "0":
                continue
            path = fields[5].strip() if len(fields) > 5 else ""
            if path and not path.startswith("["):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end))
    return out


class ProcessReader(_FdReader):
    """
    Reads a live QEMU's memory through ``/proc/PID/mem``. Pages of its
    private anonymous memory (QEMU's guest RAM unless shared or file-backed)
    that ``/proc/PID/pagemap`` says were never touched (neither present nor
    swapped) are zero: they come back as holes, not read.
    """

    source = "process"

    def __init__(self, pid: int, pagemap: bool = True, vm_readv: bool = True) -> None:
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._vm_readv = _libc_process_vm_readv() if vm_readv else None
        self._pagemap = -1
        self._anon: List[Tuple[int, int]] = []
        if pagemap:
            try:
                self._anon = _anonymous_private_mappings(pid)
                self._pagemap = os.open(
                    f"/proc/{pid}/pagemap", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
                )
            except OSError:  # no pagemap here: every page is read
                self._anon = []
        self._anon_starts = [a for a, _ in self._anon]

    def readinto(self, address: int, buf: memoryview) -> None:
        if self._vm_readv is not None and not buf.readonly:
            try:
                self._process_vm_readv(address, buf)
                return
            except OSError:  # not allowed here (seccomp, old kernel): the file
                self._vm_readv = None
        self._pread(buf, address, address)

    def _process_vm_readv(self, address: int, buf: memoryview) -> None:
        """Read with ``process_vm_readv()``: measured a fifth faster than the file."""
        assert self._vm_readv is not None
        done = 0
        while done < len(buf):
            view = buf[done:]
            local = _IoVec(ctypes.addressof(ctypes.c_char.from_buffer(view)), len(view))
            remote = _IoVec(address + done, len(view))
            n = self._vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            del local
            if n < 0:
                err = ctypes.get_errno()
                if err in (errno.EFAULT, errno.EIO, errno.ENOMEM):
                    raise MemoryFault(address + done)
                raise OSError(err, os.strerror(err))
            if n == 0:
                raise MemoryFault(address + done)
            done += n

    def page_heads(
        self, address: int, count: int, stride: int, buf: memoryview
    ) -> "array.array[int]":
        """
        The words at the page starts, read with one ``process_vm_readv()`` of
        up to :data:`IOV_MAX` pieces at a time: 8 bytes of each page cross
        over instead of the whole page (1.2 s -> 0.35 s for 2 GiB here).
        """
        if self._vm_readv is None or count == 0 or stride < 8:
            return super().page_heads(address, count, stride, buf)
        heads = array.array("Q", bytes(8 * count))
        remote = array.array("Q", bytes(16 * min(count, IOV_MAX)))
        out, _ = heads.buffer_info()
        piece_of = remote.buffer_info()[0]
        for first in range(0, count, IOV_MAX):
            n = min(IOV_MAX, count - first)
            remote[0 : 2 * n : 2] = array.array(
                "Q", range(address + first * stride, address + (first + n) * stride, stride)
            )
            remote[1 : 2 * n : 2] = array.array("Q", [8]) * n
            local = _IoVec(out + 8 * first, 8 * n)
            got = self._vm_readv(self.pid, ctypes.byref(local), 1, piece_of, n, 0)
            if got != 8 * n:  # a page that cannot be read: say which, as a plain read does
                return super().page_heads(address, count, stride, buf)
        return heads

    def _anon_end(self, address: int) -> int:
        """The end of the private anonymous mapping at *address*, or 0."""
        i = bisect.bisect_right(self._anon_starts, address) - 1
        if i >= 0 and address < self._anon[i][1]:
            return self._anon[i][1]
        return 0

    def extents(self, address: int, size: int) -> Iterator[Tuple[int, int, bool]]:
        page = mmap_module.PAGESIZE
        end = address + size
        pos = address
        while pos < end:
            anon_end = self._anon_end(pos) if self._pagemap >= 0 else 0
            if anon_end > pos:
                stop = min(anon_end, end)
                whole = stop - stop % page
                if pos % page == 0 and whole > pos:
                    yield from self._pagemap_runs(pos, whole)
                    pos = whole
                    continue
                stop = min(stop, (pos // page + 1) * page)  # a partial page: read it
            else:  # not private anonymous memory: read up to the next that is
                i = bisect.bisect_right(self._anon_starts, pos)
                stop = min(end, self._anon_starts[i]) if i < len(self._anon_starts) else end
            yield pos, stop - pos, True
            pos = stop

    def _pagemap_runs(self, start: int, end: int) -> Iterator[Tuple[int, int, bool]]:
        import numpy as np

        page = mmap_module.PAGESIZE
        run_start, run_data = start, True
        for base in range(start, end, PAGEMAP_WINDOW * page):
            count = min(PAGEMAP_WINDOW, (end - base) // page)
            raw = os.pread(self._pagemap, count * 8, base // page * 8)
            if len(raw) < count * 8:  # the mapping went away: read as data
                flags = np.ones(count, dtype=bool)
            else:
                entries = np.frombuffer(raw, dtype=np.uint64)
                flags = (entries & np.uint64(PM_PRESENT | PM_SWAP)) != 0
            edges = np.flatnonzero(flags[1:] != flags[:-1]) + 1
            for i in [0, *edges.tolist()]:
                data = bool(flags[i])
                at = base + i * page
                if data != run_data and at > run_start:
                    yield run_start, at - run_start, run_data
                    run_start = at
                run_data = data
        yield run_start, end - run_start, run_data

    def close(self) -> None:
        if self._pagemap >= 0:
            os.close(self._pagemap)
            self._pagemap = -1
        super().close()


@dataclass(frozen=True)
class FileBacking:
    """Host range ``[start, start + size)`` is in the file *path* at *offset*."""

    start: int
    size: int
    path: str
    offset: int


class BackedReader(MemoryReader):
    """
    Reads QEMU's memory through *base*, but each range of *backings* from
    its file, opened read-only here (guest RAM mapped shared from a file,
    which a core leaves out by default).
    """

    def __init__(self, base: MemoryReader, backings: Iterable[FileBacking]) -> None:
        self.base = base
        self.source = base.source
        self.backings = sorted(backings, key=lambda b: b.start)
        self._starts = [b.start for b in self.backings]
        self._fds: List[int] = []
        try:
            for b in self.backings:
                self._fds.append(os.open(b.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
        except BaseException:
            self.close()
            raise

    def _pieces(self, address: int, size: int) -> Iterator[Tuple[int, int, Optional[int]]]:
        """(address, size, index of the backing or None for *base*)."""
        end = address + size
        while address < end:
            i = bisect.bisect_right(self._starts, address) - 1
            if i >= 0 and address < self.backings[i].start + self.backings[i].size:
                b = self.backings[i]
                n = min(end, b.start + b.size) - address
                yield address, n, i
            else:
                nxt = self._starts[i + 1] if i + 1 < len(self._starts) else end
                n = min(end, nxt) - address
                yield address, n, None
            address += n

    def _file(self, i: int, address: int) -> Tuple[int, int]:
        b = self.backings[i]
        return self._fds[i], b.offset + address - b.start

    def readinto(self, address: int, buf: memoryview) -> None:
        done = 0
        for piece, n, i in self._pieces(address, len(buf)):
            view = buf[done : done + n]
            if i is None:
                self.base.readinto(piece, view)
            else:
                fd, offset = self._file(i, piece)
                got = 0
                while got < n:
                    k = os.preadv(fd, [view[got:]], offset + got)
                    if k <= 0:  # the file is shorter than the mapping was
                        raise MemoryFault(piece + got)
                    got += k
            done += n

    def extents(self, address: int, size: int) -> Iterator[Tuple[int, int, bool]]:
        for piece, n, i in self._pieces(address, size):
            if i is None:
                yield from self.base.extents(piece, n)
            else:
                yield piece, n, True

    def missing(self, address: int, size: int) -> List[Tuple[int, int]]:
        out: List[Tuple[int, int]] = []
        for piece, n, i in self._pieces(address, size):
            if i is None:
                out += self.base.missing(piece, n)
        return out

    def copy(self, address: int, size: int, fd: int, offset: int, seen: bool = False) -> bool:
        pieces = list(self._pieces(address, size))
        if len(pieces) == 1 and pieces[0][2] is None:
            return self.base.copy(address, size, fd, offset, seen)
        return False

    def read_view(self, address: int, buf: memoryview) -> memoryview:
        pieces = list(self._pieces(address, len(buf)))
        if len(pieces) == 1 and pieces[0][2] is None:
            return self.base.read_view(address, buf)
        self.readinto(address, buf)
        return buf

    def release(self, address: int, size: int) -> None:
        for piece, n, i in self._pieces(address, size):
            if i is None:
                self.base.release(piece, n)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def open_reader(
    prog: Program, core: Optional[str] = None, pid: Optional[int] = None, io: str = "auto"
) -> MemoryReader:
    """
    Return a reader for a program opened from *core* or *pid*.

    ``io="auto"`` is the fastest measured here (``benchmarks/RESULTS.md``):
    a core file is mapped, its zero pages found in the mapping and the other
    pages written from it, as they are mapped already; memory copied without
    being looked at (``--no-sparse``) goes by ``copy_file_range``, which
    then beats faulting the pages in. ``"copy-file-range"`` uses
    ``copy_file_range`` for both (a filesystem with reflinks may share the
    blocks), ``"pread"`` reads the core or process file with ``preadv``
    only, ``"program"`` reads through drgn only. All give the same bytes.
    """
    if io not in IO_MODES:
        raise ValueError(f"io must be one of {IO_MODES}")
    if io != "program":
        if core is not None:
            modes = {"auto": "unseen", "copy-file-range": "always", "pread": "never"}
            return CoreFileReader(core, copy_file_range=modes[io], mmap=io != "pread")
        if pid is not None:
            return ProcessReader(pid)
    return ProgramReader(prog)
