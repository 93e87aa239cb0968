# SPDX-License-Identifier: GPL-2.0-or-later
"""
Safe output files
-----------------

A dump is written to a temporary file in the destination directory and given
its final name only once it is complete, so a failed or interrupted dump
never leaves a partial file under that name and never clobbers an existing
file unless asked to.
"""

import errno
import os
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from drgn_qemu.errors import OutputError

__all__ = ("atomic_output", "check_output")


def check_output(path: str, force: bool) -> None:
    """
    Fail early if *path* cannot become the output: it exists (and *force* is
    false), is a directory, or its directory does not exist.

    :raises OutputError: naming the problem
    """
    if os.path.isdir(path):
        raise OutputError(f"output {path} is a directory")
    if os.path.lexists(path) and not force:
        raise OutputError(f"output {path} already exists; use --force to overwrite it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory} does not exist")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str, force: bool = False) -> Iterator[BinaryIO]:
    """
    Open a temporary file next to *path* for writing; when the block ends
    without an exception, give it the name *path*, else remove it.

    Without *force* the final step is a hard link, which fails rather than
    replace a file that appeared meanwhile.

    :raises OutputError: if the file cannot be created, or *path* exists
        and *force* is false
    """
    check_output(path, force)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial", dir=directory)
    except OSError as e:
        raise OutputError(f"cannot create a file in {directory}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb", buffering=0) as f:
            yield f
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(
                    f"output {path} appeared while dumping; use --force to overwrite it"
                ) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # No hard links on this filesystem: rename if still absent.
                if os.path.lexists(path):
                    raise OutputError(
                        f"output {path} appeared while dumping; use --force to overwrite it"
                    ) from None
                os.rename(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
