# SPDX-License-Identifier: GPL-2.0-or-later
"""
RISC-V registers as HMP prints them
-----------------------------------

What HMP's ``info registers`` shows of a riscv64 vCPU, in the format of
``riscv_cpu_dump_state()``: pc, the CSRs the vCPU has, the x registers by
their ABI names, the FP registers with ``-a``. (The dump's notes are
:mod:`drgn_qemu.arch.riscv64`'s.)
"""

from typing import Optional

from drgn import Object, container_of

from drgn_qemu.arch.base import softfloat_exception_bits
from drgn_qemu.arch.riscv64 import (
    HSTATUS_VGEIN_BITS,
    HSTATUS_VGEIN_SHIFT,
    HSTATUS_VSBE,
    HSTATUS_VSXL,
    MIP_LCOFIP,
    MIP_VSEIP,
    MIP_VSSIP,
    MIP_VSTIP,
    MSTATUS_FS,
    MSTATUS_VS,
    MSTATUS_XS,
    riscv_cpu,
)
from drgn_qemu.errors import UnsupportedError
from drgn_qemu.executable import read_constant_string

__all__ = (
    "cpu_dump_state",
    "riscv_cpu_dump_state",
    "riscv_cpu_get_fflags",
    "riscv_csrr",
)


def _ext(env: Object, letter: str) -> bool:
    """``riscv_has_ext()``: the extension's bit in ``misa_ext``."""
    return bool(env.misa_ext.value_() >> (ord(letter) - ord("A")) & 1)


_M64 = (1 << 64) - 1
MSTATUS_TVM = 0x100000
MSTATUS64_SD = 1 << 63
VS_DELEGABLE_INTS = ((MIP_VSSIP | MIP_VSTIP | MIP_VSEIP) | (~0xFFFF & _M64)) & ~MIP_LCOFIP
PRV_S = 1
#: The CSRs ``riscv_cpu_dump_state()`` prints, in its order (``dump_csrs[]``).
DUMP_CSRS = (0xF14, 0x300, 0x310, 0x600, 0x200, 0x344, 0x304, 0x303, 0x603, 0x302, 0x602,
             0x305, 0x105, 0x205, 0x341, 0x141, 0x241, 0x342, 0x142, 0x242, 0x343, 0x143,
             0x643, 0x34B, 0x340, 0x140, 0x180)  # fmt: skip


CSR_FCSR = 0x003


def _fn_name(fn: Object) -> str:
    """The name of the function a pointer in QEMU's CSR table points at, or ''."""
    address = fn.value_()
    if not address:
        return ""
    try:
        return str(fn.prog_.symbol(address).name)
    except LookupError:
        return ""


def _predicate_ok(env: Object, name: str) -> Optional[bool]:
    """A CSR predicate of QEMU's ``csr.c`` in debugger mode, or None for one not mirrored."""
    if name in ("any", "fs"):  # fs: the debugger may read FP CSRs whatever mstatus.FS
        return True
    if name == "any32":
        return False  # riscv64: RV32-only CSRs
    if name == "smode":
        return _ext(env, "S")
    if name == "hmode":
        return _ext(env, "H")
    if name == "dbltrp_hmode":  # with Ssdbltrp, else as hmode
        cpu = container_of(env.address_of_(), "RISCVCPU", "env")
        cfg = cpu.cfg
        if cfg.type_.has_member("ext_ssdbltrp") and cfg.ext_ssdbltrp.value_():
            return True
        return _ext(env, "H")
    if name == "satp":
        tvm = bool(env.mstatus.value_() & MSTATUS_TVM)
        if env.priv.value_() == PRV_S and not env.virt_enabled.value_() and tvm:
            return False
        return _ext(env, "S")
    return None


