# SPDX-License-Identifier: GPL-2.0-or-later
"""
Writing memory sparsely
-----------------------

Most of a guest's RAM is usually zero. The ``drgn_qemu.sparse`` module
writes a buffer of memory to a file leaving all-zero blocks out, so that
they become holes: the file's size and every byte read back are the same,
but the zeros take no disk space. Zero blocks are found with numpy over the
whole buffer at once (tens of GB/s), not with a Python loop over pages;
a buffer of a few pages is compared with a zero page instead, so that a
small dump does not pay numpy's import (a tenth of a second).
"""

from typing import List, Tuple

__all__ = ("SPARSE_BLOCK", "nonzero_runs")

#: Granularity of holes: a filesystem block (and a guest page).
SPARSE_BLOCK = 4096
_WORDS = SPARSE_BLOCK // 8
#: Up to this many bytes, blocks are compared with a zero block in Python.
_SMALL = 16 * SPARSE_BLOCK
_ZERO_BLOCK = bytes(SPARSE_BLOCK)


def nonzero_runs(data: memoryview) -> List[Tuple[int, int]]:
    """
    Return the ``(start, end)`` byte ranges of *data* that are not all zero,
    at block granularity (a partial last block counts as a block).
    """
    size = len(data)
    whole = size - size % SPARSE_BLOCK
    runs: List[Tuple[int, int]] = []
    if 0 < whole <= _SMALL:
        for start in range(0, whole, SPARSE_BLOCK):
            if data[start : start + SPARSE_BLOCK] != _ZERO_BLOCK:
                if runs and runs[-1][1] == start:
                    runs[-1] = (runs[-1][0], start + SPARSE_BLOCK)
                else:
                    runs.append((start, start + SPARSE_BLOCK))
    elif whole:
        import numpy as np

        pages = np.frombuffer(data, dtype=np.uint64, count=whole // 8).reshape(-1, _WORDS)
        # A page whose first word is not zero is not zero: for written
        # memory, one cache line per page decides, and the rest of the page
        # is not read here (it is read once, when written out).
        nonzero = pages[:, 0] != 0
        undecided = np.flatnonzero(~nonzero)
        if len(undecided) * 2 > len(nonzero):
            nonzero = pages.max(axis=1) != 0  # mostly zero: one contiguous pass
        elif len(undecided):
            nonzero[undecided] = pages[undecided].max(axis=1) != 0
        if nonzero.any():
            # Boundaries of runs of equal flags.
            edges = np.flatnonzero(nonzero[1:] != nonzero[:-1]) + 1
            starts = np.concatenate(([0], edges))
            ends = np.concatenate((edges, [len(nonzero)]))
            for start, end in zip(starts.tolist(), ends.tolist()):
                if nonzero[start]:
                    runs.append((start * SPARSE_BLOCK, end * SPARSE_BLOCK))
    if whole < size and bytes(data[whole:]).count(0) != size - whole:
        if runs and runs[-1][1] == whole:
            runs[-1] = (runs[-1][0], size)
        else:
            runs.append((whole, size))
    return runs
