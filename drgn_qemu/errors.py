# SPDX-License-Identifier: GPL-2.0-or-later
"""
Errors
------

Every problem a user can act on (a wrong file, missing debug info, a core
without guest RAM, an output that already exists...) is raised as a
:class:`DrgnQemuError` whose message names what was missing. The command
line prints that message on one line and exits non-zero; anything else is a
bug and keeps its traceback. Damaged QEMU memory is input, not a bug:
:func:`reading` turns what drgn raises on it into
:class:`CorruptStructureError`, at every entry point.
"""

import functools
import re
import struct
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar, cast

import drgn
from drgn.helpers import ValidationError

__all__ = (
    "CorruptStructureError",
    "DebugInfoError",
    "DrgnQemuError",
    "GuestMemoryError",
    "NotFoundError",
    "NotQemuError",
    "OutputError",
    "ProgramError",
    "reading",
    "translate_errors",
    "UnsupportedError",
    "UsageError",
)


class DrgnQemuError(Exception):
    """A problem with the input or the environment, explained in the message."""


class ProgramError(DrgnQemuError):
    """The core file or process could not be opened as a program."""


class NotQemuError(DrgnQemuError):
    """The program is not a QEMU system emulator."""


class DebugInfoError(DrgnQemuError):
    """QEMU's debug info is missing or lacks a needed type or variable."""


class GuestMemoryError(DrgnQemuError):
    """Guest RAM cannot be read from the core or process."""


class CorruptStructureError(DrgnQemuError, ValidationError):
    """A QEMU data structure is inconsistent (a cyclic list, an absurd size)."""


class UnsupportedError(DrgnQemuError):
    """The program uses a feature or layout drgn-qemu does not handle yet."""


class NotFoundError(DrgnQemuError, LookupError):
    """What the user named (an address space, a path, a thread) does not exist."""


class OutputError(DrgnQemuError):
    """The output file cannot be created or written."""


class UsageError(DrgnQemuError):
    """Options that do not go together, or a value no option allows: the command line's fault."""


#: What reading a damaged QEMU raises besides drgn's FaultError: a member
#: of a damaged object absent or out of bounds, drgn's refusal of bad data
#: (a note it cannot parse), and values out of every range they could have
#: (an address past 2^64, a negative shift or count, a field that does not
#: fit the vmcore's).
_DAMAGE_ERRORS = (
    drgn.ObjectAbsentError,
    drgn.OutOfBoundsError,
    drgn.BadDataError,
    OverflowError,
    struct.error,
    ValueError,
)


#: drgn's messages for a member a type does not have (``Object.member_``,
#: attribute access), or an Object that is no structure at all (a member
#: whose type changed).
_DRGN_NO_MEMBER = re.compile(
    r"has no member '|is not a structure, union, or class|^'_drgn\.Object' object has no attribute"
)


@contextmanager
def reading(what: str) -> Iterator[None]:
    """
    Turn drgn's errors while reading QEMU's structures (*what*, for the
    message) into one-line :class:`DrgnQemuError`: everything read from a
    crashed QEMU is untrusted, so damage is an input error, not a bug.
    :class:`DrgnQemuError` passes through unchanged.
    """
    try:
        yield
    except DrgnQemuError:
        raise
    except drgn.FaultError as e:
        raise CorruptStructureError(
            f"cannot read {what}: {e} (the core is damaged or incomplete)"
        ) from None
    except _DAMAGE_ERRORS as e:
        raise CorruptStructureError(f"{what} looks damaged: {e}") from None
    except AttributeError as e:
        # drgn's Object says a member drgn-qemu expects is not in this QEMU's
        # debug info ("'struct CPUState' has no member 'thread_id'"); any
        # other AttributeError is a bug of ours, and keeps its traceback.
        if not _DRGN_NO_MEMBER.search(str(e)):
            raise
        raise UnsupportedError(f"unsupported QEMU data structure layout ({what}): {e}") from None
    except LookupError as e:
        # A type or variable drgn-qemu expects is not in this QEMU's debug info.
        raise UnsupportedError(f"unsupported QEMU data structure layout ({what}): {e}") from None


F = TypeVar("F", bound=Callable[..., Any])


def translate_errors(what: str) -> Callable[[F], F]:
    """Decorate a library entry point so that it raises as :func:`reading` says."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with reading(what):
                return func(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
