"""
Monitor-style views
-------------------

The ``drgn_qemu.monitor`` module prints QEMU's state the way QEMU's human
monitor (HMP) does, from a core or a process whose monitor cannot answer.
"""

import math

from drgn import Program

from drgn_qemu.helpers.cpu import for_each_cpu
from drgn_qemu.helpers.ramblock import (
    for_each_ram_block,
    ramblock_max_length,
    ramblock_name,
    ramblock_used_length,
)

__all__ = ("hmp_info_cpus", "hmp_info_ramblock", "size_to_str")


def size_to_str(val: int) -> str:
    """QEMU's ``size_to_str()``: 4096 -> "4 KiB"."""
    suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    _, exponent = math.frexp(val / (1000.0 / 1024.0))
    i = (exponent - 1) // 10
    return f"{_g3(val / (1 << (i * 10)))} {suffixes[i]}B"


def _g3(x: float) -> str:
    # printf's "%0.3g".
    return f"{x:0.3g}"


def hmp_info_ramblock(prog: Program) -> str:
    """
    The RAM block table of HMP ``info ramblock`` (``ram_block_dump()``):
    name, page size, offset, used and total length, host address, read-only.
    """
    lines = [
        f"{'Block Name':>24} {'PSize':>8}  {'Offset':>18} {'Used':>18} {'Total':>18} "
        f"{'HVA':>18} {'RO':>3}"
    ]
    for block in for_each_ram_block(prog):
        page_size = block.page_size.value_() if block.type_.type.has_member("page_size") else 4096
        readonly = bool(block.mr.readonly) if block.mr else False
        lines.append(
            f"{ramblock_name(block):>24} {size_to_str(page_size):>8}  "
            f"0x{block.offset.value_():016x} 0x{ramblock_used_length(block):016x} "
            f"0x{ramblock_max_length(block):016x} 0x{block.host.value_():016x} "
            f"{'ro' if readonly else 'rw':>3}"
        )
    return "\n".join(lines) + "\n"


def hmp_info_cpus(prog: Program) -> str:
    """
    The vCPU list of HMP ``info cpus`` (``hmp_info_cpus()``): index and host
    thread; ``*`` marks the monitor's current CPU, the first one by default.
    """
    lines = []
    for i, cpu in enumerate(for_each_cpu(prog)):
        mark = "*" if i == 0 else " "
        lines.append(f"{mark} CPU #{cpu.cpu_index.value_()}: thread_id={cpu.thread_id.value_()}")
    return "\n".join(lines) + "\n"
