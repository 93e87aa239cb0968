"""
``dump-guest-memory --paging`` against QMP's ``paging=true`` on the same
stopped guest, byte for byte: Linux guests with 2 vCPUs in 4-level paging
(QEMU 7.2, 10.0, 10.2), 5-level paging (``-cpu max,la57=on``, CR4.LA57
checked) and 32-bit PAE paging (Debian's 686-pae kernel), the whole memory
and a begin/length window; a guest still in its
firmware (no paging: QEMU's identity fallback). gdb, which knows nothing of
Linux, reads the guest kernel's release from our file as from QEMU's.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from elftools.elf.elffile import ELFFile
from harness import QemuGuest, drgn_qemu_command, qemu_binary
from linux_guest import boot_linux, fetch_kernel
from test_plugin import run_commands
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, elf_header, loads, notes

#: A window that cuts mappings at both ends (the kernel's image is above it).
BEGIN, LENGTH = 0x1234000, 0x3000000


@dataclass
class PagingCase:
    name: str
    binary: Path
    core: Path
    #: QMP's paging=true, whole and windowed.
    theirs: Path
    theirs_window: Path
    cr4: int
    vmlinux: Path
    release: str
    #: Booted with nokaslr: the kernel runs at its link address.
    nokaslr: bool = False
    #: HMP's 'info mem' and 'info tlb' of vCPU 0, then of vCPU 1.
    hmp: Tuple[str, ...] = ()


#: Each paging mode on each QEMU series: (name, QEMU series, (kernel series,
#: Debian architecture), -cpu, nokaslr). One guest runs its kernel at its
#: link address, for gdb as the README shows it.
CASES = [
    (f"qemu{series}-{name}", series, kernel, cpu, series == "10.0" and name == "linux6.1")
    for series in ("7.2", "10.0", "10.2")
    for name, kernel, cpu in (
        ("linux6.1", ("6.1", "amd64"), None),
        ("linux6.12", ("6.12", "amd64"), None),
        # 5-level paging: TCG's max CPU with LA57.
        ("linux6.12-la57", ("6.12", "amd64"), "max,la57=on"),
        # Debian's 686-pae kernel: 32-bit PAE paging.
        ("linux6.1-pae", ("6.1", "i386"), None),
    )
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c[0])
def paging_case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PagingCase]:
    name, series, kernel_series, cpu, nokaslr = request.param
    binary = qemu_binary(series)
    kernel = fetch_kernel(*kernel_series)
    work = tmp_path_factory.mktemp(name)
    extra = ["-cpu", cpu] if cpu else []
    # QEMU 7.2's multi-threaded TCG once ran a stale translation of a site the
    # 6.12 kernel had patched back from int3 (text_poke_bp), on the other
    # vCPU: "Oops: int3" in sched_clock_tick at boot. With one TCG thread the
    # two vCPUs take turns, and a patched page's translations are gone before
    # either runs again.
    accel = "tcg,thread=single" if series == "7.2" else "tcg"
    guest = boot_linux(binary, work, kernel, True, memory="512M", extra_args=extra, smp=2,
                       accel=accel, cmdline="nokaslr" if nokaslr else "")  # fmt: skip
    try:
        guest.stop()
        cr4 = int(re.search(r"CR4=([0-9a-f]+)", guest.hmp("info registers")).group(1), 16)  # type: ignore[union-attr]
        hmp = []
        for cpu in (0, 1):
            # On a 5-level guest QEMU's 'info mem' walks every absent entry
            # (see test_mem_and_tlb_equal_hmp) for 37 s, to print nothing:
            # vCPU 0's shows that, vCPU 1's is not asked for.
            unasked = name.endswith("la57") and cpu == 1
            hmp += [
                "" if unasked else guest.hmp("info mem", cpu=cpu),
                guest.hmp("info tlb", cpu=cpu),
            ]
        hmp = [h.replace("\r\n", "\n") for h in hmp]
        theirs = guest.dump(work / "qemu.vmcore", paging=True)
        window = guest.dump(work / "qemu-window.vmcore", paging=True, begin=BEGIN, length=LENGTH)
        core = guest.gcore(work / "qemu.core")
    finally:
        guest.close()
    yield PagingCase(name, binary, core, theirs, window, cr4, kernel.vmlinux, kernel.release,
                     nokaslr, tuple(hmp))  # fmt: skip
    for p in work.iterdir():
        p.unlink()


def _ours(c: PagingCase, out: Path, *args: str) -> Path:
    r = run([*drgn_qemu_command(), "dump-guest-memory", "--paging", *args, "-c", str(c.core),
             "-s", str(c.binary), str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_paging_equals_qmp(paging_case: PagingCase, tmp_path: Path) -> None:
    c = paging_case
    la57 = bool(c.cr4 & (1 << 12))
    assert la57 == c.name.endswith("la57")
    ours = _ours(c, tmp_path / "ours.vmcore")
    assert_same_file_but_ehsize(ours, c.theirs)
    mapped = loads(ours)
    # Many mappings, with virtual addresses: the page walk happened.
    assert len(mapped) > 20 and any(x.vaddr != x.paddr for x in mapped)
    if c.name.endswith("pae"):  # PAE without long mode: 32-bit addresses
        # EM_386 (not in long mode), in ELFCLASS64 as QEMU writes it: the BIOS
        # block ends at 4 GiB, past 32 bits.
        assert c.cr4 & (1 << 5) and elf_header(ours)["e_machine"] == "EM_386"
        assert all(x.vaddr < 1 << 32 for x in mapped)
    else:
        # QEMU's quirk: every 4-level address carries bits 63:48, 5-level 63:57.
        top = 0x7F << 57 if la57 else 0xFFFF << 48
        assert all(x.vaddr & top == top for x in mapped if x.vaddr != x.paddr)


def test_paging_window_equals_qmp(paging_case: PagingCase, tmp_path: Path) -> None:
    c = paging_case
    ours = _ours(c, tmp_path / "ours.vmcore", "--begin", hex(BEGIN), "--length", hex(LENGTH))
    assert_same_file_but_ehsize(ours, c.theirs_window)
    assert all(BEGIN <= x.paddr < BEGIN + LENGTH for x in loads(ours))


def test_gdb_reads_the_kernel(paging_case: PagingCase, tmp_path: Path) -> None:
    """
    gdb, with the kernel's symbols only, reads its variables through the
    mappings, from ours as from QEMU's: ``gdb vmlinux VMCORE`` where the
    kernel runs at its link address (nokaslr), the symbols moved by
    VMCOREINFO's KERNELOFFSET where KASLR moved the kernel.
    """
    c = paging_case
    ours = _ours(c, tmp_path / "ours.vmcore")
    vmci = next(desc for name, _, desc in notes(ours) if name == "VMCOREINFO")
    # Where KASLR put the kernel: VMCOREINFO's init_uts_ns (a 32-bit kernel
    # has no KERNELOFFSET) against the symbol's link address in vmlinux.
    runtime = int(re.search(rb"\nSYMBOL\(init_uts_ns\)=([0-9a-f]+)\n", vmci).group(1), 16)  # type: ignore[union-attr]
    with open(c.vmlinux, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        link = symtab.get_symbol_by_name("init_uts_ns")[0]["st_value"]  # type: ignore[union-attr]
    offset = runtime - link
    # KASLR may leave the kernel where it was linked (slot 0 of about 500: a
    # CI run drew it), so only nokaslr's offset is known beforehand.
    assert offset == 0 or not c.nokaslr
    for vmcore in (ours, c.theirs):
        if offset == 0:
            command = ["gdb", "-batch", "-nx", str(c.vmlinux), str(vmcore)]
        else:
            command = ["gdb", "-batch", "-nx", "-ex", f"symbol-file -o {offset:#x} {c.vmlinux}",
                       "-ex", f"core-file {vmcore}"]  # fmt: skip
        out = subprocess.run([*command, "-ex", "print init_uts_ns.name.release"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert f'"{c.release}' in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("series", ["7.2", "10.0", "10.2"])
def test_firmware_guest_identity(tmp_path: Path, series: str) -> None:
    """No vCPU with paging (SeaBIOS at reset): QEMU's identity mapping, 2 vCPUs."""
    binary = qemu_binary(series)
    with QemuGuest(binary, tmp_path, smp=2) as guest:
        guest.stop()
        theirs = guest.dump(tmp_path / "qemu.vmcore", paging=True)
        core = guest.gcore(tmp_path / "qemu.core")
    case = PagingCase("firmware", binary, core, theirs, theirs, 0, Path(), "")
    ours = _ours(case, tmp_path / "ours.vmcore")
    assert_same_file_but_ehsize(ours, theirs)
    assert all(x.vaddr == x.paddr for x in loads(ours))


