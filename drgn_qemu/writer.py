# SPDX-License-Identifier: GPL-2.0-or-later
"""
Writing dumps
-------------

The ``drgn_qemu.writer`` module writes the files that :mod:`drgn_qemu.elf`
and :mod:`drgn_qemu.kdump` lay out, with guest memory read by a
:class:`~drgn_qemu.reader.MemoryReader` a chunk at a time, through buffers
that are reused, so memory use does not grow with the guest:

* an ELF core: chunks copied as they are (``--no-sparse``), or scanned for
  zero pages by threads while earlier chunks are written, zero pages left as
  holes;
* a kdump-compressed file: chunks compressed a page at a time by threads
  while the next chunk is read, descriptors and data written in page order.
"""

import os
import struct
from typing import BinaryIO, Callable, Iterator, List, Optional, Tuple, Union

from drgn_qemu import kdump
from drgn_qemu.compression import CompressedPages, get_page_compressor
from drgn_qemu.elf import ElfCoreLayout
from drgn_qemu.fileio import pwrite_all, pwrite_zeros
from drgn_qemu.kdump import COMPRESSION_FLAGS, KdumpLayout, PageRun, pages_of_segments
from drgn_qemu.options import KDUMP_FORMATS, DumpOptions
from drgn_qemu.pipeline import ChunkPipeline, default_threads
from drgn_qemu.ranges import GuestRange
from drgn_qemu.reader import Chunk, MemoryReader
from drgn_qemu.sparse import nonzero_runs

__all__ = (
    "PARALLEL_COMPRESSIONS",
    "SCAN_THREADS",
    "unflatten",
    "write_elf",
    "write_kdump",
    "write_layout",
)

assert KDUMP_FORMATS == tuple(COMPRESSION_FLAGS)

#: Most threads finding the zero pages of an ELF dump by default. Measured
#: on a mapped 8 GiB core of zeros: one thread 1.5 s, two 1.05 s; the scan is
#: bound by memory bandwidth, and each thread holds one more chunk mapped,
#: so no more than two.
SCAN_THREADS = 2


def write_layout(
    layout: Union[ElfCoreLayout, KdumpLayout],
    fd: int,
    reader: MemoryReader,
    options: DumpOptions,
    progress: Optional[Callable[[int], None]] = None,
) -> int:
    """
    Write the file *layout* lays out (:func:`write_elf` or
    :func:`write_kdump`) to *fd*. Returns the file's size.
    """
    if isinstance(layout, KdumpLayout):
        return write_kdump(layout, fd, reader, options, progress)
    return write_elf(layout, fd, reader, options, progress)


def write_elf(
    layout: ElfCoreLayout,
    fd: int,
    reader: MemoryReader,
    options: DumpOptions,
    progress: Optional[Callable[[int], None]] = None,
) -> int:
    """
    Write the ELF core file *layout* lays out to *fd*: the header, every
    segment's memory read by *reader* (with ``options.sparse``, zero pages
    become holes), the trailer. *progress* is called with the bytes of each chunk done.
    Returns the file's size.

    :raises MemoryFault: if *reader* cannot read the memory
    :raises OSError: if writing fails
    """
    pwrite_all(fd, memoryview(layout.header()), 0)
    chunks = reader.chunks(layout.segments, options.chunk_size)
    if options.sparse:
        threads = options.threads or min(default_threads(), SCAN_THREADS)
        _copy_sparse(
            layout.segment_offsets, chunks, fd, reader, options.chunk_size, threads, progress
        )
    else:
        _copy_all(layout.segment_offsets, chunks, fd, reader, options.chunk_size, progress)
    pwrite_all(fd, memoryview(layout.trailer()), layout.shstrtab_offset)
    os.ftruncate(fd, layout.file_size)
    return layout.file_size


def _copy_all(
    offsets: List[int],
    chunks: Iterator[Chunk],
    fd: int,
    reader: MemoryReader,
    chunk_size: int,
    progress: Optional[Callable[[int], None]],
) -> None:
    """Copy every byte, zeros included (``--no-sparse``)."""
    buf = memoryview(bytearray(chunk_size))
    zeros = memoryview(bytes(chunk_size))
    for chunk in chunks:
        out = offsets[chunk.index] + chunk.offset
        if not chunk.has_data:
            pwrite_zeros(fd, chunk.size, out, zeros)
        elif not reader.copy(chunk.address, chunk.size, fd, out):
            view = reader.read_view(chunk.address, buf[: chunk.size])
            pwrite_all(fd, view, out)
            del view
            reader.release(chunk.address, chunk.size)
        if progress is not None:
            progress(chunk.size)


