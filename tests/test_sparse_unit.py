"""
Zero-page detection of the sparse writer (``drgn_qemu.sparse.nonzero_runs``)
against a plain page-by-page comparison written here, on buffers built to
take each of its paths: pages decided by their first word, pages whose first
word is zero but not the rest (a few of them, or most of them), all-zero
buffers and a partial last block.
"""

import os
import random
from typing import List, Tuple

import pytest

from drgn_qemu.sparse import nonzero_runs

PAGE = 4096


def oracle(data: bytes) -> List[Tuple[int, int]]:
    runs: List[Tuple[int, int]] = []
    for start in range(0, len(data), PAGE):
        end = min(start + PAGE, len(data))
        if data[start:end] != bytes(end - start):
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
    return runs


def page(kind: str, rng: random.Random) -> bytes:
    if kind == "zero":
        return bytes(PAGE)
    if kind == "random":
        return rng.randbytes(PAGE)
    # Zero first word: a single non-zero byte somewhere after it.
    data = bytearray(PAGE)
    data[rng.randrange(8, PAGE)] = rng.randrange(1, 256)
    return bytes(data)


@pytest.mark.parametrize(
    "weights",
    [
        (1, 0, 0),  # all zero
        (0, 1, 0),  # all written
        (0, 0, 1),  # every page needs its whole scan
        (8, 1, 1),  # mostly zero: one contiguous pass
        (1, 8, 1),  # mostly written: the few undecided pages alone
        (1, 1, 1),
    ],
)
def test_nonzero_runs_matches_page_comparison(weights: Tuple[int, int, int]) -> None:
    rng = random.Random(repr(weights))
    for pages in (1, 2, 7, 16, 17, 300):  # 16 pages and fewer: compared in Python
        kinds = rng.choices(["zero", "random", "tail"], weights=weights, k=pages)
        data = b"".join(page(k, rng) for k in kinds)
        assert nonzero_runs(memoryview(data)) == oracle(data), kinds


def test_nonzero_runs_partial_last_block() -> None:
    for tail in (b"\0" * 100, b"\0" * 99 + b"\1"):
        for body in (bytes(PAGE), os.urandom(PAGE), bytes(0)):
            data = body + tail
            assert nonzero_runs(memoryview(data)) == oracle(data)
