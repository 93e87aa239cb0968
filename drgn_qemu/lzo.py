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
from typing import Optional, Union

from drgn_qemu.errors import UnsupportedError

__all__ = ("lzo1x_1_compress", "lzo1x_decompress_safe")

LZO_E_OK = 0
#: ``LZO1X_1_MEM_COMPRESS``: 16384 dictionary entries of a pointer each.
LZO1X_1_MEM_COMPRESS = 16384 * ctypes.sizeof(ctypes.c_void_p)

_lib: Optional[ctypes.CDLL] = None
_lock = threading.Lock()
_local = threading.local()


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
            size_t = ctypes.c_size_t
            for fn in (lib.lzo1x_1_compress, lib.lzo1x_decompress_safe):
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_char_p, size_t, ctypes.c_void_p,
                               ctypes.POINTER(size_t), ctypes.c_void_p]  # fmt: skip
            _lib = lib
        return _lib


def lzo1x_1_compress(page: Union[bytes, memoryview]) -> bytes:
    """Compress *page* as QEMU does (``lzo1x_1_compress()``)."""
    lib = _liblzo2()
    try:
        wrkmem, out = _local.buffers
    except AttributeError:
        wrkmem = ctypes.create_string_buffer(LZO1X_1_MEM_COMPRESS)
        out = None
    size = len(page)
    # LZO's worst case: the input, a sixteenth more, and 67 bytes.
    if out is None or len(out) < size + size // 16 + 67:
        out = ctypes.create_string_buffer(size + size // 16 + 67)
    _local.buffers = (wrkmem, out)
    out_len = ctypes.c_size_t(0)
    ret = lib.lzo1x_1_compress(bytes(page), size, out, ctypes.byref(out_len), wrkmem)
    if ret != LZO_E_OK:
        raise ValueError(f"lzo1x_1_compress failed ({ret})")
    return out.raw[: out_len.value]


def lzo1x_decompress_safe(data: bytes, size: int) -> bytes:
    """Decompress LZO1X *data* into at most *size* bytes."""
    lib = _liblzo2()
    out = ctypes.create_string_buffer(size)
    out_len = ctypes.c_size_t(size)
    ret = lib.lzo1x_decompress_safe(data, len(data), out, ctypes.byref(out_len), None)
    if ret != LZO_E_OK:
        raise ValueError(f"damaged LZO data ({ret})")
    return out.raw[: out_len.value]
