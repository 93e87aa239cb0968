"""
Read vmcores in tests with pyelftools, an ELF reader independent of the
writer under test.
"""

import struct
from pathlib import Path
from typing import Any, List, NamedTuple, Tuple

from elftools.elf.elffile import ELFFile

CHUNK = 16 << 20


class Load(NamedTuple):
    """A PT_LOAD as pyelftools reads it."""

    paddr: int
    vaddr: int
    filesz: int
    memsz: int
    offset: int


def elf_header(path: Path) -> Any:
    with open(path, "rb") as f:
        return dict(ELFFile(f).header)


def loads(path: Path) -> List[Load]:
    """The PT_LOAD segments of an ELF file, in file order."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return [
            Load(s["p_paddr"], s["p_vaddr"], s["p_filesz"], s["p_memsz"], s["p_offset"])
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]


def notes(path: Path) -> List[Tuple[str, int, bytes]]:
    """(name, type, descriptor) of every note, from the PT_NOTE segments."""
    out = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        order = "<" if elf.little_endian else ">"
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_NOTE":
                continue
            data = seg.data()
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, kind = struct.unpack_from(order + "III", data, pos)
                pos += 12
                name = data[pos : pos + namesz].rstrip(b"\0").decode()
                pos += (namesz + 3) // 4 * 4
                out.append((name, kind, data[pos : pos + descsz]))
                pos += (descsz + 3) // 4 * 4
    return out


def note_bytes(path: Path) -> bytes:
    """The PT_NOTE segments' bytes, as they are in the file."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return b"".join(s.data() for s in elf.iter_segments() if s["p_type"] == "PT_NOTE")


def read_phys(path: Path, paddr: int, size: int) -> bytes:
    """Read guest-physical memory through the PT_LOAD that holds it."""
    for load in loads(path):
        if load.paddr <= paddr and paddr + size <= load.paddr + load.filesz:
            with open(path, "rb") as f:
                f.seek(load.offset + paddr - load.paddr)
                return f.read(size)
    raise LookupError(f"{paddr:#x}+{size:#x} is not in a PT_LOAD of {path}")


def assert_same_memory(ours: Path, theirs: Path) -> int:
    """
    Assert that two vmcores have the same PT_LOADs (paddr, sizes) and the same
    bytes in each; return the number of bytes compared.
    """
    a, b = loads(ours), loads(theirs)
    assert [(x.paddr, x.filesz, x.memsz) for x in a] == [(x.paddr, x.filesz, x.memsz) for x in b]
    total = 0
    with open(ours, "rb") as fa, open(theirs, "rb") as fb:
        for la, lb in zip(a, b):
            done = 0
            while done < la.filesz:
                n = min(CHUNK, la.filesz - done)
                fa.seek(la.offset + done)
                fb.seek(lb.offset + done)
                da, db = fa.read(n), fb.read(n)
                assert len(da) == n and len(db) == n, f"short segment at {la.paddr + done:#x}"
                if da != db:
                    i = next(i for i in range(n) if da[i] != db[i])
                    raise AssertionError(
                        f"guest memory differs at guest-physical {la.paddr + done + i:#x}"
                    )
                done += n
            total += la.filesz
    return total


#: Where e_ehsize lives in an ELF header (both classes).
E_EHSIZE = slice(52, 54)


def assert_same_file_but_ehsize(ours: Path, theirs: Path) -> None:
    """
    Assert that two vmcores are identical byte for byte, except where QEMU
    gets the ELF header wrong:

    - e_ehsize: QEMU writes sizeof(a pointer), 8, where the ELF header's
      size belongs (``elf_header->e_ehsize = sizeof(elf_header)`` in
      dump/dump.c); ours is the true size;
    - in a big-endian vmcore (ppc64, s390x), QEMU writes the .shstrtab
      section header in the host's byte order (``prepare_elf_section_hdr_string()``
      does not use cpu_to_dump*): the test checks that its fields are ours,
      byte-swapped.
    """
    assert ours.stat().st_size == theirs.stat().st_size
    ours_header = elf_header(ours)
    elf64 = ours_header["e_ident"]["EI_CLASS"] == "ELFCLASS64"
    assert ours_header["e_ehsize"] == (64 if elf64 else 52)
    assert elf_header(theirs)["e_ehsize"] == 8
    # e_ehsize is at offset 52 of an ELF64 header, 40 of an ELF32 one.
    masks = [E_EHSIZE if elf64 else slice(40, 42)]
    if ours_header["e_ident"]["EI_DATA"] == "ELFDATA2MSB":
        shdr = "IIQQQQIIQQ" if elf64 else "IIIIIIIIII"
        size = struct.calcsize("<" + shdr)
        at = ours_header["e_shoff"] + size  # section header 1, .shstrtab
        with open(ours, "rb") as fa, open(theirs, "rb") as fb:
            fa.seek(at)
            fb.seek(at)
            fields = struct.unpack(">" + shdr, fa.read(size))
            assert fb.read(size) == struct.pack("<" + shdr, *fields)
        masks.append(slice(at, at + size))
    with open(ours, "rb") as fa, open(theirs, "rb") as fb:
        offset = 0
        while True:
            da, db = fa.read(CHUNK), fb.read(CHUNK)
            if offset == 0:
                for m in masks:
                    blank = bytes(m.stop - m.start)
                    da = da[: m.start] + blank + da[m.stop :]
                    db = db[: m.start] + blank + db[m.stop :]
            if da != db:
                i = next(i for i in range(min(len(da), len(db))) if da[i] != db[i])
                raise AssertionError(f"the vmcores differ at file offset {offset + i:#x}")
            if not da:
                break
            offset += len(da)
