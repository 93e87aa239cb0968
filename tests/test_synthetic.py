"""
drgn-qemu on synthetic QEMU layouts: C programs that lay out QEMU's
structures of several generations, cored with gcore, dumped with the
drgn-qemu command, and read back with pyelftools and readelf.
"""

import array
import json
import struct
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest
from drgn import Program
from fixture_programs import LAYOUTS, CoredProgram, GetCore
from harness import drgn_qemu_command
from vmcore import elf_header, loads, notes, read_phys

from drgn_qemu.errors import CorruptStructureError
from drgn_qemu.helpers import (
    for_each_ram_block,
    guest_phys_blocks,
    int128_get,
    int128_get64,
    memory_region_get_ram_ptr,
    qemu_get_ram_block,
    qlist_for_each,
    qsimpleq_for_each,
    qtailq_for_each,
    queue_for_each,
    ramblock_name,
)
from drgn_qemu.program import open_qemu_program

# The fixture's RAM blocks: (name, size, ram_addr offset).
BLOCKS = {
    "pc.ram": (0, 0x800000),
    "rom2": (1, 0x20000),
    "rom3": (2, 0x10000),
    "ramdev": (3, 0x10000),
    "nvdimm": (4, 0x10000),
}

# Expected vmcore segments: (guest start, size, [(block, offset in block, bytes)...]).
Expected = List[Tuple[int, int, List[Tuple[str, int, int]]]]
MODERN_SEGMENTS: Expected = [
    (0x0, 0xA0000, [("pc.ram", 0, 0xA0000)]),
    (0xC0000, 0x340000, [("pc.ram", 0xC0000, 0x340000)]),
    (0x400000, 0x20000, [("rom2", 0, 0x20000)]),
    # rom3 follows rom2 in guest and host memory, but is another MemoryRegion.
    (0x420000, 0x10000, [("rom3", 0, 0x10000)]),
    (0x100000000, 0x400000, [("pc.ram", 0x400000, 0x400000)]),
]
# QEMU without GuestPhysBlock.mr, ram_device or nonvolatile merges rom2+rom3
# and dumps the RAM device and the NVDIMM.
OLD_SEGMENTS: Expected = [
    (0x0, 0xA0000, [("pc.ram", 0, 0xA0000)]),
    (0xC0000, 0x340000, [("pc.ram", 0xC0000, 0x340000)]),
    (0x400000, 0x30000, [("rom2", 0, 0x20000), ("rom3", 0, 0x10000)]),
    (0x430000, 0x10000, [("ramdev", 0, 0x10000)]),
    (0x440000, 0x10000, [("nvdimm", 0, 0x10000)]),
    (0x100000000, 0x400000, [("pc.ram", 0x400000, 0x400000)]),
]
EXPECTED = {"MODERN": MODERN_SEGMENTS, "V24": OLD_SEGMENTS, "V15": OLD_SEGMENTS,
            "V11": MODERN_SEGMENTS}  # fmt: skip


def pattern(block: str, offset: int, size: int) -> bytes:
    """The bytes the fixture wrote: 8-byte words ((index + 1) << 56) | offset."""
    index = BLOCKS[block][0]
    words = array.array("Q", ((index + 1) << 56 | o for o in range(offset, offset + size, 8)))
    return words.tobytes()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*drgn_qemu_command(), *args], capture_output=True, text=True)


def dump_fixture(c: CoredProgram, out: Path, *extra: str) -> "subprocess.CompletedProcess[str]":
    """drgn-qemu dump-guest-memory of a cored fixture program, with its binary."""
    return run_cli(
        "dump-guest-memory", "--arch", "x86_64", "-c", str(c.core), "-s", str(c.binary),
        *extra, str(out),
    )  # fmt: skip


