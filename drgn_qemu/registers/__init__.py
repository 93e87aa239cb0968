# SPDX-License-Identifier: GPL-2.0-or-later
"""
Registers as HMP prints them
----------------------------

HMP's ``info registers``: one module per guest architecture formats a vCPU
as that target's ``cpu_dump_state()`` does (``target/*/cpu.c``), apart from
the dump's notes (:mod:`drgn_qemu.arch`). :func:`cpu_dump_state` picks the
module of a :class:`~drgn_qemu.arch.GuestArch`.
"""

from drgn import Object

from drgn_qemu.arch.base import GuestArch
from drgn_qemu.errors import UnsupportedError

__all__ = ("cpu_dump_state",)


def cpu_dump_state(arch: GuestArch, cpu: Object) -> str:
    """
    Return a vCPU's registers as QEMU's ``cpu_dump_state()`` prints them for
    HMP ``info registers``.

    :param arch: the guest's architecture
    :param cpu: ``CPUState *``
    :raises UnsupportedError: if drgn-qemu cannot print this target's registers
    """
    from drgn_qemu.registers import aarch64, loongarch64, ppc64, riscv64, s390x, x86_64

    modules = {m.__name__.rsplit(".", 1)[1]: m for m in (aarch64, loongarch64, ppc64, riscv64,
                                                          s390x, x86_64)}  # fmt: skip
    module = modules.get(arch.name)
    if module is None:
        raise UnsupportedError(f"printing {arch.name} registers is not supported yet")
    return str(module.cpu_dump_state(cpu))
