"""
Guest architectures other than x86: a stopped guest of our debug
qemu-system-aarch64 and qemu-system-ppc64 (QEMU 10.0, TCG, two vCPUs, a blob
of known bytes loaded into RAM), dumped by QEMU over QMP and by drgn-qemu
from a gcore of the process: the ELF vmcore is QEMU's byte for byte, notes
included, but for the header fields QEMU gets wrong (see
assert_same_file_but_ehsize), and the kdump-zlib file is QEMU's
kdump-raw-zlib but for utsname.machine.

- aarch64: -machine virt -cpu cortex-a57, no firmware: the first vCPU runs
  a few instructions loaded into RAM (enable FP, set registers, FPCR, an FP
  exception, then a branch to itself), the second stays off; and -cpu max,
  which has SVE: the same and SVE registers set, an NT_ARM_SVE note more
  (vectors of one quadword, as ZCR_EL1 is at reset);
- arm: the same with -cpu cortex-a15, a 32-bit vCPU: an ELFCLASS32 EM_ARM
  vmcore and 32-bit kdump headers;
- ppc64: -machine pseries on SLOF (Debian's qemu-system-data), which leaves
  the vCPUs taking interrupts big-endian: a big-endian vmcore;
- ppc64le: the same machine stopped at reset (-S), the first vCPU's LPCR ILE
  bit set through QEMU's gdbstub (gdb-multiarch), as a little-endian kernel
  sets it: QEMU then writes a little-endian vmcore;
- s390x: -machine s390-ccw-virtio, started with -S (without a boot device
  the firmware would shut the guest down at once); QEMU has loaded the
  s390-ccw firmware into RAM; our s390x build has no loader device, so no
  blob.
"""

import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from harness import DRGN, QemuGuest, cross_qemu_binary, drgn_qemu_command, write_blob
from kdump_reader import assert_pages_equal_elf, assert_same_kdump_but_machine, open_kdump
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize, elf_header, loads, notes, read_phys


@dataclass(frozen=True)
class Target:
    name: str
    machine: str
    extra: Tuple[str, ...]
    blob_addr: Optional[int]
    e_machine: str
    ei_data: str
    #: (paddr, size) of each PT_LOAD.
    loads: List[Tuple[int, int]]
    #: (name, type, size) of each vCPU's notes.
    notes: List[Tuple[str, int, int]]
    #: What the summary says of a vCPU.
    summary: str
    #: kdump page size and phys_base.
    kdump: Tuple[int, int]
    #: Set the guest's state up through the gdbstub: gdb commands.
    gdb: Tuple[str, ...] = ()
    ei_class: str = "ELFCLASS64"
    #: Instructions (32-bit words) the first vCPU runs from CODE_ADDR, the
    #: last a branch to itself, where the test stops it.
    code: Tuple[int, ...] = ()


CODE_ADDR = 0x40200000
# AArch64: movz x0, #0x33, lsl #16; msr cpacr_el1, x0 (FP and SVE on at EL1);
# isb; movz x2, #0x1234; fmov d3, x2; movz x5, #0x300, lsl #16;
# msr fpcr, x5 (FZ, DN); fdiv d6, d3, d7 (0/0: an FP exception).
A64_FP = (0xD2A00660, 0xD5181040, 0xD5033FDF, 0xD2824682, 0x9E670043, 0xD2A06005,
          0xD51B4405, 0x1E671866)  # fmt: skip
# SVE: ptrue p2.b; dup z4.d, x2. Then b . (to itself).
A64_SVE = (0x2518E3E2, 0x05E03844)
A64_LOOP = (0x14000000,)