def _copy_sparse(
    offsets: List[int],
    chunks: Iterator[Chunk],
    fd: int,
    reader: MemoryReader,
    chunk_size: int,
    threads: int,
    progress: Optional[Callable[[int], None]],
) -> None:
    """
    Copy the pages that are not all zero: chunks are read and scanned for
    zero pages by *threads* threads while earlier chunks' non-zero runs are
    written here, in order (``process_vm_readv()``, ``preadv()`` and numpy
    let go of the GIL). A chunk's buffer is reused only once the chunk is
    written.
    """

    def finish(done: Tuple[memoryview, List[Tuple[int, int]]], chunk: Chunk) -> None:
        view, runs = done
        address, out = chunk.address, offsets[chunk.index] + chunk.offset
        for a, b in runs:
            if not reader.copy(address + a, b - a, fd, out + a, seen=True):
                pwrite_all(fd, view[a:b], out + a)
        reader.release(address, chunk.size)
        if progress is not None:
            progress(chunk.size)

    with ChunkPipeline(threads, chunk_size, finish, "drgn-qemu-scan") as pipeline:
        for chunk in chunks:
            if not chunk.has_data:
                if progress is not None:
                    progress(chunk.size)
                continue
            buf = pipeline.buffer()
            pipeline.submit(chunk, buf, _read_scanned, reader, chunk.address, buf[: chunk.size])
        pipeline.finish_all()


def _read_scanned(
    reader: MemoryReader, address: int, buf: memoryview
) -> Tuple[memoryview, List[Tuple[int, int]]]:
    """Read *buf*'s worth at *address* (a view of it), and its non-zero runs."""
    view = reader.read_view(address, buf)
    return view, nonzero_runs(view)


