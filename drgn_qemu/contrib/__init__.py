# SPDX-License-Identifier: GPL-2.0-or-later
"""
drgn scripts
------------

Scripts run by drgn itself, installed with the package:
``drgn -c CORE -s QEMU $(drgn-qemu --contrib-path) OUTPUT``. In a checkout,
``contrib/`` links to them.
"""

from pathlib import Path

__all__ = ("DUMP_GUEST_MEMORY_SCRIPT",)

#: The drgn script that dumps guest memory, QEMU's gdb script's successor.
DUMP_GUEST_MEMORY_SCRIPT = Path(__file__).resolve().parent / "dump_guest_memory.py"
