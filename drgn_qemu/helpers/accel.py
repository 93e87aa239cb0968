# SPDX-License-Identifier: GPL-2.0-or-later
"""
Accelerators
------------

The ``drgn_qemu.helpers.accel`` module tells which accelerator QEMU ran the
guest with, as QEMU's ``kvm_enabled()`` and ``tcg_enabled()`` macros do:
from the globals ``kvm_allowed`` and ``tcg_allowed`` that the accelerator's
``init_machine()`` sets. A QEMU built without an accelerator has no such
global, and did not use it.
"""

from drgn import Program
from drgn.helpers.common.prog import takes_program_or_default

__all__ = ("kvm_enabled", "tcg_enabled")


def _allowed(prog: Program, name: str) -> bool:
    try:
        return bool(prog[name].value_())
    except KeyError:  # an accelerator this QEMU was built without
        return False


@takes_program_or_default
def kvm_enabled(prog: Program) -> bool:
    """Return whether QEMU ran the guest with KVM (``kvm_enabled()``: ``kvm_allowed``)."""
    return _allowed(prog, "kvm_allowed")


@takes_program_or_default
def tcg_enabled(prog: Program) -> bool:
    """Return whether QEMU ran the guest with TCG (``tcg_enabled()``: ``tcg_allowed``)."""
    return _allowed(prog, "tcg_allowed")
