# SPDX-License-Identifier: GPL-2.0-or-later
"""
QEMU helpers
------------

The ``drgn_qemu.helpers`` package mirrors QEMU's own functions for scripts
and the drgn REPL (``from drgn_qemu.helpers import *``), one module per
subsystem, as ``drgn.helpers.linux`` does for the kernel.
"""

from drgn_qemu.helpers import (
    cpu,
    glib,
    int128,
    machine,
    memory,
    memory_mapping,
    qom,
    queue,
    ramblock,
    vmcoreinfo,
)
from drgn_qemu.helpers.cpu import *  # noqa: F401,F403
from drgn_qemu.helpers.glib import *  # noqa: F401,F403
from drgn_qemu.helpers.int128 import *  # noqa: F401,F403
from drgn_qemu.helpers.machine import *  # noqa: F401,F403
from drgn_qemu.helpers.memory import *  # noqa: F401,F403
from drgn_qemu.helpers.memory_mapping import *  # noqa: F401,F403
from drgn_qemu.helpers.qom import *  # noqa: F401,F403
from drgn_qemu.helpers.queue import *  # noqa: F401,F403
from drgn_qemu.helpers.ramblock import *  # noqa: F401,F403
from drgn_qemu.helpers.vmcoreinfo import *  # noqa: F401,F403

__all__ = (
    cpu.__all__
    + glib.__all__
    + int128.__all__
    + machine.__all__
    + memory.__all__
    + memory_mapping.__all__
    + qom.__all__
    + queue.__all__
    + ramblock.__all__
    + vmcoreinfo.__all__
)
