# SPDX-License-Identifier: GPL-2.0-or-later
"""
drgn-qemu: guest memory and QEMU introspection from a QEMU core or process,
with drgn.

The library's front doors, imported when first used (the drgn plugin and the
command line stay cheap to load):

- :func:`drgn_qemu.program.open_qemu_program`: a QEMU core or process as a
  drgn Program, with QEMU's debug info;
- :func:`drgn_qemu.dump.dump_guest_memory`: its guest's vmcore;
- :func:`drgn_qemu.guest.guest_program`: its guest's Linux kernel as a drgn
  Program, in place.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ("dump_guest_memory", "guest_program", "open_qemu_program")

_LAZY = {
    "dump_guest_memory": "drgn_qemu.dump",
    "guest_program": "drgn_qemu.guest",
    "open_qemu_program": "drgn_qemu.program",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'drgn_qemu' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
