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

import errno
import lzma
import os
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Callable, Iterator, Optional, cast

from drgn_qemu.errors import ProgramError
from drgn_qemu.program import core_file_error

__all__ = ("check_zstd_frames", "compression_of", "uncompressed_core")

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


_ZSTD_MAGIC = 0xFD2FB528


def check_zstd_frames(f: BinaryIO) -> None:
    """
    Walk the frames of a zstd stream by their headers (RFC 8878: frame
    header, blocks up to the last, checksum), without decompressing, and
    raise :class:`EOFError` if the last one is cut short: zstandard's
    stream reader, which keeps memory bounded, takes a truncated stream for
    a complete one.
    """
    f.seek(0, os.SEEK_END)
    size = f.tell()
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        f.seek(pos)
        data = f.read(n)
        if len(data) < n:
            raise EOFError("the zstd stream ends in the middle of a frame")
        pos += n
        return data

    while pos < size:
        magic = int.from_bytes(read(4), "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
            pos += int.from_bytes(read(4), "little")
            if pos > size:
                raise EOFError("the zstd stream ends in the middle of a frame")
            continue
        if magic != _ZSTD_MAGIC:
            raise ValueError(f"not a zstd frame at offset {pos - 4}")
        descriptor = read(1)[0]
        fcs_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
        checksum, dict_id_flag = (descriptor >> 2) & 1, descriptor & 3
        fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
        pos += (0 if single_segment else 1) + (0, 1, 2, 4)[dict_id_flag] + fcs_size
        while True:
            header = int.from_bytes(read(3), "little")
            last, block_type, block_size = header & 1, (header >> 1) & 3, header >> 3
            pos += 1 if block_type == 1 else block_size  # RLE blocks hold one byte
            if pos > size:
                raise EOFError("the zstd stream ends in the middle of a frame")
            if last:
                break
        pos += 4 * checksum
        if pos > size:
            raise EOFError("the zstd stream ends in the middle of a frame")


def _decompressor(kind: str, f: BinaryIO) -> BinaryIO:
    if kind == "xz":
        return cast(BinaryIO, lzma.open(f))
    try:
        if kind == "zstd":
            import zstandard

            check_zstd_frames(f)
            f.seek(0)
            # Bounded memory: a few KiB of zeros may stand for gigabytes.
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            return cast(BinaryIO, reader)
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
            if e.errno == errno.ENOSPC:
                raise ProgramError(
                    f"the unpacked {kind}-compressed core {path} does not fit in "
                    f"{os.path.dirname(tmp)} (no space left on device); give a directory "
                    "with room for it with --tmpdir DIR"
                ) from None
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