TARGETS = {
    "aarch64": Target(
        "aarch64", "virt", ("-cpu", "cortex-a57"), 0x40100000, "EM_AARCH64", "ELFDATA2LSB",
        # RAM at 1 GiB; the flash is a ROM device, not dumped.
        [(0x40000000, 256 << 20)],
        [("CORE", 1, 392), ("CORE", 2, 528)],  # NT_PRSTATUS, NT_PRFPREG
        "AArch64 EL1",
        (65536, 0x40000000),  # the largest AArch64 page; the lowest RAM address
        code=A64_FP + A64_LOOP,
    ),
    "aarch64-sve": Target(
        "aarch64", "virt", ("-cpu", "max"), 0x40100000, "EM_AARCH64", "ELFDATA2LSB",
        [(0x40000000, 256 << 20)],
        [("CORE", 1, 392), ("CORE", 2, 528), ("LINUX", 0x405, 592)],
        "AArch64 EL1",
        (65536, 0x40000000),
        code=A64_FP + A64_SVE + A64_LOOP,
    ),
    "arm": Target(
        "aarch64", "virt", ("-cpu", "cortex-a15"), 0x40100000, "EM_ARM", "ELFDATA2LSB",
        [(0x40000000, 256 << 20)],
        [("CORE", 1, 148), ("LINUX", 0x400, 260)],  # NT_PRSTATUS, NT_ARM_VFP
        "AArch32 EL1",
        (4096, 0x40000000),
        ei_class="ELFCLASS32",
    ),
    "ppc64": Target(
        "ppc64", "pseries", (), 0x8000000, "EM_PPC64", "ELFDATA2MSB",
        [(0, 256 << 20)],
        # NT_PRSTATUS, NT_PRFPREG, NT_PPC_VMX, NT_PPC_VSX, NT_PPC_SPE
        [("CORE", 1, 504), ("CORE", 2, 264), ("CORE", 0x100, 544), ("CORE", 0x102, 256),
         ("CORE", 0x101, 140)],  # fmt: skip
        "nip=0x",
        (65536, 0),  # pseries kernels' largest page
    ),
    "ppc64le": Target(
        "ppc64", "pseries", ("-S",), 0x8000000, "EM_PPC64", "ELFDATA2LSB",
        [(0, 256 << 20)],
        [("CORE", 1, 504), ("CORE", 2, 264), ("CORE", 0x100, 544), ("CORE", 0x102, 256),
         ("CORE", 0x101, 140)],  # fmt: skip
        "nip=0x",
        (65536, 0),
        # LPCR_ILE is PPC_BIT(38), 0x2000000. QEMU's gdbstub sends the SPRs
        # in the host's byte order while gdb reads them big-endian, so the bit
        # is set where gdb sees it: 0x200000000.
        ("set architecture powerpc:common64", "set $lpcr = $lpcr | 0x200000000"),
    ),
    "riscv64": Target(
        "riscv64", "virt", ("-bios", "none"), 0x80100000, "EM_RISCV", "ELFDATA2LSB",
        # The reset vector's ROM, then RAM at 2 GiB.
        [(0x1000, 0xF000), (0x80000000, 256 << 20)],
        [("CORE", 1, 376)],  # NT_PRSTATUS: pc, x1-x31
        "pc=0x",
        (4096, 0),
    ),
    "loongarch64": Target(
        "loongarch64", "virt", (), 0x1000000, "EM_LOONGARCH", "ELFDATA2LSB",
        [(0, 256 << 20)],
        [("CORE", 1, 480), ("CORE", 2, 268)],  # NT_PRSTATUS, NT_PRFPREG
        "pc=0x",
        (4096, 0),
    ),
    "s390x": Target(
        "s390x", "s390-ccw-virtio", ("-S",), None, "EM_S390", "ELFDATA2MSB",
        [(0, 256 << 20)],
        # CORE: NT_PRSTATUS, NT_FPREGSET; LINUX: prefix, control registers,
        # CPU timer, TOD comparator, TOD programmable register, vector
        # registers 0-15 (low halves) and 16-31, guarded storage.
        [("CORE", 1, 336), ("CORE", 2, 136), ("LINUX", 0x305, 4), ("LINUX", 0x304, 128),
         ("LINUX", 0x301, 8), ("LINUX", 0x302, 8), ("LINUX", 0x303, 4), ("LINUX", 0x309, 128),
         ("LINUX", 0x30A, 256), ("LINUX", 0x30B, 32)],  # fmt: skip
        "prefix=0x",
        (4096, 0),
    ),
}  # fmt: skip
BLOB_SIZE = 1 << 20


@dataclass
class Stopped:
    target: Target
    binary: Path
    core: Path
    elf: Path
    kdump: Path
    blob: bytes
    #: HMP 'info registers -a' of the stopped guest.
    registers: str
    #: QMP's dump with paging=true (no vCPU but x86 says it pages: identity).
    elf_paging: Path
    #: HMP 'info mem' (riscv64's; other targets lack the command).
    info_mem: str


@pytest.fixture(scope="module", params=list(TARGETS), ids=list(TARGETS))
def stopped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stopped]:
    target = TARGETS[request.param]
    binary = cross_qemu_binary(target.name)
    work = tmp_path_factory.mktemp(target.name)
    blob = write_blob(work / "blob.bin", BLOB_SIZE, 5)
    extra = list(target.extra)
    if target.blob_addr is not None:
        extra += [
            "-device",
            f"loader,file={work / 'blob.bin'},addr={target.blob_addr:#x},force-raw=on",
        ]
    if target.code:
        (work / "code.bin").write_bytes(struct.pack(f"<{len(target.code)}I", *target.code))
        extra += ["-device", f"loader,file={work / 'code.bin'},addr={CODE_ADDR:#x},force-raw=on",
                  "-device", f"loader,addr={CODE_ADDR:#x},cpu-num=0"]  # fmt: skip
    gdb_sock = work / "gdb.sock"
    if target.gdb:
        extra += ["-gdb", f"unix:{gdb_sock},server=on,wait=off"]
    with QemuGuest(binary, work, memory="256M", machine=target.machine,
                   machine_opts="dump-guest-core=on", extra_args=extra, smp=2) as guest:  # fmt: skip
        if target.code:
            # At the branch to itself, where it stays: a state to wait for.
            end = f" PC={CODE_ADDR + 4 * (len(target.code) - 1):016x} "
            guest.stop_when("info registers", lambda text: end in text)
        else:
            time.sleep(0.5)
            guest.stop()
        if target.gdb:
            cmds = [a for c in target.gdb for a in ("-ex", c)]
            subprocess.run(["gdb-multiarch", "-nx", "-batch", "-ex", cmds[1], "-ex",
                            f"target remote {gdb_sock}", *cmds[2:], "-ex", "detach"],
                           check=True, capture_output=True)  # fmt: skip
            # gdb's detach lets the vCPUs run again.
            guest.stop()
        registers = guest.hmp("info registers -a").replace("\r\n", "\n")
        info_mem = guest.hmp("info mem").replace("\r\n", "\n") if target.name == "riscv64" else ""
        elf = guest.dump(work / "qemu.vmcore")
        elf_paging = guest.dump(work / "qemu-paging.vmcore", paging=True)
        kdump = guest.dump(work / "qemu.kdump", format="kdump-raw-zlib")
        core = guest.gcore(work / "qemu.core")
    yield Stopped(target, binary, core, elf, kdump, blob, registers, elf_paging, info_mem)
    for p in work.iterdir():
        p.unlink()


