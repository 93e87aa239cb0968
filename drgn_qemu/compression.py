# SPDX-License-Identifier: GPL-2.0-or-later
"""
Page compression
----------------

A kdump-compressed file compresses each page on its own. The
``drgn_qemu.compression`` module compresses a chunk's pages as each kdump
format does (zlib at ``Z_BEST_SPEED`` as QEMU, zstd at level 1 as
makedumpfile, raw snappy, LZO1X-1 with QEMU's own liblzo2), into one
buffer the caller owns: no object per page is kept, so a chunk costs its
compressor calls and little else. A page that does not get smaller is
stored as it is (QEMU's ``write_dump_pages()``); an all-zero page is not
compressed at all.
"""

import threading
import zlib
from typing import Callable, List, NamedTuple

from drgn_qemu.options import KDUMP_FORMATS

__all__ = ("CompressedPages", "PageCompressor", "get_page_compressor")


class CompressedPages(NamedTuple):
    """One chunk's pages, compressed."""

    #: Per page, its bytes in :attr:`data`; 0 for an all-zero page.
    sizes: List[int]
    #: Per page, whether its bytes are compressed (else stored as they are).
    compressed: List[bool]
    #: The pages' bytes, one after the other.
    data: memoryview


class PageCompressor:
    """
    Compresses pages of *page_size* bytes as the kdump format *compression*
    does. One instance may be used from several threads at once.
    """

    def __init__(self, compression: str, page_size: int) -> None:
        self.compression = compression
        self.page_size = page_size
        #: The most bytes one page may take in :meth:`compress_pages`'s output:
        #: more than snappy's worst case (32 + n + n/6) and LZO's (n + n/16 + 67).
        self.bound = page_size + page_size // 4 + 128

    def out_size(self, pages: int) -> int:
        """The output buffer :meth:`compress_pages` needs for *pages* pages."""
        return pages * self.bound

    def compress_pages(self, data: memoryview, out: memoryview) -> CompressedPages:
        """
        Compress the pages of *data* into *out* (at least
        :meth:`out_size` bytes), zero pages skipped.
        """
        import numpy as np

        page_size = self.page_size
        pages = len(data) // page_size
        words = np.frombuffer(data, dtype=np.uint64).reshape(pages, page_size // 8)
        nonzero: List[int] = np.flatnonzero(np.any(words, axis=1)).tolist()
        sizes = [0] * pages
        compressed = [False] * pages
        used = self._compress(data, nonzero, out, sizes, compressed)
        return CompressedPages(sizes, compressed, out[:used])

    def _compress(
        self,
        data: memoryview,
        pages: List[int],
        out: memoryview,
        sizes: List[int],
        compressed: List[bool],
    ) -> int:
        """
        Compress *pages* (indices) of *data* into *out*; return the bytes
        used. Each library has its own copy of this loop, its call written
        in: a function call per page for the shared parts measured 12-15%
        slower (lzo 6.7 -> 7.8 us a page, snappy 5.7 -> 6.4).
        """
        raise NotImplementedError


class _BytesCompressor(PageCompressor):
    """A compressor that returns each page's compressed bytes (zlib, zstd)."""

    def __init__(
        self, compression: str, page_size: int, compress: Callable[[memoryview], bytes]
    ) -> None:
        super().__init__(compression, page_size)
        self._compress_page = compress

    def _compress(
        self,
        data: memoryview,
        pages: List[int],
        out: memoryview,
        sizes: List[int],
        compressed: List[bool],
    ) -> int:
        page_size, compress, pos = self.page_size, self._compress_page, 0
        for i in pages:
            page = data[i * page_size : (i + 1) * page_size]
            c = compress(page)
            n = len(c)
            if n < page_size:
                out[pos : pos + n] = c
                compressed[i] = True
            else:
                out[pos : pos + page_size] = page
                n = page_size
            sizes[i] = n
            pos += n
        return pos


class _SnappyCompressor(PageCompressor):
    """Raw snappy, written in place by cramjam."""

    def _compress(
        self,
        data: memoryview,
        pages: List[int],
        out: memoryview,
        sizes: List[int],
        compressed: List[bool],
    ) -> int:
        import cramjam

        into = cramjam.snappy.compress_raw_into
        page_size, bound, pos = self.page_size, self.bound, 0
        for i in pages:
            page = data[i * page_size : (i + 1) * page_size]
            n = into(page, out[pos : pos + bound])
            if n < page_size:
                compressed[i] = True
            else:
                out[pos : pos + page_size] = page
                n = page_size
            sizes[i] = n
            pos += n
        return pos


class _LzoCompressor(PageCompressor):
    """LZO1X-1 with liblzo2, called on addresses: no copy in or out."""

    def __init__(self, compression: str, page_size: int) -> None:
        super().__init__(compression, page_size)
        from drgn_qemu.lzo import Lzo1x1, worst_case

        assert self.bound >= worst_case(page_size)
        self._local = threading.local()
        self._new = Lzo1x1

    def _compress(
        self,
        data: memoryview,
        pages: List[int],
        out: memoryview,
        sizes: List[int],
        compressed: List[bool],
    ) -> int:
        import numpy as np

        try:
            lzo = self._local.lzo
        except AttributeError:
            lzo = self._local.lzo = self._new()
        compress_at = lzo.compress_at
        page_size, pos = self.page_size, 0
        if not pages:
            return 0
        # numpy hands out the address of a read-only buffer (a mapped core)
        # as of a writable one; both stay alive for the loop.
        src = np.frombuffer(data, dtype=np.uint8).ctypes.data
        dst = np.frombuffer(out, dtype=np.uint8).ctypes.data
        for i in pages:
            n = compress_at(src + i * page_size, page_size, dst + pos)
            if n < page_size:
                compressed[i] = True
            else:
                out[pos : pos + page_size] = data[i * page_size : (i + 1) * page_size]
                n = page_size
            sizes[i] = n
            pos += n
        return pos


def _zstd() -> Callable[[memoryview], bytes]:
    import zstandard

    local = threading.local()

    def compress(page: memoryview) -> bytes:
        try:
            cctx = local.cctx
        except AttributeError:
            cctx = local.cctx = zstandard.ZstdCompressor(level=1)
        return cctx.compress(page)

    return compress


def get_page_compressor(compression: str, page_size: int) -> PageCompressor:
    """
    Return the :class:`PageCompressor` of the kdump format *compression*
    (one of :data:`~drgn_qemu.options.KDUMP_FORMATS`).

    :raises ValueError: if *compression* is unknown
    """
    if compression == "kdump-zlib":
        return _BytesCompressor(compression, page_size, lambda page: zlib.compress(page, 1))
    if compression == "kdump-zstd":
        return _BytesCompressor(compression, page_size, _zstd())
    if compression == "kdump-snappy":
        return _SnappyCompressor(compression, page_size)
    if compression == "kdump-lzo":
        return _LzoCompressor(compression, page_size)
    assert compression not in KDUMP_FORMATS
    raise ValueError(f"unknown kdump compression {compression!r}")
