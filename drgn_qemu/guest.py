# SPDX-License-Identifier: GPL-2.0-or-later
"""
The guest's kernel, in place
----------------------------

The ``drgn_qemu.guest`` module turns a QEMU program (a core, or a live
process) into a :class:`drgn.Program` of the guest's Linux kernel, with no
vmcore written: :func:`guest_program`. What a dump would write comes from
the same plan (:func:`drgn_qemu.dump.plan_dump`): each guest-physical range
is a physical memory segment of the guest program, read where the plan says
its bytes are (the core, the file QEMU mapped it from, a ``--ram-file``, the
live process) only when drgn reads it; the vCPUs' registers and the guest
kernel's VMCOREINFO are the notes a vmcore would carry, handed to drgn as an
ELF core of notes alone, in memory (a memfd). drgn then walks the guest's
page tables itself.
"""

import os
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import drgn
from drgn import Program

from drgn_qemu.dump import DumpPlan, plan_dump
from drgn_qemu.elf import ELFCLASS64, ELFDATA2LSB, ElfCoreLayout
from drgn_qemu.elffile import read_build_id
from drgn_qemu.errors import DebugInfoError, DrgnQemuError, UnsupportedError
from drgn_qemu.options import DumpOptions
from drgn_qemu.reader import MemoryFault, MemoryReader

__all__ = (
    "GUEST_ARCHITECTURES",
    "guest_plan",
    "guest_program",
    "GuestProgramError",
    "load_guest_debug_info",
)

#: The guests' ELF machines (as QEMU's dump chooses them) whose Linux
#: kernels drgn 0.3 debugs, walking their page tables (libdrgn's
#: ``linux_kernel_pgtable_iterator`` of each architecture): x86-64,
#: AArch64, 32-bit Arm, ppc64 and s390x. It has none for i386, RISC-V or
#: LoongArch.
GUEST_ARCHITECTURES = {
    62: drgn.Architecture.X86_64,
    183: drgn.Architecture.AARCH64,
    40: drgn.Architecture.ARM,
    21: drgn.Architecture.PPC64,
    22: drgn.Architecture.S390X,
}

#: ``Program.cache`` key of the plan a guest program reads through.
_PLAN = "drgn_qemu_guest_plan"


class GuestProgramError(DrgnQemuError):
    """The guest's kernel cannot be opened in drgn (no Linux kernel, an architecture drgn lacks)."""


def _architecture(plan: DumpPlan) -> drgn.Platform:
    arch = GUEST_ARCHITECTURES.get(plan.info.machine)
    if arch is None:
        raise UnsupportedError(
            f"drgn cannot debug the Linux kernel of this {plan.arch.name} guest (it walks the "
            "page tables of x86-64, AArch64, Arm, ppc64 and s390x kernels only); write a vmcore "
            "with drgn-qemu dump-guest-memory and open it with crash instead"
        )
    flags = drgn.PlatformFlags(0)
    if plan.info.elf_class == ELFCLASS64:
        flags |= drgn.PlatformFlags.IS_64_BIT
    if plan.info.endian == ELFDATA2LSB:
        flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return drgn.Platform(arch, flags)


def _reader_of(
    reader: MemoryReader, host_addr: int, paddr: int
) -> Callable[[int, int, int, bool], bytes]:
    """drgn's read function of one guest range: at its host address, through *reader*."""

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        try:
            return reader.read(host_addr + offset, count)
        except MemoryFault:
            raise drgn.FaultError(
                "guest RAM is not in the core or file that should hold it", paddr + offset
            ) from None

    return read


def _notes_core(plan: DumpPlan) -> int:
    """A memfd holding an ELF core with the plan's notes and no memory: vCPU registers, VMCOREINFO."""
    layout = plan.layout
    assert isinstance(layout, ElfCoreLayout)
    notes = ElfCoreLayout(
        plan.info.machine, plan.info.elf_class, plan.info.endian, layout.notes, []
    )
    fd = os.memfd_create("drgn-qemu-guest-notes", os.MFD_CLOEXEC)
    try:
        os.write(fd, notes.header())
    except BaseException:
        os.close(fd)
        raise
    return fd


