# SPDX-License-Identifier: GPL-2.0-or-later
"""
dump-guest-memory
-----------------

The ``drgn_qemu.helpers.dump`` module tells how the QEMU in the program
lays out the ELF file of its own ``dump-guest-memory`` (``dump/dump.c``),
from its ``DumpState`` in the debug info.
"""

from drgn import Program
from drgn.helpers.common.prog import takes_program_or_default

__all__ = ("dump_writes_section_headers",)


@takes_program_or_default
def dump_writes_section_headers(prog: Program) -> bool:
    """
    Return whether the QEMU of *prog* writes its ELF dump section headers
    first, then the program headers (QEMU 7.2 and later:
    ``DumpState.shdr_num``, the ``.shstrtab`` section), or, as QEMU did
    before, the program headers right after the ELF header and no section
    header but the one that holds a segment count past ``PN_XNUM``
    (``DumpState.sh_info``), read from ``dump_state_global``. A QEMU without
    it in its debug info is taken for a current one.
    """
    try:
        # dump/dump.c's own state, not net/dump.c's DumpState (a pcap writer).
        state = prog.variable("dump_state_global").type_
    except LookupError:
        return True
    return state.has_member("shdr_num") or not state.has_member("sh_info")
