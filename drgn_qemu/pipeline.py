# SPDX-License-Identifier: GPL-2.0-or-later
"""
Chunks in flight
----------------

Both dump writers read guest memory a chunk at a time in the main thread,
hand each chunk to a thread pool (zero-page scans, compression: numpy and
the compressors let go of the GIL) and write the results in chunk order,
so the file does not depend on the number of threads. The
``drgn_qemu.pipeline`` module holds that part: a few reusable buffers, a
bounded queue of work in flight, and the rule that a buffer is reused only
once its chunk is finished.
"""

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Callable, Deque, Generic, List, Optional, Tuple, Type, TypeVar

__all__ = ("ChunkPipeline", "default_threads")


def default_threads() -> int:
    """One thread per CPU this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


R = TypeVar("R")
T = TypeVar("T")


class ChunkPipeline(Generic[R, T]):
    """
    Work on chunks in *threads* threads, finished in the order submitted.

    :param threads: worker threads; at most this many chunks are in flight
        once :meth:`submit` returns
    :param buffer_size: size of each of the ``threads + 1`` buffers
    :param finish: called in the submitting thread, in order, with each
        chunk's result and the tag it was submitted with; its buffer is free
        again after that
    :param name: prefix of the worker threads' names
    """

    def __init__(
        self, threads: int, buffer_size: int, finish: Callable[[R, T], None], name: str
    ) -> None:
        self.threads = threads
        self._finish = finish
        self._free: List[memoryview] = [
            memoryview(bytearray(buffer_size)) for _ in range(threads + 1)
        ]
        self._inflight: Deque[Tuple[Future[R], T, Optional[memoryview]]] = deque()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    def buffer(self) -> memoryview:
        """Return a free buffer, finishing the oldest chunk first if none is."""
        if not self._free:
            self._finish_oldest()
        return self._free.pop()

    def submit(self, tag: T, buf: Optional[memoryview], func: Callable[..., R], *args: Any) -> None:
        """
        Run ``func(*args)`` in a worker; *buf* (from :meth:`buffer`, or None)
        stays taken until the result is finished with *tag*.
        """
        self._inflight.append((self._pool.submit(func, *args), tag, buf))
        while len(self._inflight) > self.threads:
            self._finish_oldest()

    def finish_all(self) -> None:
        """Finish every chunk still in flight."""
        while self._inflight:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, tag, buf = self._inflight.popleft()
        self._finish(future.result(), tag)
        if buf is not None:
            self._free.append(buf)

    def __enter__(self) -> "ChunkPipeline[R, T]":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        # After an error, work not started is dropped, not finished.
        self._pool.shutdown(wait=True, cancel_futures=True)
