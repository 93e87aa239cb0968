# SPDX-License-Identifier: GPL-2.0-or-later
"""
Int128
------

The ``drgn_qemu.helpers.int128`` module reads QEMU's ``Int128``
(``include/qemu/int128.h``), which is a native ``__int128`` where the compiler
has one (gcc on 64-bit hosts, as in QEMU 7.2 and 10.0 on x86_64) and a
``struct Int128 { uint64_t lo; int64_t hi; }`` otherwise (all QEMUs before
2.9, and 32-bit hosts).
"""

from drgn import Object, TypeKind

from drgn_qemu.errors import CorruptStructureError

__all__ = ("int128_get", "int128_get64")


def int128_get(value: Object) -> int:
    """
    Return the value of an ``Int128`` of either representation as a Python
    integer (signed, as QEMU's ``Int128`` is).

    :param value: ``Int128``
    """
    type_ = value.type_.unaliased()
    if type_.kind in (TypeKind.STRUCT, TypeKind.UNION) and type_.has_member("lo"):
        lo = value.lo.value_() & ((1 << 64) - 1)
        hi = value.hi.value_()
        if hi >= 1 << 63:
            hi -= 1 << 64
        return (hi << 64) | lo
    return value.value_()


def int128_get64(value: Object) -> int:
    """
    Return an ``Int128`` that fits in 64 bits, like QEMU's ``int128_get64()``.

    QEMU asserts that the value fits; a value that does not (negative, or
    2\\ :sup:`64` and above) means the structure is not what it should be, so
    this raises :class:`~drgn_qemu.errors.CorruptStructureError` rather than
    truncating.

    :param value: ``Int128``
    """
    result = int128_get(value)
    if not 0 <= result < 1 << 64:
        raise CorruptStructureError(
            f"Int128 value {result:#x} at {_where(value)} does not fit in 64 bits"
        )
    return result


def _where(value: Object) -> str:
    address = value.address_
    return "(value)" if address is None else f"0x{address:x}"
