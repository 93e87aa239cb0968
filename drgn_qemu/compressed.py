# SPDX-License-Identifier: GPL-2.0-or-later
"""
Compressed cores
----------------

systemd-coredump stores cores compressed (``core.qemu-system-x86.*.zst``),
and cores are often moved around as ``.xz`` or ``.lz4``. The
``drgn_qemu.compressed`` module recognises a compressed core by its magic
number (not its name) and unpacks it once, streaming, into a sparse
temporary file (all-zero blocks become holes), which is removed afterwards,
also on error and Ctrl-C.
"""

import io
import lzma
import os
import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Iterator, Optional, cast

from drgn_qemu.errors import ProgramError
from drgn_qemu.program import core_file_error

__all__ = ("compression_of", "uncompressed_core")

_MAGICS = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"\x04\x22\x4d\x18": "lz4",
}
_BLOCK = 64 << 10
_ZERO_BLOCK = bytes(_BLOCK)


def compression_of(path: str) -> Optional[str]:
    """Return ``"zstd"``, ``"xz"`` or ``"lz4"`` if the file is compressed so, else None."""
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, name in _MAGICS.items():
        if head.startswith(magic):
            return name
    return None


class _ZstdReader(io.RawIOBase):
    """
    A zstd stream of one or more frames that, unlike zstandard's
    stream_reader, fails when the last frame is cut short.
    """

    def __init__(self, f: BinaryIO, decompressor: Any) -> None:
        self.f = f
        self.decompressor = decompressor
        self.dobj = decompressor.decompressobj()
        # Decompressed bytes not yet returned: pending[pos:]. A little input
        # can inflate to a lot (zeros), so it is handed out without copying
        # the rest each time.
        self.pending = b""
        self.pos = 0

    def _more(self) -> bool:
        if self.dobj.eof:
            rest = self.dobj.unused_data or self.f.read(_BLOCK)
            if not rest:
                return False  # the end, after a complete frame
            self.dobj = self.decompressor.decompressobj()
        else:
            rest = self.f.read(_BLOCK)
            if not rest:
                raise EOFError("the zstd stream ends in the middle of a frame")
        self.pending = self.pending[self.pos :] + self.dobj.decompress(rest)
        self.pos = 0
        return True

    def read(self, size: int = -1) -> bytes:
        while len(self.pending) - self.pos < size:
            if not self._more():
                break
        out = self.pending[self.pos : self.pos + size]
        self.pos += len(out)
        return out


def _decompressor(kind: str, f: BinaryIO) -> BinaryIO:
    if kind == "xz":
        return cast(BinaryIO, lzma.open(f))
    try:
        if kind == "zstd":
            import zstandard

            return cast(BinaryIO, _ZstdReader(f, zstandard.ZstdDecompressor()))
        import lz4.frame

        return cast(BinaryIO, lz4.frame.open(f))
    except ImportError:
        package = "zstandard" if kind == "zstd" else "lz4"
        raise ProgramError(
            f"the core is {kind}-compressed and Python package {package} is not installed "
            f"(pip install {package}), or unpack it first"
        ) from None


def _unpack(src: BinaryIO, dst: int, progress: Optional[Callable[[int], None]]) -> None:
    size = 0
    while True:
        block = src.read(_BLOCK)
        if not block:
            break
        if block != _ZERO_BLOCK[: len(block)]:
            done = 0
            while done < len(block):
                done += os.pwrite(dst, block[done:], size + done)
        size += len(block)
        if progress is not None:
            progress(len(block))
    os.ftruncate(dst, size)


@contextmanager
def uncompressed_core(
    path: str,
    directory: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Iterator[str]:
    """
    Yield the path of an uncompressed core: *path* itself if it is not
    compressed, else a sparse temporary file in *directory* (default
    ``$TMPDIR``), removed when the block ends, whatever happens.

    :raises ProgramError: if the file cannot be read or unpacked, or the
        temporary file cannot be written
    """
    try:
        kind = compression_of(path)
    except OSError as e:
        raise core_file_error(path, e) from None
    if kind is None:
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix=".drgn-qemu-core.", suffix=".tmp", dir=directory)
    try:
        try:
            with open(path, "rb") as f, _decompressor(kind, f) as src:
                _unpack(src, fd, progress)
        except ProgramError:
            raise
        except OSError as e:
            raise ProgramError(
                f"cannot unpack {kind}-compressed core {path} into {tmp}: {e.strerror or e}"
            ) from None
        except Exception as e:  # each library has its own error types
            raise ProgramError(
                f"{kind}-compressed core {path} is damaged or truncated: {e}"
            ) from None
        finally:
            os.close(fd)
        yield tmp
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