def dump(s: Stopped, out: Path, *extra: str) -> str:
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(s.core), "-s", str(s.binary),
             *extra, str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_elf_equals_qemu(stopped: Stopped, tmp_path: Path) -> None:
    t = stopped.target
    out = tmp_path / "ours.vmcore"
    stdout = dump(stopped, out)
    header = elf_header(out)
    assert header["e_machine"] == t.e_machine
    assert header["e_ident"]["EI_CLASS"] == t.ei_class
    assert header["e_ident"]["EI_DATA"] == t.ei_data
    assert [(s.paddr, s.filesz) for s in loads(out)] == t.loads
    ours = notes(out)
    assert [(n, k, len(d)) for n, k, d in ours] == t.notes * 2
    assert ours == notes(stopped.elf)
    assert_same_file_but_ehsize(out, stopped.elf)
    if t.blob_addr is not None:
        assert read_phys(out, t.blob_addr, BLOB_SIZE) == stopped.blob
    assert t.summary in stdout and f"wrote {out}: {t.name} vmcore" in stdout


def test_paging_equals_qemu(stopped: Stopped, tmp_path: Path) -> None:
    """--paging: QMP's paging=true, which on these targets is the identity mapping."""
    out = tmp_path / "ours.vmcore"
    dump(stopped, out, "-q", "--paging")
    assert_same_file_but_ehsize(out, stopped.elf_paging)
    assert all(s.vaddr == s.paddr for s in loads(out))


def test_arch_given_or_wrong(stopped: Stopped, tmp_path: Path) -> None:
    out = tmp_path / "ours.vmcore"
    dump(stopped, out, "-q", "--arch", stopped.target.name)
    assert_same_file_but_ehsize(out, stopped.elf)
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-c", str(stopped.core), "-s",
             str(stopped.binary), "--arch", "x86_64", str(tmp_path / "x")])  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert (f"--arch x86_64: this QEMU's debug info has no x86_64 vCPU type (it is one for "
            f"{stopped.target.name} guests)") in r.stderr  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_kdump_equals_qemu(stopped: Stopped, tmp_path: Path) -> None:
    t = stopped.target
    out = tmp_path / "ours.kdump"
    dump(stopped, out, "-q", "--format", "kdump-zlib")
    k = open_kdump(out)
    assert (k.block_size, k.sub["phys_base"]) == t.kdump
    assert k.order == ("<" if t.ei_data == "ELFDATA2LSB" else ">")
    assert_same_kdump_but_machine(out, stopped.kdump, "arm" if t.e_machine == "EM_ARM" else t.name)
    counts: Dict[str, int] = assert_pages_equal_elf(k, stopped.elf)
    assert counts["pages"] == sum(size for _, size in t.loads) // t.kdump[0]


def test_registers_equal_hmp(stopped: Stopped) -> None:
    """%qemu registers -a prints what HMP 'info registers -a' printed for the stopped guest."""
    code = "from drgn.commands import run_command\nrun_command(prog, 'qemu registers -a')"
    r = run([DRGN, "-q", "-c", str(stopped.core), "-s", str(stopped.binary), "-e", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout == stopped.registers
    # Not an empty state: each vCPU is in it.
    assert stopped.registers.count("\nCPU#") == 2


@pytest.mark.parametrize("stopped", ["riscv64"], indirect=True)
def test_riscv_info_mem_equals_hmp(stopped: Stopped) -> None:
    """%qemu mem on RISC-V at reset (satp bare) prints what HMP 'info mem' printed."""
    code = "from drgn.commands import run_command\nrun_command(prog, 'qemu mem')"
    r = run([DRGN, "-q", "-c", str(stopped.core), "-s", str(stopped.binary), "-e", code])
    assert r.returncode == 0, r.stderr
    assert stopped.info_mem == "No translation or protection\n"
    assert r.stdout == stopped.info_mem
