# SPDX-License-Identifier: GPL-2.0-or-later
"""
LoongArch registers as HMP prints them
--------------------------------------

HMP's ``info registers`` for LoongArch guests: the PC, FCSR0, the general
registers and the CSRs by name (and the FP registers with ``-a``), in
``loongarch_cpu_dump_state()``'s format; :mod:`drgn_qemu.arch.loongarch64`
has the vCPU itself.
"""

from drgn import Object

from drgn_qemu.arch.loongarch64 import loongarch_cpu
from drgn_qemu.executable import read_constant_string

__all__ = (
    "cpu_dump_state",
    "loongarch_cpu_dump_csr",
    "loongarch_cpu_dump_state",
)


#: ``LOONGARCH_CSR_DBG``: the CSRs below it are the ones HMP prints.
LOONGARCH_CSR_DBG = 0x500


def _string(ptr: Object) -> str:
    """A string constant of QEMU's, from the core or its executable."""
    return read_constant_string(ptr.prog_, ptr.value_()) if ptr else ""


def loongarch_cpu_dump_csr(cpu: Object) -> str:
    """
    The CSRs as QEMU's ``loongarch_cpu_dump_csr()`` prints them, from
    QEMU's own table of them (``csr_info[]``, ``target/loongarch/csr.c``:
    name, offset in ``CPULoongArchState``, flags), four to a line.

    :param cpu: ``LoongArchCPU *``
    """
    prog = cpu.prog_
    env = cpu.env
    table = prog["csr_info"]
    unused = prog["CSRFL_UNUSED"].value_()
    env_addr = env.address_
    out = ["\n"]
    col = 0
    for i in range(min(LOONGARCH_CSR_DBG, len(table))):
        info = table[i]
        offset = info.offset.value_()
        if offset == 0 or info.flags.value_() & unused:
            if i == col + 3:
                out.append("\n")
            continue
        if i > col + 3 or i == col:
            col = i & ~3
            out.append(f" CSR{col:03d}:")
        name = _string(info.name)
        value = int.from_bytes(prog.read(env_addr + offset, 8), "little")
        out.append(f" {name} " + " " * max(0, 6 - len(name)))
        out.append(f"{value:x}")
        length = max(len(name), 6) + (value.bit_length() - 1 if value else 0) // 4 + 1
        out.append(" " * max(0, 22 - length))
        if i == col + 3:
            out.append("\n")
    out.append("\n")
    return "".join(out)


def loongarch_cpu_dump_state(cpu: Object) -> str:
    """
    The registers of a LoongArch vCPU as QEMU's ``loongarch_cpu_dump_state()``
    prints them with ``CPU_DUMP_FPU`` (HMP ``info registers``): PC and
    FCSR0, the GPRs by their ABI names, the CSRs, the FPRs.

    :param cpu: ``LoongArchCPU *``
    """
    prog = cpu.prog_
    env = cpu.env
    regnames = prog["regnames"]
    fregnames = prog["fregnames"]
    out = [f" PC={env.pc.value_() & (2**64 - 1):016x}  FCSR0 0x{env.fcsr0.value_():08x}\n"]
    for i in range(32):
        if i % 4 == 0:
            out.append(f" GPR{i:02d}:")
        out.append(f" {_string(regnames[i])} {env.gpr[i].value_() & (2**64 - 1):016x}")
        if i % 4 == 3:
            out.append("\n")
    out.append(loongarch_cpu_dump_csr(cpu))
    for i in range(32):
        out.append(f" {_string(fregnames[i])} {env.fpr[i].vreg.UD[0].value_():016x}")
        if i % 4 == 3:
            out.append("\n")
    return "".join(out)


def cpu_dump_state(cpu: Object) -> str:
    """
    HMP ``info registers`` of one vCPU, as this target's QEMU prints it.

    :param cpu: ``CPUState *``
    """
    return loongarch_cpu_dump_state(loongarch_cpu(cpu))
