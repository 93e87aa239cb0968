# SPDX-License-Identifier: GPL-2.0-or-later
"""
QEMU Queues
-----------

The ``drgn_qemu.helpers.queue`` module walks the list macros of QEMU's
``include/qemu/queue.h`` (derived from BSD ``sys/queue.h``): ``QLIST``,
``QSIMPLEQ`` and ``QTAILQ``, in both the pre-3.0 ``QTAILQ`` layout
(``tqh_first``/``tqh_last``) and the later one (``tqh_first`` in a union with
``tqh_circ``).

Each ``*_for_each`` helper mirrors the ``*_FOREACH`` macro of the same name
and yields a pointer to each element. Walks are bounded: a list that loops
back on itself or is longer than *limit* raises
:class:`~drgn_qemu.errors.CorruptStructureError` instead of running forever,
since the process these lists come from may have crashed halfway through an
update.
"""

from typing import Iterator, Set

from drgn import Object

from drgn_qemu.errors import CorruptStructureError

__all__ = (
    "DEFAULT_LIST_LIMIT",
    "qlist_empty",
    "qlist_first",
    "qlist_for_each",
    "qsimpleq_first",
    "qsimpleq_for_each",
    "qtailq_first",
    "qtailq_for_each",
    "queue_for_each",
)

#: The most elements a walk visits before it declares the list corrupt.
DEFAULT_LIST_LIMIT = 1 << 20


def _walk(first: Object, field: str, next_member: str, what: str, limit: int) -> Iterator[Object]:
    seen: Set[int] = set()
    pos = first.read_()
    while pos:
        address = pos.value_()
        if address in seen:
            raise CorruptStructureError(f"{what} is cyclic: element 0x{address:x} appears twice")
        if len(seen) >= limit:
            raise CorruptStructureError(
                f"{what} has more than {limit} elements; the list is corrupt"
            )
        seen.add(address)
        yield pos
        pos = pos.member_(field).member_(next_member).read_()


def qlist_first(head: Object) -> Object:
    """
    Return the first element of a ``QLIST_HEAD`` (``QLIST_FIRST``), or a null
    pointer if the list is empty.

    :param head: ``QLIST_HEAD`` (the structure itself, not a pointer)
    """
    return head.lh_first.read_()


def qlist_empty(head: Object) -> bool:
    """
    Return whether a ``QLIST_HEAD`` is empty (``QLIST_EMPTY``).

    :param head: ``QLIST_HEAD``
    """
    return not qlist_first(head)


def qlist_for_each(head: Object, field: str, limit: int = DEFAULT_LIST_LIMIT) -> Iterator[Object]:
    """
    Iterate over a ``QLIST`` (``QLIST_FOREACH(var, head, field)``).

    :param head: ``QLIST_HEAD``
    :param field: name of the ``QLIST_ENTRY`` member in the element type
    :param limit: most elements to visit before raising
        :class:`~drgn_qemu.errors.CorruptStructureError`
    :return: Iterator of pointers to the elements.
    """
    return _walk(qlist_first(head), field, "le_next", "QLIST", limit)


def qsimpleq_first(head: Object) -> Object:
    """
    Return the first element of a ``QSIMPLEQ_HEAD`` (``QSIMPLEQ_FIRST``).

    :param head: ``QSIMPLEQ_HEAD``
    """
    return head.sqh_first.read_()


def qsimpleq_for_each(
    head: Object, field: str, limit: int = DEFAULT_LIST_LIMIT
) -> Iterator[Object]:
    """
    Iterate over a ``QSIMPLEQ`` (``QSIMPLEQ_FOREACH(var, head, field)``): as
    :func:`qlist_for_each`, from a ``QSIMPLEQ_HEAD`` through the
    ``QSIMPLEQ_ENTRY`` member *field* of each element.

    :param head: ``QSIMPLEQ_HEAD``
    """
    return _walk(qsimpleq_first(head), field, "sqe_next", "QSIMPLEQ", limit)


def qtailq_first(head: Object) -> Object:
    """
    Return the first element of a ``QTAILQ_HEAD`` (``QTAILQ_FIRST``). Works
    for both the old ``{tqh_first, tqh_last}`` head and the ``union {tqh_first;
    QTailQLink tqh_circ;}`` head of QEMU 3.0 and later.

    :param head: ``QTAILQ_HEAD``
    """
    return head.tqh_first.read_()


def qtailq_for_each(head: Object, field: str, limit: int = DEFAULT_LIST_LIMIT) -> Iterator[Object]:
    """
    Iterate over a ``QTAILQ`` (``QTAILQ_FOREACH(var, head, field)``): as
    :func:`qlist_for_each`.

    :param head: ``QTAILQ_HEAD``
    :param field: name of the ``QTAILQ_ENTRY`` member in the element type
    """
    return _walk(qtailq_first(head), field, "tqe_next", "QTAILQ", limit)


def queue_for_each(head: Object, field: str, limit: int = DEFAULT_LIST_LIMIT) -> Iterator[Object]:
    """
    Iterate over any ``queue.h`` list, telling its kind from the head's
    members (``lh_first``: ``QLIST``; ``sqh_first``: ``QSIMPLEQ``;
    ``tqh_first``: ``QTAILQ``). Use it for lists whose kind changed across
    QEMU versions, such as ``ram_list.blocks`` or the CPU list.

    :param head: a ``QLIST_HEAD``, ``QSIMPLEQ_HEAD`` or ``QTAILQ_HEAD``
    :param field: name of the entry member in the element type
    :param limit: most elements to visit
    :return: Iterator of pointers to the elements.
    """
    if head.type_.has_member("lh_first"):
        return qlist_for_each(head, field, limit)
    if head.type_.has_member("tqh_first"):
        return qtailq_for_each(head, field, limit)
    if head.type_.has_member("sqh_first"):
        return qsimpleq_for_each(head, field, limit)
    raise CorruptStructureError(f"{head.type_} is not a queue.h list head")
