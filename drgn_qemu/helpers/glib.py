# SPDX-License-Identifier: GPL-2.0-or-later
"""
GLib containers
---------------

The ``drgn_qemu.helpers.glib`` module reads the GLib containers QEMU keeps
its state in, and reproduces the order GLib visits them in.

Distributions ship GLib without debug info next to QEMU, so the layout of
``struct _GHashTable`` is GLib's own (``glib/ghash.c``, unchanged from GLib
2.60 to 2.84), read by offset: ``size``, ``mod``, ``mask``, ``nnodes``,
``noccupied``, the ``have_big_keys``/``have_big_values`` bits, then the
``keys``, ``hashes`` and ``values`` arrays. Keys and values are stored as
32-bit integers until one does not fit ("small" arrays).

:class:`DirectHashTable` models a ``g_hash_table_new(g_direct_hash,
g_direct_equal)`` table built by ``g_hash_table_insert()``: HMP commands such
as ``info mtree`` build one and print in ``g_hash_table_foreach()`` order,
which depends only on the keys' values and their insertion order.
"""

import struct
from typing import Generic, Iterator, List, Optional, Tuple, TypeVar

from drgn import FaultError, Object

from drgn_qemu.errors import CorruptStructureError

__all__ = (
    "DirectHashTable",
    "g_direct_hash",
    "g_hash_table_foreach",
    "g_hash_table_size",
)

#: GLib's ``prime_mod[]``: the modulus for each table size 1 << shift.
PRIME_MOD = (
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521,
    131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393,
    67108859, 134217689, 268435399, 536870909, 1073741789, 2147483647,
)  # fmt: skip
HASH_TABLE_MIN_SHIFT = 3
UNUSED_HASH_VALUE = 0
TOMBSTONE_HASH_VALUE = 1
#: The most entries a GHashTable may have before it is declared corrupt.
MAX_HASH_TABLE_SIZE = 1 << 24

V = TypeVar("V")


def g_direct_hash(key: int) -> int:
    """GLib's ``g_direct_hash()``: the pointer, as a 32-bit ``guint``."""
    return key & 0xFFFFFFFF


def _is_real(h: int) -> bool:
    return h >= 2


class DirectHashTable(Generic[V]):
    """
    A model of a ``g_hash_table_new(g_direct_hash, g_direct_equal)`` table:
    :meth:`insert` places keys as GLib's ``g_hash_table_insert()`` does
    (hash times 11 modulo a prime, quadratic probing, growth and shrinking
    in ``g_hash_table_maybe_resize()``), and :meth:`items` returns them in
    ``g_hash_table_foreach()`` order.
    """

    def __init__(self) -> None:
        self._set_shift(HASH_TABLE_MIN_SHIFT)
        self.hashes = [UNUSED_HASH_VALUE] * self.size
        self.keys: List[Optional[int]] = [None] * self.size
        self.values: List[Optional[V]] = [None] * self.size
        self.nnodes = 0
        self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = PRIME_MOD[shift]
        self.mask = self.size - 1

    def _hash_to_index(self, h: int) -> int:
        return ((h * 11) & 0xFFFFFFFF) % self.mod

    def _lookup_node(self, key: int) -> Tuple[int, int]:
        h = g_direct_hash(key)
        if not _is_real(h):
            h = 2
        index = self._hash_to_index(h)
        step = 0
        tombstone: Optional[int] = None
        while self.hashes[index] != UNUSED_HASH_VALUE:
            if self.hashes[index] == h and self.keys[index] == key:
                return index, h
            if self.hashes[index] == TOMBSTONE_HASH_VALUE and tombstone is None:
                tombstone = index
            step += 1
            index = (index + step) & self.mask
        return (tombstone if tombstone is not None else index), h

    def lookup(self, key: int) -> Optional[V]:
        """``g_hash_table_lookup()``."""
        index, h = self._lookup_node(key)
        return self.values[index] if self.hashes[index] == h and self.keys[index] == key else None

    def insert(self, key: int, value: V) -> None:
        """``g_hash_table_insert()``: add *key*, or replace its value."""
        index, h = self._lookup_node(key)
        old = self.hashes[index]
        if _is_real(old):
            self.values[index] = value
            return
        self.hashes[index] = h
        self.keys[index] = key
        self.values[index] = value
        self.nnodes += 1
        if old == UNUSED_HASH_VALUE:
            self.noccupied += 1
            self._maybe_resize()

    def _maybe_resize(self) -> None:
        if (self.size > self.nnodes * 4 and self.size > 1 << HASH_TABLE_MIN_SHIFT) or (
            self.size <= self.noccupied + self.noccupied // 16
        ):
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        n = int(self.nnodes * 1.333)
        shift = 0
        while n:
            n >>= 1
            shift += 1
        self._set_shift(max(shift, HASH_TABLE_MIN_SHIFT))
        if self.size > old_size:
            grow = self.size - old_size
            self.hashes += [UNUSED_HASH_VALUE] * grow
            self.keys += [None] * grow
            self.values += [None] * grow
        relocated = [False] * max(self.size, old_size)
        for i in range(old_size):
            node_hash = self.hashes[i]
            if not _is_real(node_hash):
                self.hashes[i] = UNUSED_HASH_VALUE
                continue
            if relocated[i]:
                continue
            self.hashes[i] = UNUSED_HASH_VALUE
            key, value = self.keys[i], self.values[i]
            self.keys[i] = self.values[i] = None
            while True:
                index = self._hash_to_index(node_hash)
                step = 0
                while relocated[index]:
                    step += 1
                    index = (index + step) & self.mask
                relocated[index] = True
                replaced = self.hashes[index]
                self.hashes[index] = node_hash
                if not _is_real(replaced):
                    self.keys[index], self.values[index] = key, value
                    break
                node_hash = replaced
                key, self.keys[index] = self.keys[index], key
                value, self.values[index] = self.values[index], value
        if self.size < old_size:
            del self.hashes[self.size :], self.keys[self.size :], self.values[self.size :]
        self.noccupied = self.nnodes

    def items(self) -> Iterator[Tuple[int, V]]:
        """The entries in ``g_hash_table_foreach()`` order."""
        for i in range(self.size):
            if _is_real(self.hashes[i]):
                key, value = self.keys[i], self.values[i]
                assert key is not None
                yield key, value  # type: ignore[misc]


