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
import stat
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterable, Iterator, Optional, Tuple

from drgn_qemu.errors import OutputError

__all__ = ("atomic_output", "check_output", "files_open_for_reading")

_FILE_TYPES = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def files_open_for_reading() -> Iterator[Tuple[str, str]]:
    """
    ``(what, path)`` for each regular file this process
    has open read-only: the core and executable drgn opened for a drgn
    script or ``%qemu``, whose paths the caller may not know.
    """
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
            if flags & os.O_ACCMODE != os.O_RDONLY:
                continue
            st = os.stat(f"/proc/self/fd/{fd}")
            if stat.S_ISREG(st.st_mode):
                yield (
                    "file open for reading (the core or a debug info file)",
                    os.readlink(f"/proc/self/fd/{fd}"),
                )
        except (OSError, StopIteration, ValueError, IndexError):
            continue


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


def check_output(path: str, force: bool, inputs: Iterable[Tuple[str, Optional[str]]] = ()) -> None:
    """
    Fail early if *path* cannot become the output: it is one of *inputs*
    (``(what, path)`` pairs: the same file through any path, symbolic or hard
    link), exists as anything but a regular file, exists (and *force* is
    false), is a directory, or its directory does not exist. Neither an input
    nor a device, FIFO or socket is replaced, with or without *force*.

    :raises OutputError: naming the problem
    """
    if path == "-":
        raise OutputError(
            "output '-': drgn-qemu does not write to standard output (an ELF vmcore is "
            "written with holes and headers last); write a file and compress or copy it after, "
            "or name a file called - as ./-"
        )
    if os.path.isdir(path):
        raise OutputError(f"output {path} is a directory")
    st = _stat(path)
    if st is not None:
        for what, name in inputs:
            other = None if name is None else _stat(name)
            if other is None or (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino):
                continue
            if os.path.abspath(str(name)) != os.path.abspath(path):
                what = f"{what} {name}"
            raise OutputError(
                f"output {path} is the {what}: it is read to write the output and would be "
                "destroyed; choose another output"
            )
        kind = _FILE_TYPES.get(stat.S_IFMT(st.st_mode))
        if kind is not None:
            raise OutputError(
                f"output {path} exists and is {kind}, not a regular file; drgn-qemu writes "
                "only regular files and never replaces anything else, even with --force"
            )
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
def atomic_output(
    path: str, force: bool = False, inputs: Iterable[Tuple[str, Optional[str]]] = ()
) -> Iterator[BinaryIO]:
    """
    Open a temporary file next to *path* for writing; when the block ends
    without an exception, give it the name *path*, else remove it. *path*
    is checked first by :func:`check_output`, against *inputs*.

    Without *force* the final step is a hard link, which fails rather than
    replace a file that appeared meanwhile.

    :raises OutputError: if the file cannot be created, or *path* exists
        and *force* is false
    """
    check_output(path, force, inputs)
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
