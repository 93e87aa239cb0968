"""
Read vmcores in tests with pyelftools, an ELF reader independent of the
writer under test.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Tuple

from elftools.elf.elffile import ELFFile

CHUNK = 16 << 20


@dataclass(frozen=True)
class Load:
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
    """(name, type, descriptor) of every note."""
    out = []
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                note_segment: Any = seg
                for note in note_segment.iter_notes():
                    desc = note["n_descdata"]
                    if isinstance(desc, str):
                        desc = desc.encode("latin-1")
                    out.append((note["n_name"], note["n_type"], bytes(desc)))
    return out


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
