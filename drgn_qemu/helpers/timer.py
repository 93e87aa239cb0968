# SPDX-License-Identifier: GPL-2.0-or-later
"""
Timers
------

The ``drgn_qemu.helpers.timer`` module reads QEMU's timers
(``util/qemu-timer.c``): each clock type has a ``QEMUClock`` with a list of
``QEMUTimerList``; the main loop's are in the group ``main_loop_tlg``, and
each list holds its armed ``QEMUTimer`` in a chain sorted by expiry.
"""

from typing import Iterator

from drgn import Object, Program
from drgn.helpers.common.prog import takes_program_or_default

from drgn_qemu.errors import CorruptStructureError, NotQemuError

__all__ = ("MAX_TIMERS", "main_loop_tlg", "timerlist_for_each_timer")

#: The most timers a list may hold before it is declared corrupt (cyclic).
MAX_TIMERS = 1 << 16


@takes_program_or_default
def main_loop_tlg(prog: Program) -> Object:
    """Return the main loop's ``QEMUTimerListGroup``: ``tl[QEMU_CLOCK_MAX]`` timer lists."""
    try:
        return prog["main_loop_tlg"]
    except KeyError:
        raise NotQemuError("the program has no 'main_loop_tlg'") from None


def timerlist_for_each_timer(timer_list: Object) -> Iterator[Object]:
    """
    Iterate over the armed timers of a ``QEMUTimerList *``, soonest first
    (``active_timers``, then each ``next``), as ``QEMUTimer *`` objects.

    :param timer_list: ``QEMUTimerList *``
    """
    timer = timer_list.active_timers.read_()
    for _ in range(MAX_TIMERS):
        if not timer:
            return
        yield timer
        timer = timer.next.read_()
    raise CorruptStructureError(f"timer list longer than {MAX_TIMERS}: cyclic")
