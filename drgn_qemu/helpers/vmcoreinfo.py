# SPDX-License-Identifier: GPL-2.0-or-later
"""
vmcoreinfo device
-----------------

The ``drgn_qemu.helpers.vmcoreinfo`` module reads the state of QEMU's
``-device vmcoreinfo`` (``hw/misc/vmcoreinfo.c``): where the guest kernel
said its VMCOREINFO note is, through fw_cfg. ``vmcoreinfo_realize()`` keeps
a pointer to the device in the function-local static ``vmcoreinfo_state``
for debuggers; it is found through the symbol table, where gcc names it
``vmcoreinfo_state`` or ``vmcoreinfo_state.N``.
"""

from drgn import Object, Program
from drgn.helpers.common.prog import takes_program_or_default

__all__ = ("FW_CFG_VMCOREINFO_FORMAT_ELF", "vmcoreinfo_find")

#: ``FWCfgVMCoreInfo.guest_format`` of an ELF note.
FW_CFG_VMCOREINFO_FORMAT_ELF = 1


@takes_program_or_default
def vmcoreinfo_find(prog: Program) -> Object:
    """
    Return the ``VMCoreInfoState *`` of the vmcoreinfo device (like QEMU's
    ``vmcoreinfo_find()``), or a null pointer if QEMU has no such device.
    """
    try:
        state_type = prog.pointer_type(prog.type("VMCoreInfoState"))
    except LookupError:
        return Object(prog, "void *", 0)
    for suffix in ("", *(f".{i}" for i in range(16))):
        try:
            symbol = prog.symbol("vmcoreinfo_state" + suffix)
        except LookupError:
            continue
        return Object(prog, state_type, address=symbol.address).read_()
    return Object(prog, state_type, 0)