def test_mem_and_tlb_equal_hmp(paging_case: PagingCase) -> None:
    """
    ``%qemu mem`` and ``%qemu tlb`` (vCPU 0, the default, and vCPU 1) equal
    HMP's; on a 5-level guest QEMU's 'info mem' prints nothing (its
    mem_info_la57() tests two present bits the wrong way round) and ours is
    checked against the ranges HMP's own 'info tlb' pages merge into.
    """
    c = paging_case
    out = run_commands(c.core, c.binary, "qemu mem", "qemu tlb", "qemu mem 1", "qemu tlb 1")
    views = _split_views(out)
    mem0, tlb0, mem1, tlb1 = views
    assert tlb0 == c.hmp[1] and tlb1 == c.hmp[3]
    assert tlb0.count("\n") > 100
    if c.name.endswith("la57"):
        assert c.hmp[0] == ""  # vCPU 0's: QEMU's bug (vCPU 1's was not asked for)
        assert mem0 == _merge_tlb(c.hmp[1]) and mem1 == _merge_tlb(c.hmp[3])
    else:
        assert mem0 == c.hmp[0] and mem1 == c.hmp[2]
    assert mem0.count("\n") > 5


def _split_views(out: str) -> List[str]:
    """The four views printed back to back: mem, tlb, mem, tlb (tlb lines have ': ')."""
    views: List[str] = []
    current: List[str] = []
    kind = None
    for line in out.splitlines(keepends=True):
        k = "tlb" if ": " in line else "mem"
        if kind is not None and k != kind:
            views.append("".join(current))
            current = []
        kind = k
        current.append(line)
    views.append("".join(current))
    assert len(views) == 4, out[:2000]
    return views


