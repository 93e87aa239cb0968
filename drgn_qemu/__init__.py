# SPDX-License-Identifier: GPL-2.0-or-later
"""
drgn-qemu: guest memory and QEMU introspection from a QEMU core or process,
with drgn.
"""

__version__ = "0.1.0"
