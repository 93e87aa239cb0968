# SPDX-License-Identifier: GPL-2.0-or-later
"""
QEMU helpers
------------

The ``drgn_qemu.helpers`` package mirrors QEMU's own functions for scripts
and the drgn REPL (``from drgn_qemu.helpers import *``), one module per
subsystem, as ``drgn.helpers.linux`` does for the kernel. Every module of
the package is imported when a name of the package is first asked for and
every name in its ``__all__`` re-exported, so a new helper module cannot be
left out.
"""

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, List

if TYPE_CHECKING:  # the same names, for type checkers (a test checks the list)
    from drgn_qemu.helpers.accel import *  # noqa: F401,F403
    from drgn_qemu.helpers.coroutine import *  # noqa: F401,F403
    from drgn_qemu.helpers.cpu import *  # noqa: F401,F403
    from drgn_qemu.helpers.dump import *  # noqa: F401,F403
    from drgn_qemu.helpers.glib import *  # noqa: F401,F403
    from drgn_qemu.helpers.int128 import *  # noqa: F401,F403
    from drgn_qemu.helpers.machine import *  # noqa: F401,F403
    from drgn_qemu.helpers.memory import *  # noqa: F401,F403
    from drgn_qemu.helpers.memory_device import *  # noqa: F401,F403
    from drgn_qemu.helpers.memory_mapping import *  # noqa: F401,F403
    from drgn_qemu.helpers.qom import *  # noqa: F401,F403
    from drgn_qemu.helpers.queue import *  # noqa: F401,F403
    from drgn_qemu.helpers.ramblock import *  # noqa: F401,F403
    from drgn_qemu.helpers.timer import *  # noqa: F401,F403
    from drgn_qemu.helpers.virtio_mem import *  # noqa: F401,F403
    from drgn_qemu.helpers.vmcoreinfo import *  # noqa: F401,F403


def _import_all() -> None:
    names: List[str] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):  # noqa: F405
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name in module.__all__:
            globals()[name] = getattr(module, name)
        names.extend(module.__all__)
    globals()["__all__"] = names


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        # The helpers are imported when first asked for (a name of theirs,
        # __all__ for a star import), not when one module of the package is:
        # a dump that imports drgn_qemu.helpers.cpu need not import them all.
        # Once done (__all__ set), a missing name is missing: no new import.
        if "__all__" not in globals():
            _import_all()
        try:
            return globals()[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