def riscv_csrr(cpu: Object, csrno: int) -> Optional[int]:
    """
    Read a CSR as QEMU's ``riscv_csrrw_debug()`` does for HMP (the
    debugger's access): None where QEMU's predicate says it does not exist.
    The predicate and read function are found in QEMU's own ``csr_ops[]``.

    :param cpu: ``RISCVCPU *``
    :raises UnsupportedError: for a predicate or read function not mirrored
    """
    env = cpu.env
    prog = cpu.prog_
    ops = prog["csr_ops"][csrno]
    predicate = _fn_name(ops.predicate)
    if not predicate:
        return None
    if env.priv_ver.value_() < ops.min_priv_ver.value_():
        return None
    ok = _predicate_ok(env, predicate)
    if ok is None:
        raise UnsupportedError(
            f"reading RISC-V CSR {csrno:#x} (predicate {predicate}) is not supported yet"
        )
    if not ok:
        return None
    op = _fn_name(ops.op)
    read = _fn_name(ops.read)
    if op == "rmw_mip":
        mip = env.mip.value_()
        gin = (env.hstatus.value_() >> HSTATUS_VGEIN_SHIFT) & ((1 << HSTATUS_VGEIN_BITS) - 1)
        if env.hgeip.value_() >> gin & 1:
            mip |= MIP_VSEIP
        if env.vstime_irq.value_():
            mip |= MIP_VSTIP
        return mip & _M64
    if op == "rmw_hideleg":
        return env.hideleg.value_() & VS_DELEGABLE_INTS
    if op in ("rmw_mie", "rmw_mideleg"):
        return int(env.member_(op[4:]).value_()) & _M64
    if read == "read_mstatus":
        value = env.mstatus.value_()
        if any(value & f == f for f in (MSTATUS_FS, MSTATUS_VS, MSTATUS_XS)):
            value |= MSTATUS64_SD
        return value & _M64
    if read == "read_hstatus":
        value = (env.hstatus.value_() & ~HSTATUS_VSXL & ~HSTATUS_VSBE) | (2 << 32)
        return value & _M64
    if read == "read_satp":
        return int(env.satp.value_()) & _M64 if cpu.cfg.mmu.value_() else 0
    if read == "read_fcsr":
        return riscv_cpu_get_fflags(env) | (env.frm.value_() << 5)
    if read.startswith("read_") and not op:
        field = read[5:]
        if env.type_.type.has_member(field):
            return int(env.member_(field).value_()) & _M64
    raise UnsupportedError(f"reading RISC-V CSR {csrno:#x} ({read or op}) is not supported yet")


def riscv_cpu_get_fflags(env: Object) -> int:
    """
    The accrued FP exception flags, softfloat's as RISC-V's (``riscv_cpu_get_fflags()``).

    :param env: ``CPURISCVState *``
    """
    soft = env.fp_status.float_exception_flags.value_()
    table = [(("float_flag_inexact",), 1), (("float_flag_underflow",), 2),
             (("float_flag_overflow",), 4), (("float_flag_divbyzero",), 8),
             (("float_flag_invalid",), 16)]  # fmt: skip
    return softfloat_exception_bits(env.prog_, soft, table)


def riscv_cpu_dump_state(cpu: Object) -> str:
    """
    The registers of a RISC-V vCPU as QEMU's ``riscv_cpu_dump_state()``
    prints them with ``CPU_DUMP_FPU`` (HMP ``info registers``): V (with the
    H extension), pc, the CSRs its list names that exist on this CPU, x0-x31
    and f0-f31 by their ABI names (QEMU's own tables), fcsr.

    :param cpu: ``RISCVCPU *``
    """
    prog = cpu.prog_
    env = cpu.env
    out = []
    if _ext(env, "H"):
        out.append(f" V      =   {env.virt_enabled.value_():d}\n")
    out.append(f" pc       {env.pc.value_() & _M64:016x}\n")
    for csrno in DUMP_CSRS:
        value = riscv_csrr(cpu, csrno)
        if value is not None:
            name = read_constant_string(prog, prog["csr_ops"][csrno].name.value_())
            out.append(f" {name:<8} {value:016x}\n")
    int_names = prog["riscv_int_regnames"]
    fpr_names = prog["riscv_fpr_regnames"]
    for i in range(32):
        name = read_constant_string(prog, int_names[i].value_())
        out.append(f" {name:<8} {env.gpr[i].value_() & _M64:016x}" + ("\n" if i % 4 == 3 else ""))
    fcsr = riscv_csrr(cpu, CSR_FCSR)
    if fcsr is not None:
        name = read_constant_string(prog, prog["csr_ops"][CSR_FCSR].name.value_())
        out.append(f" {name:<8} {fcsr:016x}\n")
    for i in range(32):
        name = read_constant_string(prog, fpr_names[i].value_())
        out.append(f" {name:<8} {env.fpr[i].value_() & _M64:016x}" + ("\n" if i % 4 == 3 else ""))
    return "".join(out)


def cpu_dump_state(cpu: Object) -> str:
    """
    HMP ``info registers`` of one vCPU, as this target's QEMU prints it.

    :param cpu: ``CPUState *``
    """
    return riscv_cpu_dump_state(riscv_cpu(cpu))