def _merge_tlb(tlb: str) -> str:
    """
    'info mem' from 'info tlb' lines: virtually contiguous pages with the
    same user and write flags merged; a large page is 1 GiB where its
    address is 1 GiB aligned and the next page is as far, else 2 MiB.
    """
    pages = []
    for line in tlb.splitlines():
        vaddr, rest = line.split(": ")
        v = int(vaddr, 16)
        flags = rest.split()[1]
        pages.append((v, flags[2] == "P", flags[7] == "U", flags[8] == "W"))
    out: List[Tuple[int, int, Tuple[bool, bool]]] = []
    start, end, prot = -1, -1, (False, False)
    for i, (v, large, user, write) in enumerate(pages):
        size = 4096
        if large:
            nxt = pages[i + 1][0] if i + 1 < len(pages) else None
            size = (
                1 << 30 if v % (1 << 30) == 0 and (nxt is None or nxt - v >= 1 << 30) else 1 << 21
            )
        if start != -1 and v == end and (user, write) == prot:
            end = v + size
            continue
        if start != -1:
            out.append((start, end, prot))
        start, end, prot = v, v + size, (user, write)
    if start != -1:
        out.append((start, end, prot))
    return "".join(
        f"{s:016x}-{e & (2**64 - 1):016x} {(e - s):016x} {'u' if u else '-'}r{'w' if w else '-'}\n"
        for s, e, (u, w) in out
    )


README_CASE = next(c for c in CASES if c[4])


@pytest.mark.parametrize("paging_case", [README_CASE], indirect=True, ids=[README_CASE[0]])
def test_readme_transcript(paging_case: PagingCase, tmp_path: Path) -> None:
    """The README's --paging transcript, run as written on the nokaslr guest."""
    from test_linux_guest import _readme_runs, _vary, readme_links
    from test_readme import README

    c = paging_case
    assert c.nokaslr
    text = README.split("### Guest-virtual mappings for gdb: `--paging`", 1)[1]
    blocks = [b.split("```\n", 1)[0] for b in text.split("\n```\n")[1::2][:2]]
    readme_links(tmp_path, c.core, c.binary, c.vmlinux)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    runs = [run for block in blocks for run in _readme_runs(block)]
    assert [command.split()[0] for command, _ in runs] == ["drgn-qemu", "gdb", "readelf", "drgn"]
    for command, expected in runs:
        r = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)  # fmt: skip
        got = r.stdout.splitlines()
        assert r.returncode == 0, r.stdout
        if command.startswith("gdb"):  # where vCPU 0 was stopped varies: the values do not
            got, expected = [x for x in got if x[:1] == "$"], [x for x in expected if x[:1] == "$"]
        got, expected = _paging_vary(_vary(got)), _paging_vary(_vary(expected))
        if "qemu mem 1" in command:
            # How many ranges vCPU 1's current process maps varies with the
            # moment, and head -12 shows as many fewer of the kernel's (none
            # when it maps twelve or more): user space as one line, then the
            # kernel's ranges both show.
            got, expected = _one_user_line(got), _one_user_line(expected)
            if got == ["USER RANGE"]:
                # The process maps twelve ranges or more: head -12 showed only
                # them. The kernel's come after them in the whole list.
                whole = command.replace(" | head -12", "")
                assert whole != command
                r = subprocess.run(["bash", "-c", whole], cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)  # fmt: skip
                assert r.returncode == 0, r.stdout
                got = _one_user_line(_paging_vary(_vary(r.stdout.splitlines())))
            n = min(len(got), len(expected))
            assert n >= 2 and got[0] == "USER RANGE", got
            got, expected = got[:n], expected[:n]
        assert got == expected, command


def _one_user_line(lines: List[str]) -> List[str]:
    """Each run of "USER RANGE" lines (see :func:`_paging_vary`) as one."""
    return [x for i, x in enumerate(lines) if x != "USER RANGE" or lines[i - 1 : i] != [x]]


def _paging_vary(lines: List[str]) -> List[str]:
    out = []
    for line in lines:
        line = re.sub(r"\d+ PT_LOAD segments", "N PT_LOAD segments", line)
        line = re.sub(r"^( +(NOTE|LOAD) +)0x[0-9a-f]+", r"\1OFFSET", line)
        # User space: ASLR places it anew at each boot.
        line = re.sub(r"^00000000[0-9a-f]{8}-.*|^00007f[0-9a-f]{10}-.*", "USER RANGE", line)
        out.append(line)
    return out
