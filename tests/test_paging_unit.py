"""
The mapping list against a line-by-line transliteration of QEMU's
``system/memory_mapping.c`` (a list scanned from its head), on random walks
with repeats, overlaps, conflicting offsets and pages at the top of the
address space; and the ELF PT_LOADs QEMU's ``get_offset_range()`` gives.
"""

import io
import random
from typing import List, Optional, Tuple

from elftools.elf.elffile import ELFFile

from drgn_qemu.elf import ELFCLASS64, ELFDATA2LSB, ElfCoreLayout, LoadSegment
from drgn_qemu.mapping import MemoryMappingList
from drgn_qemu.ranges import GuestRange

M64 = (1 << 64) - 1


class QemuList:
    """QEMU's MemoryMappingList, as its C reads: [phys, virt, length] entries."""

    def __init__(self) -> None:
        self.head: List[List[int]] = []
        self.last: Optional[List[int]] = None

    def create(self, phys: int, virt: int, length: int) -> None:
        m = [phys, virt, length]
        self.last = m
        for i, p in enumerate(self.head):
            if p[0] >= phys:
                self.head.insert(i, m)
                return
        self.head.append(m)

    def add_merge_sorted(self, phys: int, virt: int, length: int) -> None:
        if not self.head:
            self.create(phys, virt, length)
            return
        last = self.last
        if last is not None and phys == last[0] + last[2] and virt == (last[1] + last[2]) & M64:
            last[2] += length
            return
        for m in self.head:
            if phys == m[0] + m[2] and virt == (m[1] + m[2]) & M64:
                m[2] += length
                self.last = m
                return
            if phys + length < m[0]:
                break
            if not (phys + length < m[0] or phys >= m[0] + m[2]):
                if (virt - m[1]) & M64 != (phys - m[0]) & M64:
                    continue
                if virt < m[1]:
                    m[2] += m[1] - virt
                    m[1] = virt
                if (virt + length) & M64 > (m[1] + m[2]) & M64:
                    m[2] = (virt + length - m[1]) & M64
                self.last = m
                return
        self.create(phys, virt, length)


def test_merging_equals_qemus_list() -> None:
    rng = random.Random(1)
    for _ in range(200):
        ours, theirs = MemoryMappingList(), QemuList()
        for _ in range(rng.randrange(1, 120)):
            size = rng.choice([1 << 12, 1 << 12, 1 << 21])
            phys = rng.randrange(0, 64) << 12
            virt = rng.choice([phys, phys + (0xFFFF << 48), rng.randrange(0, 64) << 12,
                               M64 + 1 - size, (0xFFFF << 48) | rng.randrange(0, 64) << 12])  # fmt: skip
            ours.add_merge_sorted(phys, virt, size)
            theirs.add_merge_sorted(phys, virt, size)
        assert [[m.phys_addr, m.virt_addr, m.length] for m in ours] == theirs.head


def _pt_loads(
    segments: List[GuestRange], loads: List[LoadSegment]
) -> Tuple[List[Tuple[int, int, int, int, int]], int]:
    """The PT_LOADs (offset, vaddr, paddr, filesz, memsz) pyelftools reads from
    the layout's header, and the offset where its data begins."""
    layout = ElfCoreLayout(62, ELFCLASS64, ELFDATA2LSB, b"", segments, loads=loads)
    data = layout.header()
    elf = ELFFile(io.BytesIO(data + bytes(layout.file_size - len(data))))
    got = [(s["p_offset"], s["p_vaddr"], s["p_paddr"], s["p_filesz"], s["p_memsz"])
           for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]  # fmt: skip
    return got, layout.data_offset


def test_offset_range_and_pt_loads() -> None:
    """PT_LOADs point into the segments; one outside them has p_offset -1, p_filesz 0."""
    segments = [GuestRange(0, 0x10000, 0), GuestRange(0x100000, 0x4000, 0)]
    loads = [LoadSegment(0x1000, 0xFFFF000000001000, 0x2000),
             LoadSegment(0xF000, 0, 0x3000),  # runs past the first segment
             LoadSegment(0x50000, 0x5000, 0x1000)]  # fmt: skip
    got, base = _pt_loads(segments, loads)
    assert got == [
        (base + 0x1000, 0xFFFF000000001000, 0x1000, 0x2000, 0x2000),
        (base + 0xF000, 0xF000, 0xF000, 0x1000, 0x3000),
        (M64, 0x5000, 0x50000, 0, 0x1000),
    ]


def test_segment_bound_pt_loads_keep_their_values() -> None:
    """
    PT_LOADs bound to their own segments (add-vmcoreinfo rewriting a
    /proc/vmcore, whose kernel-text PT_LOAD overlaps the RAM one in
    physical addresses) keep each offset, size and p_vaddr, 0 included.
    """
    segments = [GuestRange(0x1000000, 0x1000, 0), GuestRange(0x1000000, 0x4000, 0)]
    loads = [LoadSegment(0x1000000, 0xFFFFFFFF81000000, 0x1000, 0),
             LoadSegment(0x1000000, 0, 0x4000, 1)]  # fmt: skip
    got, base = _pt_loads(segments, loads)
    assert got == [
        (base, 0xFFFFFFFF81000000, 0x1000000, 0x1000, 0x1000),
        (base + 0x1000, 0, 0x1000000, 0x4000, 0x4000),
    ]
