# SPDX-License-Identifier: GPL-2.0-or-later
"""
Progress display for long operations: a one-line bar on a terminal, nothing
otherwise.
"""

import sys
import time
from typing import Optional, TextIO

__all__ = (
    "human_size",
    "Progress",
)


def human_size(n: int) -> str:
    """*n* bytes as QEMU's ``size_to_str()`` would round them: ``512 MiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n = n / 1024  # type: ignore[assignment]
    raise AssertionError


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


class Progress:
    """
    Show the progress of work measured in bytes on *stream* (standard error
    by default), redrawn at most every *interval* seconds. Disabled when the
    stream is not a terminal, unless *force* is set.
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        stream: Optional[TextIO] = None,
        enabled: Optional[bool] = None,
        interval: float = 0.2,
    ) -> None:
        self.total = total
        self.done = 0
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = self.stream.isatty()
        self.enabled = enabled
        self.interval = interval
        self.start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, n: int) -> None:
        """Record *n* more bytes done."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.interval or (self.total and self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.total:
            # Unknown total: the amount done and the rate.
            rate = self.done / max(now - self.start, 1e-6)
            self.stream.write(f"\r{self.label}{_mib(self.done)} {rate / (1 << 20):.0f} MiB/s ")
            self.stream.flush()
            self._drawn = True
            return
        fraction = self.done / self.total
        width = 30
        filled = int(width * fraction)
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        self.stream.write(
            f"\r{self.label}[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} "
            f"{_mib(self.done)}/{_mib(self.total)} {rate / (1 << 20):.0f} MiB/s "
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the progress line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
