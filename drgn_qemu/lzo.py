# SPDX-License-Identifier: GPL-2.0-or-later
"""
LZO pages
---------

QEMU's ``kdump-lzo`` and ``kdump-raw-lzo`` compress each page with
liblzo2's ``lzo1x_1_compress()``. The ``drgn_qemu.lzo`` module calls the
same library (``liblzo2.so.2``, which every QEMU built with lzo links, so it
is there wherever such a QEMU runs), so that a page compresses to exactly
QEMU's bytes; another LZO1X implementation would write valid but different
bytes. Loaded on first use only.
"""

import ctypes
import ctypes.util
import threading
from typing import Optional

from drgn_qemu.errors import UnsupportedError

__all__ = ("Lzo1x1", "lzo1x_decompress_safe", "worst_case")

LZO_E_OK = 0
#: ``LZO1X_1_MEM_COMPRESS``: 16384 dictionary entries of a pointer each.
LZO1X_1_MEM_COMPRESS = 16384 * ctypes.sizeof(ctypes.c_void_p)

_lib: Optional[ctypes.CDLL] = None
_lock = threading.Lock()


def _liblzo2() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            name = ctypes.util.find_library("lzo2") or "liblzo2.so.2"
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                raise UnsupportedError(
                    "kdump-lzo needs liblzo2, the LZO library QEMU uses (Debian and Ubuntu: "
                    "liblzo2-2; Fedora: lzo)"
                ) from None
            size_t, void_p = ctypes.c_size_t, ctypes.c_void_p
            # Addresses as plain integers: the cheapest conversion per call.
            lib.lzo1x_1_compress.restype = ctypes.c_int
            lib.lzo1x_1_compress.argtypes = [void_p, size_t, void_p, void_p, void_p]
            lib.lzo1x_decompress_safe.restype = ctypes.c_int
            lib.lzo1x_decompress_safe.argtypes = [ctypes.c_char_p, size_t, void_p,
                                                  ctypes.POINTER(size_t), void_p]  # fmt: skip
            _lib = lib
        return _lib


class Lzo1x1:
    """
    ``lzo1x_1_compress()`` with work memory of its own (one per thread):
    :meth:`compress_at` compresses between addresses, so a chunk's pages
    are compressed where they lie, into where they are written from.
    """

    def __init__(self) -> None:
        self._fn = _liblzo2().lzo1x_1_compress
        self._wrkmem = ctypes.create_string_buffer(LZO1X_1_MEM_COMPRESS)
        self._wrkmem_addr = ctypes.addressof(self._wrkmem)
        self._out_len = ctypes.c_size_t(0)
        self._out_len_ptr = ctypes.addressof(self._out_len)

    def compress_at(self, src: int, size: int, dst: int) -> int:
        """
        Compress the *size* bytes at address *src* to address *dst* (room
        for LZO's worst case: :func:`worst_case`); return the compressed size.
        """
        ret = self._fn(src, size, dst, self._out_len_ptr, self._wrkmem_addr)
        if ret != LZO_E_OK:
            raise ValueError(f"lzo1x_1_compress failed ({ret})")
        return self._out_len.value


def worst_case(size: int) -> int:
    """LZO1X's largest output for *size* bytes: a sixteenth more, and 67 bytes."""
    return size + size // 16 + 67


def lzo1x_decompress_safe(data: bytes, size: int) -> bytes:
    """Decompress LZO1X *data* into at most *size* bytes."""
    lib = _liblzo2()
    out = ctypes.create_string_buffer(size)
    out_len = ctypes.c_size_t(size)
    ret = lib.lzo1x_decompress_safe(data, len(data), out, ctypes.byref(out_len), None)
    if ret != LZO_E_OK:
        raise ValueError(f"damaged LZO data ({ret})")
    return out.raw[: out_len.value]