def guest_program(
    prog: Program,
    options: Optional[DumpOptions] = None,
    reader: Optional[MemoryReader] = None,
    *,
    live: bool = False,
) -> Program:
    """
    Return a :class:`drgn.Program` of the Linux kernel of the guest of a
    QEMU program, reading guest RAM in place; load its debug info with
    :func:`load_guest_debug_info` (or drgn's own calls).

    :param prog: a QEMU core or process with QEMU's debug info loaded (see
        :func:`drgn_qemu.program.open_qemu_program`)
    :param options: as for a dump: ``vmcoreinfo`` (a file with the guest
        kernel's VMCOREINFO, where the guest has neither ``-device
        vmcoreinfo`` nor the page in RAM), ``ram_files``, ``skip_missing``
    :param reader: how to read QEMU's memory (see
        :func:`drgn_qemu.reader.open_reader`; default: through drgn)
    :param live: the guest runs on (a live QEMU not stopped): drgn's
        ``is_live``, and no vCPU registers (what the vCPUs' tasks run is
        not still long enough to unwind)
    :raises DrgnQemuError: as a dump does (guest RAM missing, damaged
        structures), and :class:`GuestProgramError` for a guest without a
        Linux kernel's VMCOREINFO; :class:`UnsupportedError` for an
        architecture drgn does not debug
    """
    plan = plan_dump(prog, options, reader)
    try:
        vmci = plan.vmcoreinfo
        if vmci is None:
            raise GuestProgramError(
                "no Linux kernel's VMCOREINFO in the guest (not a Linux guest, or its kernel "
                "was not up yet): give the kernel's with --vmcoreinfo FILE (its "
                "/sys/kernel/vmcoreinfo, or the text from a vmcore of it)"
            )
        guest = Program(_architecture(plan))
        if live:
            guest.set_linux_kernel_custom(vmci.text, True)
        else:
            fd = _notes_core(plan)
            guest.cache["drgn_qemu_guest_notes_fd"] = fd  # drgn reads the notes from it
            guest.set_core_dump(fd)
        read = plan.reader if plan.reader is not None else reader
        assert read is not None
        for seg in plan.segments:
            guest.add_memory_segment(
                seg.paddr, seg.size, _reader_of(read, seg.host_addr, seg.paddr), physical=True
            )
    except BaseException:
        plan.close()
        raise
    # The plan holds the readers (and the files they read) the segments use.
    guest.cache[_PLAN] = plan
    return guest


def guest_plan(guest: Program) -> DumpPlan:
    """The plan a program made by :func:`guest_program` reads guest RAM through."""
    return guest.cache[_PLAN]


def _kernel_names(guest: Program) -> Iterator[Tuple[str, str]]:
    plan = guest_plan(guest)
    fields = plan.vmcoreinfo.fields if plan.vmcoreinfo is not None else {}
    yield "release", fields.get("OSRELEASE", "?")
    yield "build ID", fields.get("BUILD-ID", "unknown")


def load_guest_debug_info(
    guest: Program, paths: Sequence[str] = (), default: bool = True
) -> List[str]:
    """
    Load the guest kernel's debug info: the files in *paths* (``vmlinux``,
    modules' ``.ko``), and with *default* drgn's standard finders (as drgn
    does for a vmcore: ``/usr/lib/debug``, ``/lib/modules``, debuginfod).
    Returns warnings (modules without debug info).

    :raises DebugInfoError: if a file does not exist, or the kernel's debug
        info is missing, saying plainly when a given ``vmlinux`` is not the
        guest's kernel (its build ID is not the one in VMCOREINFO)
    """
    for path in paths:
        if not os.path.exists(path):
            raise DebugInfoError(f"guest debug info file {path} does not exist")
    from drgn_qemu.program import drgn_logging_silenced

    with drgn_logging_silenced():
        try:
            guest.load_debug_info(list(paths), default=default)
        except drgn.MissingDebugInfoError:
            pass
    main = guest.main_module()
    names = dict(_kernel_names(guest))
    if main.wants_debug_file():
        wrong = []
        for path in paths:
            try:
                build_id = read_build_id(path)
            except (OSError, ValueError):
                continue
            if build_id is not None and build_id.hex() != names["build ID"]:
                wrong.append(f"{path} (build ID {build_id.hex()})")
        if wrong:
            raise DebugInfoError(
                f"{', '.join(wrong)} is not the guest's kernel: it runs Linux "
                f"{names['release']} (build ID {names['build ID']}); give that kernel's vmlinux "
                "with -g"
            )
        raise DebugInfoError(
            f"no debug info for the guest's kernel, Linux {names['release']} (build ID "
            f"{names['build ID']}): give its vmlinux with -g PATH (Debian: the "
            "linux-image-RELEASE-dbg package's /usr/lib/debug/boot/vmlinux-RELEASE)"
        )
    modules = [m for m in guest.modules() if isinstance(m, drgn.RelocatableModule)]
    missing = [m.name for m in modules if m.wants_debug_file()]
    if not missing:
        return []
    return [
        f"no debug info for {len(missing)} of the guest's {len(modules)} kernel modules "
        f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): give them with "
        "-g MODULE.ko"
    ]
