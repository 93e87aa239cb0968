# SPDX-License-Identifier: GPL-2.0-or-later
"""
x86 page tables
---------------

QEMU's ``x86_cpu_get_memory_mapping()`` (``target/i386/arch_memory_mapping.c``):
the mappings of one vCPU from its CR3, in 32-bit, PAE, 4-level or 5-level
paging, with the A20 mask, as ``dump-guest-memory`` with ``paging=true``
walks them; its quirks kept (4-level virtual addresses all carry bits
63:48, 5-level ones bits 63:57, whatever the table index).
"""

from typing import Iterator, Tuple

import numpy as np
from drgn import Object

from drgn_qemu.arch.x86_64 import HF_LMA_MASK, x86_cpu
from drgn_qemu.mapping import MemoryMappingList
from drgn_qemu.paging.base import GuestPhysReader, IoRegions

__all__ = (
    "for_each_x86_page",
    "x86_cpu_get_memory_mapping",
    "x86_cpu_paging_enabled",
    "x86_get_a20_mask",
)

PG_PRESENT_MASK = 1 << 0
PG_PSE_MASK = 1 << 7
CR0_PG_MASK = 1 << 31
CR4_PSE_MASK = 1 << 4
CR4_PAE_MASK = 1 << 5
CR4_LA57_MASK = 1 << 12
HF_SMM_MASK = 1 << 19
#: PLM4_ADDR_MASK: bits 51:12.
PLM4_ADDR_MASK = 0xFFFFFFFFFF000
_NX = 1 << 63
_M64 = (1 << 64) - 1


def x86_cpu_paging_enabled(cpu: Object) -> bool:
    """
    QEMU's ``x86_cpu_get_paging_enabled()``: CR0.PG.

    :param cpu: ``CPUState *``
    """
    return bool(x86_cpu(cpu).env.cr[0].value_() & CR0_PG_MASK)


def x86_get_a20_mask(env: Object) -> int:
    """
    QEMU's ``x86_get_a20_mask()``, an ``int32_t`` sign-extended as the walk
    uses it on 64-bit addresses: all ones in SMM, else ``env->a20_mask``.

    :param env: ``CPUX86State *``
    """
    if env.hflags.value_() & HF_SMM_MASK:
        return _M64
    mask = env.a20_mask.value_() & 0xFFFFFFFF
    return mask | (_M64 ^ 0xFFFFFFFF) if mask & 0x80000000 else mask


class _Walk:
    """One vCPU's walk: tables read whole, present entries only."""

    def __init__(self, phys: GuestPhysReader, a20: int) -> None:
        self.phys = phys
        self.a20 = a20

    def table(self, addr: int, entries: int, size: int) -> Iterator[Tuple[int, int]]:
        """``(index, entry)`` of the present entries of the table at *addr*."""
        # QEMU masks each entry's address with A20; a table never crosses
        # bit 20 (it is aligned to its size), so one masked read is the same.
        raw = self.phys.read(addr & self.a20, entries * size)
        words = np.frombuffer(raw, dtype="<u8" if size == 8 else "<u4")
        for i in np.flatnonzero(words & PG_PRESENT_MASK).tolist():
            yield i, int(words[i])


def for_each_x86_page(cpu: Object, phys: GuestPhysReader) -> Iterator[Tuple[int, int, int]]:
    """
    The pages a vCPU maps, in its page tables' order, as QEMU's walk finds
    them (I/O pages included): ``(physical address, virtual address, size)``.
    Nothing if paging is off.

    :param cpu: ``CPUState *``
    """
    env = x86_cpu(cpu).env
    if not env.cr[0].value_() & CR0_PG_MASK:
        return
    w = _Walk(phys, x86_get_a20_mask(env))
    cr3, cr4 = env.cr[3].value_(), env.cr[4].value_()
    if cr4 & CR4_PAE_MASK:
        if env.hflags.value_() & HF_LMA_MASK:
            root = (cr3 & PLM4_ADDR_MASK) & w.a20
            if cr4 & CR4_LA57_MASK:
                yield from _walk_pml5e(w, root)
            else:
                yield from _walk_pml4e(w, root, 0xFFFF << 48)
        else:
            yield from _walk_pdpe2(w, (cr3 & ~0x1F) & w.a20)
    else:
        yield from _walk_pde2(w, (cr3 & ~0xFFF) & w.a20, bool(cr4 & CR4_PSE_MASK))


def x86_cpu_get_memory_mapping(
    cpu: Object,
    mappings: MemoryMappingList,
    phys: GuestPhysReader,
    io: IoRegions,
) -> None:
    """
    QEMU's ``x86_cpu_get_memory_mapping()``: add each page the vCPU maps
    to *mappings*, but pages that start in I/O.

    :param cpu: ``CPUState *``
    """
    for paddr, vaddr, size in for_each_x86_page(cpu, phys):
        if not io.is_io(paddr):
            mappings.add_merge_sorted(paddr, vaddr, size)


def _walk_pte(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pte in w.table(addr, 512, 8):
        yield (pte & ~0xFFF) & ~_NX & _M64, line | (i << 12), 1 << 12


def _walk_pte2(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pte in w.table(addr, 1024, 4):
        yield pte & ~0xFFF & 0xFFFFFFFF, line | (i << 12), 1 << 12


def _walk_pde(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pde in w.table(addr, 512, 8):
        line_addr = line | (i << 21)
        if pde & PG_PSE_MASK:  # 2 MB page
            yield (pde & ~0x1FFFFF) & ~_NX & _M64, line_addr, 1 << 21
            continue
        yield from _walk_pte(w, (pde & PLM4_ADDR_MASK) & w.a20, line_addr)


def _walk_pde2(w: _Walk, addr: int, pse: bool) -> Iterator[Tuple[int, int, int]]:
    for i, pde in w.table(addr, 1024, 4):
        line_addr = i << 22
        if pde & PG_PSE_MASK and pse:  # 4 MB page: bits 39:32 are PDE bits 20:13
            high = (pde & 0x1FE000) << 19
            yield (pde & ~0x3FFFFF & 0xFFFFFFFF) | high, line_addr, 1 << 22
            continue
        yield from _walk_pte2(w, (pde & ~0xFFF & 0xFFFFFFFF) & w.a20, line_addr)


def _walk_pdpe2(w: _Walk, addr: int) -> Iterator[Tuple[int, int, int]]:
    for i, pdpe in w.table(addr, 4, 8):
        yield from _walk_pde(w, (pdpe & ~0xFFF & _M64) & w.a20, i << 30)


def _walk_pdpe(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pdpe in w.table(addr, 512, 8):
        line_addr = line | (i << 30)
        if pdpe & PG_PSE_MASK:  # 1 GB page
            yield (pdpe & ~0x3FFFFFFF) & ~_NX & _M64, line_addr, 1 << 30
            continue
        yield from _walk_pde(w, (pdpe & PLM4_ADDR_MASK) & w.a20, line_addr)


def _walk_pml4e(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pml4e in w.table(addr, 512, 8):
        yield from _walk_pdpe(w, (pml4e & PLM4_ADDR_MASK) & w.a20, line | (i << 39))


def _walk_pml5e(w: _Walk, addr: int) -> Iterator[Tuple[int, int, int]]:
    for i, pml5e in w.table(addr, 512, 8):
        line = (0x7F << 57) | (i << 48)
        yield from _walk_pml4e(w, (pml5e & PLM4_ADDR_MASK) & w.a20, line)