# struct _GHashTable on 64-bit hosts: gsize size; gint mod; guint mask;
# guint nnodes; guint noccupied; guint have_big_keys:1, have_big_values:1;
# gpointer keys; guint *hashes; gpointer values; ...
_GHASHTABLE = struct.Struct("<QiIIII4xQQQ")


def _table(table: Object) -> Tuple[int, int, bool, bool, int, int, int]:
    address = table.value_()
    if not address:
        raise CorruptStructureError("GHashTable pointer is NULL")
    raw = table.prog_.read(address, _GHASHTABLE.size)
    size, _mod, mask, nnodes, _noccupied, bits, keys, hashes, values = _GHASHTABLE.unpack(raw)
    if size > MAX_HASH_TABLE_SIZE or size & (size - 1) or mask != size - 1 or nnodes > size:
        raise CorruptStructureError(
            f"GHashTable at 0x{address:x} is not a GLib hash table (size {size}, "
            f"mask {mask}, nnodes {nnodes})"
        )
    return size, nnodes, bool(bits & 1), bool(bits & 2), keys, hashes, values


def g_hash_table_size(table: Object) -> int:
    """
    Return the number of entries of a ``GHashTable *`` (``g_hash_table_size()``).

    :param table: ``GHashTable *``
    """
    return _table(table)[1]


def g_hash_table_foreach(table: Object) -> Iterator[Tuple[int, int]]:
    """
    Iterate over a ``GHashTable *`` in QEMU's memory as
    ``g_hash_table_foreach()`` does: ``(key, value)`` of each entry, as
    integers (pointers or ``GINT_TO_POINTER`` values; cast them with
    :class:`drgn.Object`).

    :raises CorruptStructureError: if the table is not a GLib hash table
    :param table: ``GHashTable *``
    """
    prog = table.prog_
    size, _, big_keys, big_values, keys, hashes, values = _table(table)
    try:
        hash_words = struct.unpack(f"<{size}I", prog.read(hashes, 4 * size))
        key_words = _array(prog.read(keys, (8 if big_keys else 4) * size), big_keys, size)
        if values == keys:
            value_words = key_words  # a set: the keys are the values
        else:
            value_words = _array(
                prog.read(values, (8 if big_values else 4) * size), big_values, size
            )
    except FaultError as e:
        raise CorruptStructureError(
            f"cannot read GHashTable at 0x{table.value_():x}: {e}"
        ) from None
    for i in range(size):
        if _is_real(hash_words[i]):
            yield key_words[i], value_words[i]


def _array(raw: bytes, big: bool, size: int) -> Tuple[int, ...]:
    return struct.unpack(f"<{size}{'Q' if big else 'I'}", raw)
