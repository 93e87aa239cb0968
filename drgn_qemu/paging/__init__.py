# SPDX-License-Identifier: GPL-2.0-or-later
"""
Guest page tables
-----------------

QEMU's ``dump-guest-memory`` with ``paging=true`` walks each vCPU's page
tables (``qemu_get_guest_memory_mapping()``). Only x86 vCPUs say whether
paging is on (``get_paging_enabled``): on every other target QEMU takes the
identity mapping of the guest-physical blocks, as it does for an x86 guest
whose vCPUs all run without paging. One module here per target that walks.

Guest page tables are read from the core, never trusted: each table is read
once, whole, loops are bounded by the table sizes, and memory that is not
guest RAM reads as zeros (QEMU's unassigned memory), so no entry is present.
"""

from typing import List

from drgn import Program

from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.memory_mapping import GuestPhysBlock
from drgn_qemu.mapping import MemoryMappingList
from drgn_qemu.paging.base import GuestPhysReader, IoRegions

__all__ = ("GuestPhysReader", "IoRegions", "qemu_get_guest_memory_mapping")


def qemu_get_guest_memory_mapping(
    prog: Program, arch: str, blocks: List[GuestPhysBlock], phys: GuestPhysReader
) -> MemoryMappingList:
    """
    QEMU's ``qemu_get_guest_memory_mapping()``: from the first vCPU with
    paging on, each vCPU's mappings (a vCPU without paging adds none);
    with none, the identity mapping of *blocks*.

    :param arch: the guest architecture's name (``--arch``)
    """
    mappings = MemoryMappingList()
    cpus = list(for_each_cpu(prog))
    if arch == "x86_64":
        from drgn_qemu.paging.x86_64 import x86_cpu_get_memory_mapping, x86_cpu_paging_enabled

        first = next((i for i, cpu in enumerate(cpus) if x86_cpu_paging_enabled(cpu)), None)
        if first is not None:
            io = IoRegions(prog)
            for cpu in cpus[first:]:
                x86_cpu_get_memory_mapping(cpu, mappings, phys, io)
            return mappings
    for block in blocks:
        mappings.create_new_memory_mapping(
            block.target_start, block.target_start, block.target_end - block.target_start
        )
    return mappings
