"""
Errors
------

Every problem a user can act on (a wrong file, missing debug info, a core
without guest RAM, an output that already exists...) is raised as a
:class:`DrgnQemuError` whose message names what was missing. The command
line prints that message on one line and exits non-zero; anything else is a
bug and keeps its traceback.
"""

from drgn.helpers import ValidationError

__all__ = (
    "CorruptStructureError",
    "DebugInfoError",
    "DrgnQemuError",
    "GuestMemoryError",
    "NotQemuError",
    "OutputError",
    "ProgramError",
    "UnsupportedError",
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


class OutputError(DrgnQemuError):
    """The output file cannot be created or written."""
