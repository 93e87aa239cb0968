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

from typing import Callable, Iterator, List, Tuple

import numpy as np
from drgn import Object

from drgn_qemu.arch.x86_64 import HF_LMA_MASK, HF_SMM_MASK, x86_cpu
from drgn_qemu.mapping import MemoryMappingList
from drgn_qemu.paging.base import GuestPhysReader, IoRegions

__all__ = (
    "for_each_x86_page",
    "hmp_info_mem_x86",
    "hmp_info_tlb_x86",
    "x86_cpu_get_memory_mapping",
    "x86_cpu_paging_enabled",
    "x86_get_a20_mask",
)

# Page table entry bits (target/i386/cpu.h).
PG_PRESENT_MASK = 1 << 0
PG_RW_MASK = 1 << 1
PG_USER_MASK = 1 << 2
PG_PWT_MASK = 1 << 3
PG_PCD_MASK = 1 << 4
PG_ACCESSED_MASK = 1 << 5
PG_DIRTY_MASK = 1 << 6
PG_PSE_MASK = 1 << 7
PG_GLOBAL_MASK = 1 << 8
PG_NX_MASK = 1 << 63
CR0_PG_MASK = 1 << 31
CR4_PSE_MASK = 1 << 4
CR4_PAE_MASK = 1 << 5
CR4_LA57_MASK = 1 << 12
#: PLM4_ADDR_MASK: bits 51:12.
PLM4_ADDR_MASK = 0xFFFFFFFFFF000
_M64 = (1 << 64) - 1
_HMP_ADDR = 0x3FFFFFFFFF000
_PROT = PG_USER_MASK | PG_RW_MASK | PG_PRESENT_MASK


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
    if not x86_cpu_paging_enabled(cpu):
        return
    env = x86_cpu(cpu).env
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
        yield (pte & ~0xFFF) & ~PG_NX_MASK & _M64, line | (i << 12), 1 << 12