def write_kdump(
    layout: KdumpLayout,
    fd: int,
    reader: MemoryReader,
    options: DumpOptions,
    progress: Optional[Callable[[int], None]] = None,
) -> int:
    """
    Write the kdump-compressed file *layout* lays out to *fd*: headers,
    bitmaps, then the pages, read from *reader* a chunk at a time and compressed by ``options.threads``
    threads (default: one per CPU for the compressions where that is
    faster, :data:`PARALLEL_COMPRESSIONS`) while the next chunk is read;
    descriptors and data are written in page order, so the file does not
    depend on the number of threads. With ``options.sparse``, the shared
    zero page is a hole. *progress* is called with the bytes of each
    chunk done. Returns the file's size.

    :raises MemoryFault: if *reader* cannot read the memory
    :raises OSError: if writing fails
    """
    threads = options.threads or (
        default_threads() if layout.compression in PARALLEL_COMPRESSIONS else 1
    )
    page_size = layout.page_size
    _write_kdump_headers(layout, fd, options.sparse)
    compressor = get_page_compressor(layout.compression, page_size)
    pages_per_chunk = max(1, options.chunk_size // page_size)
    chunk_bytes = pages_per_chunk * page_size
    out = _KdumpPageWriter(layout, fd, reader, progress)
    # Each buffer holds a chunk as read, then its pages as compressed.
    with ChunkPipeline(
        threads, chunk_bytes + compressor.out_size(pages_per_chunk), out.finish,
        "drgn-qemu-compress",
    ) as pipeline:  # fmt: skip
        for item in pages_of_segments(layout.segments, page_size):
            if isinstance(item, PageRun):
                run = GuestRange(item.pfn * page_size, item.count * page_size, item.host_addr)
                # Every page gets a descriptor; pages wholly in a hole of a
                # sparse core, or never touched by a live QEMU, are zero
                # pages without being read or compressed.
                for offset, size, has_data in _whole_page_extents(reader, run, page_size):
                    for at in range(offset, offset + size, chunk_bytes):
                        n = min(chunk_bytes, offset + size - at)
                        if not has_data:
                            pipeline.submit((0, 0), None, _zero_pages, n // page_size)
                            continue
                        buf = pipeline.buffer()
                        view = reader.read_view(run.host_addr + at, buf[:n])
                        pipeline.submit((run.host_addr + at, n), buf, compressor.compress_pages,
                                        view, buf[chunk_bytes:])  # fmt: skip
            else:
                page = memoryview(bytearray(page_size + compressor.out_size(1)))
                for offset, address, n in item.pieces:
                    reader.readinto(address, page[offset : offset + n])
                # Read into a page of its own: nothing to release.
                pipeline.submit((0, 0), None, compressor.compress_pages, page[:page_size],
                                page[page_size:])  # fmt: skip
        pipeline.finish_all()
    os.ftruncate(fd, out.data_pos)
    return out.data_pos


def _zero_pages(count: int) -> CompressedPages:
    """``compress_pages()`` of *count* pages known to be zeros."""
    return CompressedPages([0] * count, [False] * count, memoryview(b""))


def _whole_page_extents(
    reader: MemoryReader, run: GuestRange, page_size: int
) -> Iterator[Tuple[int, int, bool]]:
    """
    ``(offset, size, has_data)`` of *run* (whole pages) in whole pages: a
    page is without data only if it lies wholly in one of the reader's
    holes (a hole's ragged ends, where pages are larger than the file
    system's blocks, are read).
    """
    done = 0
    for address, size, has_data in reader.extents(run.host_addr, run.size):
        if has_data:
            continue
        offset = address - run.host_addr
        lo = -(-offset // page_size) * page_size
        hi = (offset + size) // page_size * page_size
        if hi <= lo:
            continue
        if lo > done:
            yield done, lo - done, True
        yield lo, hi - lo, False
        done = hi
    if done < run.size:
        yield done, run.size - done, True


def _write_kdump_headers(layout: KdumpLayout, fd: int, sparse: bool) -> None:
    """The headers, both bitmaps, and (unless *sparse*) the shared zero page."""
    pwrite_all(fd, memoryview(layout.header()), 0)
    bitmap = memoryview(layout.bitmap())
    pwrite_all(fd, bitmap, layout.bitmap_offset)
    pwrite_all(fd, bitmap, layout.bitmap_offset + layout.len_bitmap)
    del bitmap
    if not sparse:
        pwrite_all(fd, memoryview(bytes(layout.page_size)), layout.data_offset)


class _KdumpPageWriter:
    """
    Writes compressed chunks of pages in page order: their descriptors at
    the next descriptors, their data after the data so far (an all-zero page
    pointing to the shared zero page).
    """

    def __init__(
        self,
        layout: KdumpLayout,
        fd: int,
        reader: MemoryReader,
        progress: Optional[Callable[[int], None]],
    ) -> None:
        self.layout = layout
        self.fd = fd
        self.reader = reader
        self.progress = progress
        self.flag = COMPRESSION_FLAGS[layout.compression]
        self.desc_pos = layout.desc_offset
        self.data_pos = layout.data_offset + layout.page_size

    def finish(self, pages: CompressedPages, chunk: Tuple[int, int]) -> None:
        """Write one chunk's compressed *pages*, read at *chunk*."""
        import numpy as np

        layout, page_size = self.layout, self.layout.page_size
        sizes = np.array(pages.sizes, dtype=np.int64)
        zero = sizes == 0
        starts = self.data_pos + np.cumsum(sizes) - sizes
        descs = kdump.page_descriptors(
            layout.order,
            np.where(zero, layout.data_offset, starts),
            np.where(zero, page_size, sizes),
            np.where(np.array(pages.compressed, dtype=bool), self.flag, 0),
        )
        pwrite_all(self.fd, memoryview(descs), self.desc_pos)
        self.desc_pos += len(descs)
        if pages.data:
            pwrite_all(self.fd, pages.data, self.data_pos)
            self.data_pos += len(pages.data)
        address, size = chunk
        if size:
            self.reader.release(address, size)
        if self.progress is not None:
            self.progress(len(sizes) * page_size)


#: Compressions for which more threads make the dump faster. Measured
#: (benchmarks/bench_dump.py, 2 CPUs, the 2 GiB random guest, 1/2/4 threads,
#: pages compressed into the chunk's buffer): zlib at Z_BEST_SPEED
#: 50.8/27.8/29.7 s, so one thread per CPU; zstd 5.7/7.1/8.9 s, snappy
#: 3.7/4.1/5.4 s and lzo 4.1/5.2/6.4 s, so one: a page takes them a few
#: microseconds, and each call lets go of the GIL and takes it back, which
#: with two threads asking costs more than the second CPU gives. Forked
#: worker processes, each chunk read into shared memory and its data written
#: by the worker, were slower still (2026-12-07, snappy: one thread
#: 3.1-3.8 s; one worker 5.4-5.9 s, two 3.9-4.3 s): two compressing
#: processes got 1.4x of one from this machine's two CPUs, less than the
#: copy into shared memory and the handoffs cost. The code is on the branch
#: experiment-process-compression.
PARALLEL_COMPRESSIONS = frozenset({"kdump-zlib"})


def unflatten(src: BinaryIO, dst: int) -> None:
    """
    Turn makedumpfile's flattened stream *src* into the plain kdump file
    *dst* (``makedumpfile -R``): records of (offset, size, data), big-endian.

    :raises ValueError: if *src* is not a complete flattened stream
    """
    if (
        src.read(kdump.FLAT_HEADER_SIZE)[: len(kdump.FLATTENED_SIGNATURE)]
        != kdump.FLATTENED_SIGNATURE
    ):
        raise ValueError("not a flattened kdump file")
    record = struct.Struct(">qq")
    while True:
        raw = src.read(record.size)
        if len(raw) < record.size:
            raise ValueError("the flattened kdump file ends before its end marker")
        offset, size = record.unpack(raw)
        if offset == -1 and size == -1:
            return
        if offset < 0 or size < 0:
            raise ValueError("a record of the flattened kdump file is damaged")
        while size:
            data = src.read(min(size, 1 << 20))
            if not data:
                raise ValueError("the flattened kdump file ends inside a record")
            pwrite_all(dst, memoryview(data), offset)
            offset += len(data)
            size -= len(data)