def open_fixture(c: CoredProgram) -> Program:
    return open_qemu_program(core=str(c.core), symbols=[str(c.binary)])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dump_layout(layout: str, cored: GetCore, tmp_path: Path) -> None:
    c = cored(layout)
    out = tmp_path / "guest.vmcore"
    r = dump_fixture(c, out)
    assert r.returncode == 0, r.stderr
    expected = EXPECTED[layout]
    assert [(s.paddr, s.filesz, s.memsz) for s in loads(out)] == [
        (start, size, size) for start, size, _ in expected
    ]
    header = elf_header(out)
    assert header["e_type"] == "ET_CORE"
    # The first vCPU is in long mode: x86_64, as QEMU's cpu_get_dump_info().
    assert header["e_machine"] == "EM_X86_64"
    assert header["e_ident"]["EI_CLASS"] == "ELFCLASS64"
    assert header["e_ident"]["EI_DATA"] == "ELFDATA2LSB"
    for start, size, pieces in expected:
        data = b"".join(pattern(block, off, n) for block, off, n in pieces)
        assert len(data) == size
        assert read_phys(out, start, size) == data, f"segment at {start:#x}"
    # readelf, a second independent reader, accepts the file and agrees.
    readelf = subprocess.run(
        ["readelf", "-W", "-l", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert readelf.stderr == ""
    assert readelf.stdout.count(" LOAD ") == len(expected)
    assert readelf.stdout.count(" NOTE ") == 1
    # The block table names every block.
    assert r.stdout.count("\n0x") == len(expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_begin_length(layout: str, cored: GetCore, tmp_path: Path) -> None:
    c = cored(layout)
    out = tmp_path / "window.vmcore"
    # From inside the second block to inside the high block.
    r = dump_fixture(c, out, "--begin", "0x200000", "--length", str(0x100001000 - 0x200000))
    assert r.returncode == 0, r.stderr
    segs = [(s.paddr, s.filesz) for s in loads(out)]
    expected = [
        (max(start, 0x200000), min(start + size, 0x100001000) - max(start, 0x200000))
        for start, size, _ in EXPECTED[layout]
        if start + size > 0x200000
    ]
    assert segs == expected
    assert read_phys(out, 0x200000, 0x1000) == pattern("pc.ram", 0x200000, 0x1000)
    assert read_phys(out, 0x100000000, 0x1000) == pattern("pc.ram", 0x400000, 0x1000)


def test_quiet_means_nothing_on_success(cored: GetCore, tmp_path: Path) -> None:
    """-q: no table, no progress, and not the VMCOREINFO warning either."""
    c = cored("MODERN")
    r = dump_fixture(c, tmp_path / "q.vmcore", "-q")
    assert r.returncode == 0 and (r.stdout, r.stderr) == ("", "")
    r = dump_fixture(c, tmp_path / "v.vmcore")
    assert "warning: no VMCOREINFO found" in r.stderr


def test_json_summary(cored: GetCore, tmp_path: Path) -> None:
    """--json: one JSON object, and every field what the run did."""
    c = cored("MODERN", "vmcoreinfo-ram")
    out = tmp_path / "guest.vmcore"
    r = dump_fixture(c, out, "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert set(doc) == {"input", "architecture", "blocks", "vcpus", "vmcoreinfo", "warnings",
                        "output", "format", "guest_bytes", "size_apparent", "size_on_disk",
                        "seconds", "stopped_seconds", "was_stopped"}  # fmt: skip
    assert doc["stopped_seconds"] is None and doc["was_stopped"] is None  # a core: nothing to stop
    assert doc["input"] == {"core": str(c.core), "pid": None, "qemu": str(c.binary)}
    assert doc["architecture"] == "x86_64" and doc["format"] == "elf"
    assert doc["output"] == str(out)
    # The blocks are the vmcore's PT_LOADs, as pyelftools reads them.
    blocks = [(b["target_start"], b["size"]) for b in doc["blocks"]]
    assert blocks == [(s.paddr, s.filesz) for s in loads(out)]
    assert {b["source"] for b in doc["blocks"]} == {"core"}
    assert {(b["file"], b["missing_bytes"], b["missing_reason"]) for b in doc["blocks"]} == {
        (None, 0, None)
    }
    assert [b["memory_region"] for b in doc["blocks"]][0] == "pc.ram"
    assert doc["guest_bytes"] == sum(s.filesz for s in loads(out))
    st = out.stat()
    assert (doc["size_apparent"], doc["size_on_disk"]) == (st.st_size, st.st_blocks * 512)
    assert [v["index"] for v in doc["vcpus"]] == [0, 1]
    assert doc["vmcoreinfo"]["osrelease"] == "6.1.0-ram"
    assert doc["vmcoreinfo"]["source"].startswith("guest RAM at 0x")
    # The fixture has the device without a note: QEMU's warning, in the JSON
    # instead of on standard error.
    assert doc["warnings"] == ["vmcoreinfo device: guest note is not present"]
    assert doc["seconds"] >= 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "kdump-zlib", "--elf-layout", "kernel"],
         "--elf-layout kernel only works with --format elf"),
        (["--format", "kdump-zlib", "--begin", "0", "--length", "4K"],
         "--begin and --length only work with --format elf"),
    ],
)  # fmt: skip
def test_meaningless_option_combinations(
    extra: List[str], message: str, cored: GetCore, tmp_path: Path
) -> None:
    r = dump_fixture(cored("MODERN"), tmp_path / "x", *extra)
    assert r.returncode == 2 and r.stderr.startswith("usage: drgn-qemu dump-guest-memory [-h]")
    assert r.stderr.endswith(f"\ndrgn-qemu dump-guest-memory: error: {message}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_helpers(layout: str, cored: GetCore) -> None:
    c = cored(layout)
    prog = open_fixture(c)
    names = [ramblock_name(b) for b in for_each_ram_block(prog)]
    assert names == ["rom2", "rom3", "ramdev", "nvdimm", "pc.ram"]
    # pc.ram's ram_addr range lies below every other block's offset: found
    # only if "ram_addr - offset < length" wraps around as in C.
    assert ramblock_name(qemu_get_ram_block(prog, 0x123000)) == "pc.ram"
    assert ramblock_name(qemu_get_ram_block(prog, 0x1100000 + 0x8000)) == "rom3"
    with pytest.raises(CorruptStructureError, match="Bad ram offset"):
        qemu_get_ram_block(prog, 0x2000000)
    # Aliases: alias2 -> alias (+0x1000) -> pc.ram (+0x400000).
    assert (
        memory_region_get_ram_ptr(prog["mr_alias2"].address_of_()).value_()
        == prog["expected_alias2_ptr"].value_()
    )
    values = prog["int128_values"]
    assert int128_get64(values[0]) == 0x123456789ABCDEF0
    assert int128_get(values[1]) == 1 << 64
    assert int128_get(values[2]) == -1
    for bad in (values[1], values[2]):
        with pytest.raises(CorruptStructureError, match="does not fit in 64 bits"):
            int128_get64(bad)
    assert [i.value.value_() for i in qsimpleq_for_each(prog["items"], "next")] == [1, 2, 3, 4, 5]
    assert [i.value.value_() for i in qtailq_for_each(prog["titems"], "tnext")] == [1, 2, 3, 4, 5]
    assert [i.value.value_() for i in queue_for_each(prog["items"], "next")] == [1, 2, 3, 4, 5]
    blocks = guest_phys_blocks(prog)
    assert [(b.target_start, b.target_end) for b in blocks] == [
        (start, start + size) for start, size, _ in EXPECTED[layout]
    ]


def test_qlist_limit_and_cycle(cored: GetCore) -> None:
    prog = open_fixture(cored("V24", "cycle"))
    with pytest.raises(CorruptStructureError, match="cyclic"):
        list(qlist_for_each(prog["ram_list"].blocks, "next"))
    prog = open_fixture(cored("V24"))
    with pytest.raises(CorruptStructureError, match="more than 3 elements"):
        list(qlist_for_each(prog["ram_list"].blocks, "next", limit=3))


def test_alias_cycle(cored: GetCore) -> None:
    prog = open_fixture(cored("MODERN", "alias-cycle"))
    with pytest.raises(CorruptStructureError, match="alias chain"):
        memory_region_get_ram_ptr(prog["mr_alias2"].address_of_())


@pytest.mark.parametrize(
    "layout,mode,message",
    [
        ("V24", "cycle", "QLIST is cyclic"),
        ("V15", "cycle", "QTAILQ is cyclic"),
        ("MODERN", "nr", "nr 2147483647 > nr_allocated 16"),
        ("V24", "nr", "nr 2147483647 > nr_allocated 16"),
        ("MODERN", "size", "impossible size 0x1000000000000000"),
        ("MODERN", "int128", "does not fit in 64 bits"),
        ("V15", "int128", "does not fit in 64 bits"),
        ("MODERN", "order", "out of order"),
        ("MODERN", "dontdump", "dump-guest-core=on"),
        ("V24", "dontdump", "dump-guest-core=on"),
    ],
)
def test_corrupt_or_missing(
    layout: str, mode: str, message: str, cored: GetCore, tmp_path: Path
) -> None:
    c = cored(layout, mode)
    out = tmp_path / "guest.vmcore"
    r = dump_fixture(c, out)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("drgn-qemu: error: ")
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout", ["MODERN", "V11"])
def test_arch_detected_and_cpu_notes(layout: str, cored: GetCore, tmp_path: Path) -> None:
    """x86_64 from 16 GPRs, and from QEMU 11's 32 (APX): the notes have the 16 classic ones."""
    c = cored(layout)
    out = tmp_path / "guest.vmcore"
    r = run_cli("dump-guest-memory", "-c", str(c.core), "-s", str(c.binary), str(out))
    assert r.returncode == 0, r.stderr
    assert "x86_64 vmcore" in r.stdout
    assert "0: rip=0xffffffff81000000 cr3=0x1000000 long mode" in r.stdout
    assert "1: rip=0xffffffff81000001 cr3=0x1001000 long mode" in r.stdout
    found = notes(out)
    assert [(name, kind) for name, kind, _ in found] == [
        ("CORE", 1), ("CORE", 1), ("QEMU", 0), ("QEMU", 0)
    ]  # fmt: skip
    for cpu in range(2):
        prstatus = found[cpu][2]
        # x86_64 elf_prstatus: 336 bytes, pr_pid at 32, user_regs_struct at 112.
        assert len(prstatus) == 336
        assert struct.unpack_from("<I", prstatus, 32)[0] == cpu + 1
        regs = struct.unpack_from("<27Q", prstatus, 112)
        r15, rbp, rax, rip, cs, eflags, rsp = (regs[i] for i in (0, 4, 10, 16, 17, 18, 19))
        base = cpu << 12
        assert (r15, rbp, rax, rsp) == (base | 15, base | 5, base | 0, base | 4)
        assert (rip, cs, eflags) == (0xFFFFFFFF81000000 + cpu, 0x10, 0x246)
        state = found[2 + cpu][2]
        # QEMUCPUState: version 1, its size, rax first, cr[3] at 416.
        assert struct.unpack_from("<II", state) == (1, 440) and len(state) == 440
        assert struct.unpack_from("<Q", state, 8)[0] == base | 0
        assert struct.unpack_from("<Q", state, 416)[0] == 0x1000000 + cpu * 0x1000
    # The fixture marks APX's R16-R31 0xa9a9a9a9a9a9xxxx: in no note.
    assert all(b"\xa9\xa9\xa9\xa9\xa9\xa9" not in d for _, _, d in found)
    assert "no VMCOREINFO found" in r.stderr


def test_guest_memfd_never_dumped(cored: GetCore, tmp_path: Path) -> None:
    """A confidential guest's RAMBlock with a guest_memfd (QEMU 9.1+): refused, or left out."""
    c = cored("V11", "guest-memfd")
    out = tmp_path / "guest.vmcore"
    r = dump_fixture(c, out)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert "guest RAM pc.ram (guest-physical 0x0-0x9ffff, RAMBlock pc.ram" in r.stderr
    assert "private pages are in a guest_memfd" in r.stderr and "--skip-missing" in r.stderr
    assert not out.exists()
    r = dump_fixture(c, out, "--skip-missing")
    assert r.returncode == 0, r.stderr
    # Every block of pc.ram left out, the others dumped as without a guest_memfd.
    kept = [(start, size) for start, size, pieces in EXPECTED["V11"]
            if all(block != "pc.ram" for block, _, _ in pieces)]  # fmt: skip
    assert [(s.paddr, s.filesz) for s in loads(out)] == kept and kept
    assert r.stderr.count("warning: left out: guest RAM pc.ram") == sum(
        1 for line in r.stdout.splitlines() if line.startswith("0x") and line.endswith(" pc.ram")
    )


RAM_VMCOREINFO = (
    b"OSRELEASE=6.1.0-ram\nBUILD-ID=0123456789abcdef\nPAGESIZE=4096\n"
    b"SYMBOL(init_uts_ns)=ffffffff82a0e1a0\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
    b"NUMBER(phys_base)=0\nKERNELOFFSET=1e000000\n"
)
DEVICE_VMCOREINFO = (
    b"OSRELEASE=6.1.0-device\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
    b"KERNELOFFSET=0\n"
)


def _vmcoreinfo_note(
    c: CoredProgram, out: Path, *args: str
) -> Tuple["subprocess.CompletedProcess[str]", bytes]:
    """Our dump of *c* with *args*: the run, and its last note, which must be VMCOREINFO."""
    r = dump_fixture(c, out, *args)
    assert r.returncode == 0, r.stderr
    name, kind, desc = notes(out)[-1]
    assert (name, kind) == ("VMCOREINFO", 0)
    return r, desc


def test_vmcoreinfo_from_guest_ram(cored: GetCore, tmp_path: Path) -> None:
    r, note = _vmcoreinfo_note(cored("MODERN", "vmcoreinfo-ram"), tmp_path / "guest.vmcore")
    assert note == RAM_VMCOREINFO
    assert (
        "VMCOREINFO: from guest RAM at 0x200000: OSRELEASE=6.1.0-ram KERNELOFFSET=1e000000"
        in r.stdout
    )
    # The registered device had no note yet: QEMU's warning, then ours is quiet.
    assert "guest note is not present" in r.stderr
    assert "no VMCOREINFO found" not in r.stderr


def test_vmcoreinfo_from_device(cored: GetCore, tmp_path: Path) -> None:
    r, note = _vmcoreinfo_note(cored("MODERN", "vmcoreinfo-device"), tmp_path / "guest.vmcore")
    # The device's note wins over the page in guest RAM, and is copied as is.
    assert note == DEVICE_VMCOREINFO
    assert "from vmcoreinfo device (guest note at 0x210001): OSRELEASE=6.1.0-device" in r.stdout
    assert r.stderr == ""


def test_vmcoreinfo_from_file(cored: GetCore, tmp_path: Path) -> None:
    c = cored("MODERN", "vmcoreinfo-device")
    text = b"OSRELEASE=6.12.0-file\nPAGESIZE=4096\nSYMBOL(_stext)=ffffffff81000000\n"
    (tmp_path / "vmcoreinfo").write_bytes(text)
    r, note = _vmcoreinfo_note(
        c, tmp_path / "guest.vmcore", "--vmcoreinfo", str(tmp_path / "vmcoreinfo")
    )
    assert note == text
    assert "OSRELEASE=6.12.0-file" in r.stdout


@pytest.mark.parametrize("layout", ["MODERN", "V24"])
def test_qom_type_name_of_the_qemu_in_hand(layout: str, cored: GetCore) -> None:
    """
    TYPE_MEMORY_REGION is read from the QEMU in hand (the modern layout's
    memory_region_info, whose string gcore left out of the core), or, with
    no such variable (the 2.4 layout, "qemu:memory-region" as QEMU before
    6.0 spelled it), every spelling is accepted; either way a region whose
    type is another is refused.
    """
    import drgn

    from drgn_qemu.helpers.memory_mapping import guest_phys_blocks
    from drgn_qemu.helpers.qom import object_dynamic_cast, qom_type_names

    c = cored(layout)
    prog = open_fixture(c)
    names = qom_type_names(prog, "memory-region")
    if layout == "MODERN":
        assert names[0] == "memory-region"
        with pytest.raises(drgn.FaultError):  # the string is in the executable, not the core
            prog.read(prog["memory_region_info"].name.value_(), 1)
    else:
        with pytest.raises(LookupError):
            prog.variable("memory_region_info")
        assert names == ("memory-region", "qemu:memory-region")
    mr = prog["mr_ram"].address_of_()
    assert object_dynamic_cast(mr, names)
    expected = {"MODERN": "memory-region", "V24": "qemu:memory-region"}[layout]
    impl = mr.parent_obj.member_("class").type
    assert impl.name.string_().decode() == expected
    assert guest_phys_blocks(prog)
    # The same region under another type name is not a MemoryRegion.
    assert not object_dynamic_cast(mr, ["iommu-memory-region"])
    other = b"not-a-region\0"
    prog.add_memory_segment(
        impl.name.value_(),
        len(other),
        lambda address, count, offset, physical: other[offset : offset + count],
    )
    with pytest.raises(
        CorruptStructureError, match="which is not a MemoryRegion .its QOM type is 'not-a-region'"
    ):
        guest_phys_blocks(prog)
