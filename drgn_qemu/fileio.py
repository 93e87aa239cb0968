# SPDX-License-Identifier: GPL-2.0-or-later
"""
File output
-----------

The ``drgn_qemu.fileio`` module holds the writes that every output format
makes: all of a buffer at an offset, and runs of zeros.
"""

import os

__all__ = ("pwrite_all", "pwrite_zeros")


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of *data* at *offset* (``pwrite`` until done)."""
    done = 0
    while done < len(data):
        n = os.pwrite(fd, data[done:], offset + done)
        if n <= 0:
            raise OSError("short write")
        done += n


def pwrite_zeros(fd: int, size: int, offset: int, zeros: memoryview) -> None:
    """Write *size* zero bytes at *offset*, from a buffer of zeros."""
    done = 0
    while done < size:
        n = min(size - done, len(zeros))
        pwrite_all(fd, zeros[:n], offset + done)
        done += n