def _walk_pte2(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pte in w.table(addr, 1024, 4):
        yield pte & ~0xFFF & 0xFFFFFFFF, line | (i << 12), 1 << 12


_Walker = Callable[[_Walk, int, int], Iterator[Tuple[int, int, int]]]


def _walk_large(
    w: _Walk, addr: int, line: int, shift: int, walk_next: _Walker
) -> Iterator[Tuple[int, int, int]]:
    """A 64-bit table whose entries map ``1 << shift`` bytes with PS set
    (QEMU's walk_pde() and walk_pdpe()), or point at the next level."""
    for i, entry in w.table(addr, 512, 8):
        line_addr = line | (i << shift)
        if entry & PG_PSE_MASK:  # a 2 MB or 1 GB page
            yield (entry & ~((1 << shift) - 1)) & ~PG_NX_MASK & _M64, line_addr, 1 << shift
            continue
        yield from walk_next(w, (entry & PLM4_ADDR_MASK) & w.a20, line_addr)


def _walk_pde(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    return _walk_large(w, addr, line, 21, _walk_pte)


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
    return _walk_large(w, addr, line, 30, _walk_pde)


def _walk_pml4e(w: _Walk, addr: int, line: int) -> Iterator[Tuple[int, int, int]]:
    for i, pml4e in w.table(addr, 512, 8):
        yield from _walk_pdpe(w, (pml4e & PLM4_ADDR_MASK) & w.a20, line | (i << 39))


def _walk_pml5e(w: _Walk, addr: int) -> Iterator[Tuple[int, int, int]]:
    for i, pml5e in w.table(addr, 512, 8):
        line = (0x7F << 57) | (i << 48)
        yield from _walk_pml4e(w, (pml5e & PLM4_ADDR_MASK) & w.a20, line)


# HMP's views (target/i386/monitor.c) walk as QEMU's monitor does: no A20
# mask, physical addresses cut to bits 49:12 (_HMP_ADDR), entries read one
# page table at a time from the system memory (zeros where there is no RAM).


def _hmp_table(phys: GuestPhysReader, addr: int, entries: int, size: int) -> List[int]:
    raw = phys.read(addr & _M64, entries * size)
    return np.frombuffer(raw, dtype="<u8" if size == 8 else "<u4").tolist()


def _addr_canonical(cr4: int, addr: int) -> int:
    """QEMU's ``addr_canonical()``: sign-extend a linear address from bit 56 or 47."""
    bit = 56 if cr4 & CR4_LA57_MASK else 47
    return addr | (_M64 ^ ((1 << (bit + 1)) - 1)) if addr & (1 << bit) else addr


def _tlb_pages(env: Object, phys: GuestPhysReader) -> Iterator[Tuple[int, int, int]]:
    """``(virtual address, entry, mask)`` of each page ``info tlb`` prints, in its order."""
    cr3, cr4 = env.cr[3].value_(), env.cr[4].value_()
    if not cr4 & CR4_PAE_MASK:
        for l1, pde in enumerate(_hmp_table(phys, cr3 & ~0xFFF & 0xFFFFFFFF, 1024, 4)):
            if not pde & PG_PRESENT_MASK:
                continue
            if pde & PG_PSE_MASK and cr4 & CR4_PSE_MASK:
                yield l1 << 22, pde, _M64 ^ ((1 << 21) - 1)
                continue
            for l2, pte in enumerate(_hmp_table(phys, pde & ~0xFFF, 1024, 4)):
                if pte & PG_PRESENT_MASK:
                    yield (l1 << 22) + (l2 << 12), pte & ~PG_PSE_MASK, _M64 ^ 0xFFF
        return
    if not env.hflags.value_() & HF_LMA_MASK:
        for l1, pdpe in enumerate(_hmp_table(phys, cr3 & ~0x1F, 4, 8)):
            if pdpe & PG_PRESENT_MASK:
                # 2 MiB pages masked to 1 MiB: QEMU's tlb_info_pae32().
                large, small = _M64 ^ ((1 << 20) - 1), _M64 ^ 0xFFF
                yield from _tlb_pd(phys, l1 << 30, pdpe & _HMP_ADDR, large, small)
        return
    roots = [(0, cr3 & _HMP_ADDR)]
    if cr4 & CR4_LA57_MASK:
        roots = [(l0 << 48, e & _HMP_ADDR)
                 for l0, e in enumerate(_hmp_table(phys, cr3 & _HMP_ADDR, 512, 8))
                 if e & PG_PRESENT_MASK]  # fmt: skip
    for base, pml4 in roots:
        for l1, pml4e in enumerate(_hmp_table(phys, pml4, 512, 8)):
            if not pml4e & PG_PRESENT_MASK:
                continue
            for l2, pdpe in enumerate(_hmp_table(phys, pml4e & _HMP_ADDR, 512, 8)):
                if not pdpe & PG_PRESENT_MASK:
                    continue
                line = base + (l1 << 39) + (l2 << 30)
                if pdpe & PG_PSE_MASK:
                    yield line, pdpe, 0x3FFFFC0000000
                    continue
                large, small = 0x3FFFFFFE00000, _HMP_ADDR
                yield from _tlb_pd(phys, line, pdpe & _HMP_ADDR, large, small)


def _tlb_pd(
    phys: GuestPhysReader, line: int, pd: int, large: int, small: int
) -> Iterator[Tuple[int, int, int]]:
    """A page directory's pages (PAE and IA-32e), masked with *large* or *small*."""
    for l3, pde in enumerate(_hmp_table(phys, pd, 512, 8)):
        if not pde & PG_PRESENT_MASK:
            continue
        if pde & PG_PSE_MASK:
            yield line + (l3 << 21), pde, large
            continue
        for l4, pte in enumerate(_hmp_table(phys, pde & _HMP_ADDR, 512, 8)):
            if pte & PG_PRESENT_MASK:
                yield line + (l3 << 21) + (l4 << 12), pte & ~PG_PSE_MASK, small


def hmp_info_tlb_x86(cpu: Object, phys: GuestPhysReader) -> str:
    """
    HMP ``info tlb`` of an x86 vCPU (``hmp_info_tlb()``): each mapped page,
    its physical address and its flags (NX, global, large, dirty, accessed,
    cache disabled, write-through, user, writable).

    :param cpu: ``CPUState *``
    """
    if not x86_cpu_paging_enabled(cpu):
        return "PG disabled\n"
    env = x86_cpu(cpu).env
    cr4 = env.cr[4].value_()
    flags = ((PG_NX_MASK, "X"), (PG_GLOBAL_MASK, "G"), (PG_PSE_MASK, "P"),
             (PG_DIRTY_MASK, "D"), (PG_ACCESSED_MASK, "A"), (PG_PCD_MASK, "C"),
             (PG_PWT_MASK, "T"), (PG_USER_MASK, "U"), (PG_RW_MASK, "W"))  # fmt: skip
    lines = []
    for vaddr, pte, mask in _tlb_pages(env, phys):
        bits = "".join(c if pte & m else "-" for m, c in flags)
        lines.append(f"{_addr_canonical(cr4, vaddr):016x}: {pte & mask:016x} {bits}\n")
    return "".join(lines)


def _mem_events(env: Object, phys: GuestPhysReader) -> Iterator[Tuple[int, int]]:
    """
    The ``(end, prot)`` calls of ``mem_print()`` that ``info mem`` makes, in
    order (an entry's start and its protection ANDed down the levels), then
    the flush at the top of the address space. 5-level paging is walked as
    the architecture says; QEMU's ``mem_info_la57()`` tests two entries'
    present bits the wrong way round.
    """
    cr3, cr4 = env.cr[3].value_(), env.cr[4].value_()
    if not cr4 & CR4_PAE_MASK:
        pse = bool(cr4 & CR4_PSE_MASK)
        yield from _mem_level(phys, cr3 & ~0xFFF & 0xFFFFFFFF, [22, 12], 0, _PROT, 4, pse)
        yield 1 << 32, 0
    elif not env.hflags.value_() & HF_LMA_MASK:
        for l1, pdpe in enumerate(_hmp_table(phys, cr3 & ~0x1F, 4, 8)):
            if not pdpe & PG_PRESENT_MASK:
                yield l1 << 30, 0
                continue
            # PAE: the PDPTE's bits are not ANDed in, as QEMU's mem_info_pae32().
            yield from _mem_level(phys, pdpe & _HMP_ADDR, [21, 12], l1 << 30, _PROT, 8, True)
        yield 1 << 32, 0
    elif cr4 & CR4_LA57_MASK:
        yield from _mem_level(phys, cr3 & _HMP_ADDR, [48, 39, 30, 21, 12], 0, _PROT, 8, True)
        yield 1 << 57, 0
    else:
        yield from _mem_level(phys, cr3 & _HMP_ADDR, [39, 30, 21, 12], 0, _PROT, 8, True)
        yield 1 << 48, 0


def _mem_level(
    phys: GuestPhysReader, table: int, shifts: List[int], base: int, prot: int, size: int,
    pse: bool,
) -> Iterator[Tuple[int, int]]:  # fmt: skip
    """One table's ``mem_print()`` calls: *shifts* from this level down."""
    shift, rest = shifts[0], shifts[1:]
    entries = _hmp_table(phys, table, 1024 if size == 4 else 512, size)
    for i, e in enumerate(entries):
        end = base + (i << shift)
        if not e & PG_PRESENT_MASK:
            yield end, 0
        elif not rest or (e & PG_PSE_MASK and pse and shift <= 30):
            yield end, e & prot & _PROT
        else:
            addr = (e & ~0xFFF & 0xFFFFFFFF) if size == 4 else e & _HMP_ADDR
            # Each entry's protection is ANDed down to the leaf, as QEMU's
            # mem_info_*() do (a 32-bit or PAE PTE with its PDE only).
            yield from _mem_level(phys, addr, rest, end, e & prot, size, pse)


def hmp_info_mem_x86(cpu: Object, phys: GuestPhysReader) -> str:
    """
    HMP ``info mem`` of an x86 vCPU (``hmp_info_mem()``): the virtual
    ranges mapped, merged where their protection (user, read, write) is the
    same.

    :param cpu: ``CPUState *``
    """
    if not x86_cpu_paging_enabled(cpu):
        return "PG disabled\n"
    env = x86_cpu(cpu).env
    cr4 = env.cr[4].value_()
    lines = []
    start, last = -1, 0
    for end, prot in _mem_events(env, phys):
        if prot == last:
            continue
        if start != -1:
            lines.append(
                f"{_addr_canonical(cr4, start):016x}-{_addr_canonical(cr4, end):016x} "
                f"{_addr_canonical(cr4, end - start):016x} "
                f"{'u' if last & PG_USER_MASK else '-'}r{'w' if last & PG_RW_MASK else '-'}\n"
            )
        start = end if prot else -1
        last = prot
    return "".join(lines)
