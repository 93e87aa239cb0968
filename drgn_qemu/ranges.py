# SPDX-License-Identifier: GPL-2.0-or-later
"""
Guest ranges
------------

The ``drgn_qemu.ranges`` module holds the one type the dump path passes
around for a piece of guest memory: where it is in the guest
(guest-physical), and where its bytes are in QEMU (host-virtual), from
planning to the file formats' writers. (QEMU's own view,
:class:`~drgn_qemu.helpers.memory_mapping.GuestPhysBlock`, is what the
plan starts from.)
"""

from dataclasses import dataclass

__all__ = ("MAX_GUEST_PHYS_ADDR", "GuestRange")

#: Guest-physical memory ends below this: 52 bits is the widest physical
#: address of any architecture QEMU emulates (x86-64, AArch64 with LPA).
MAX_GUEST_PHYS_ADDR = 1 << 52


@dataclass(frozen=True)
class GuestRange:
    """Guest-physical memory ``[paddr, paddr + size)``, held by QEMU at *host_addr*."""

    #: First guest-physical address.
    paddr: int
    #: Bytes.
    size: int
    #: Host-virtual address of *paddr* in the QEMU process.
    host_addr: int
    #: Address of the ``MemoryRegion`` backing it (0 if not known).
    mr: int = 0
    #: Name of that memory region.
    mr_name: str = ""

    @property
    def end(self) -> int:
        """The guest-physical address just past the range."""
        return self.paddr + self.size
