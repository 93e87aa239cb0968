# SPDX-License-Identifier: GPL-2.0-or-later
"""
RISC-V page tables
------------------

HMP ``info mem`` of a RISC-V vCPU (``target/riscv/monitor.c``): the leaf
mappings of its satp's Sv32, Sv39, Sv48 or Sv57 tables, merged where they
continue each other with the same attributes. (QEMU's ``dump-guest-memory``
takes the identity mapping on RISC-V: its vCPUs do not say whether paging
is on.)
"""

from typing import List

import numpy as np
from drgn import Object

from drgn_qemu.arch.riscv64 import riscv_cpu
from drgn_qemu.paging.base import GuestPhysReader

__all__ = ("hmp_info_mem_riscv",)

PGSHIFT = 12
PTE_PPN_SHIFT = 10
PTE_V, PTE_R, PTE_W, PTE_X, PTE_U, PTE_G, PTE_A, PTE_D = (1 << i for i in range(8))
#: satp MODE values (VM_1_10_*): levels, index bits, entry size.
_MODES = {1: (2, 10, 4), 8: (3, 9, 8), 9: (4, 9, 8), 10: (5, 9, 8)}
_M64 = (1 << 64) - 1


class _MemInfo:
    """QEMU's ``mem_info_svxx()`` state: the block being merged, the lines printed."""

    def __init__(self, phys: GuestPhysReader, va_bits: int, ptidxbits: int, ptesize: int) -> None:
        self.phys = phys
        self.va_bits = va_bits
        self.ptidxbits = ptidxbits
        self.ptesize = ptesize
        self.vbase = self.pbase = self.last_paddr = _M64
        self.last_size = 0
        self.last_attr = 0
        self.lines: List[str] = []

    def print_pte(self, vaddr: int, paddr: int, size: int, attr: int) -> None:
        """QEMU's ``print_pte()``: nothing for an address past the VA bits or no size."""
        if vaddr >= 1 << self.va_bits or not size & _M64:
            return
        if vaddr & (1 << (self.va_bits - 1)):
            vaddr |= _M64 ^ ((1 << self.va_bits) - 1)
        flags = "".join(c if attr & bit else "-" for c, bit in
                        (("r", PTE_R), ("w", PTE_W), ("x", PTE_X), ("u", PTE_U),
                         ("g", PTE_G), ("a", PTE_A), ("d", PTE_D)))  # fmt: skip
        self.lines.append(f"{vaddr:016x} {paddr & _M64:016x} {size & _M64:016x} {flags}\n")

    def walk_pte(self, base: int, start: int, level: int) -> None:
        """QEMU's ``walk_pte()``: *level* down to the leaves, from virtual *start*."""
        pgsize = 1 << (PGSHIFT + level * self.ptidxbits)
        count = 1 << self.ptidxbits
        raw = self.phys.read(base, count * self.ptesize)
        entries = np.frombuffer(raw, dtype="<u8" if self.ptesize == 8 else "<u4").tolist()
        last_start = _M64
        for pte in entries:
            paddr = (pte >> PTE_PPN_SHIFT) << PGSHIFT
            attr = pte & 0xFF
            if attr & PTE_V:
                if attr & (PTE_R | PTE_W | PTE_X):
                    if (
                        self.last_attr != attr
                        or (self.last_paddr + self.last_size) & _M64 != paddr
                        or (last_start + self.last_size) & _M64 != start
                    ):
                        size = self.last_paddr + self.last_size - self.pbase
                        self.print_pte(self.vbase, self.pbase, size, self.last_attr)
                        self.vbase, self.pbase, self.last_attr = start, paddr, attr
                    last_start = start
                    self.last_paddr, self.last_size = paddr, pgsize
                elif level > 0:
                    self.walk_pte(paddr, start, level - 1)
            start = (start + pgsize) & _M64


def hmp_info_mem_riscv(cpu: Object, phys: GuestPhysReader) -> str:
    """
    HMP ``info mem`` of a RISC-V vCPU (``hmp_info_mem()``).

    :param cpu: ``CPUState *``
    """
    rcpu = riscv_cpu(cpu)
    env = rcpu.env
    if rcpu.type_.type.has_member("cfg") and rcpu.cfg.type_.has_member("mmu"):
        mmu = bool(rcpu.cfg.mmu.value_())
    else:  # QEMU 7.2: a feature bit
        mmu = bool(env.features.value_() >> env.prog_["RISCV_FEATURE_MMU"].value_() & 1)
    if not mmu:
        return "S-mode MMU unavailable\n"
    satp = env.satp.value_() & _M64
    rv32 = env.misa_mxl.value_() == env.prog_["MXL_RV32"].value_()
    mode = satp >> 31 if rv32 else satp >> 60
    if not mode:
        return "No translation or protection\n"
    ppn = satp & ((1 << 22) - 1) if rv32 else satp & ((1 << 44) - 1)
    if mode not in _MODES:  # QEMU asserts; a damaged satp is not a reason to stop
        return f"unknown satp mode {mode}\n"
    levels, ptidxbits, ptesize = _MODES[mode]
    m = _MemInfo(phys, PGSHIFT + levels * ptidxbits, ptidxbits, ptesize)
    m.lines += ["vaddr            paddr            size             attr\n",
                "---------------- ---------------- ---------------- -------\n"]  # fmt: skip
    m.walk_pte(ppn << PGSHIFT, 0, levels - 1)
    m.print_pte(m.vbase, m.pbase, m.last_paddr + m.last_size - m.pbase, m.last_attr)
    return "".join(m.lines)
