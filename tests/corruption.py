"""
Seeded corruption of QEMU cores: the input a crashed QEMU leaves behind.

A case is one change to a copy of a core: a field of one of the QEMU
structures a dump or a monitor view reads (found from the debug info with
drgn: the FlatView and its ranges, their MemoryRegions, the RAMBlocks and
their list, the vCPUs, the machine) overwritten with zero, all ones, a
random value, a pointer to itself or into another structure, a huge size;
the core cut short; or its ELF header, program headers or notes damaged.

:func:`run_case` runs ``drgn-qemu dump-guest-memory`` on the damaged core
(and, for some cases, the ``%qemu`` views) and checks the invariant: exit 0
with the reference's guest memory (and notes, unless the field is plain
data such as a register), or exit 1 with one short line on standard error;
never a traceback, never a file under the output's name, never more than
:data:`CASE_SECONDS` or :data:`CASE_BYTES`.
"""

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import drgn
from drgn import Object, Program, TypeKind, sizeof
from elftools.elf.elffile import ELFFile
from harness import drgn_qemu_command
from vmcore import notes

#: A case may take this long...
CASE_SECONDS = 60
#: ... and this much memory (peak RSS of the dump).
CASE_BYTES = 1 << 30

#: The %qemu views run on damaged cores.
VIEWS = ("ramblocks", "cpus", "registers -a", "mtree", "mtree -f", "qom-tree", "timers")


@dataclass(frozen=True)
class Field:
    """A scalar or pointer in QEMU's memory: a place to damage."""

    name: str
    address: int
    size: int
    #: Any value is valid QEMU state (a register, a setting): the dump may
    #: differ, as long as it does not fail badly.
    data: bool = False
    #: A _Bool: flipping it is a valid, different QEMU.
    boolean: bool = False
    #: A pointer.
    pointer: bool = False


@dataclass(frozen=True)
class Case:
    """One corruption of a core file."""

    name: str
    #: Bytes to write at a file offset...
    offset: int = 0
    data: bytes = b""
    #: ... or the length to cut the file to.
    truncate: Optional[int] = None
    #: The output may differ from the reference and still be right.
    plausible: bool = False
    #: Damage to the file's own structure (ELF headers, notes).
    file: bool = False


@dataclass
class Outcome:
    case: Case
    returncode: int
    stderr: str
    seconds: float
    max_rss: int
    #: What broke the invariant, or "".
    failure: str = ""


def _leaves(obj: Object, name: str, out: List[Tuple[str, Object]], depth: int = 0) -> None:
    """The scalar and pointer members of *obj*, a few levels deep."""
    t = obj.type_.unaliased()
    if t.kind in (TypeKind.STRUCT, TypeKind.UNION, TypeKind.CLASS):
        if depth >= 3:
            return
        for m in t.members or ():
            if m.bit_field_size or m.name is None:
                continue
            try:
                member = obj.member_(m.name)
            except (LookupError, ValueError):
                continue
            _leaves(member, f"{name}.{m.name}", out, depth + 1)
    elif t.kind == TypeKind.ARRAY:
        if depth >= 3 or not t.length:
            return
        for i in range(min(t.length, 2)):
            _leaves(obj[i], f"{name}[{i}]", out, depth + 1)
    elif t.kind in (TypeKind.INT, TypeKind.BOOL, TypeKind.POINTER, TypeKind.ENUM):
        if obj.address_ is not None and sizeof(t) in (1, 2, 4, 8):
            out.append((name, obj))


def _fields_of(obj: Object, name: str, data: bool = False, limit: int = 80) -> List[Field]:
    leaves: List[Tuple[str, Object]] = []
    _leaves(obj, name, leaves)
    out = []
    for leaf_name, leaf in leaves[:limit]:
        t = leaf.type_.unaliased()
        assert leaf.address_ is not None
        boolean, pointer = t.kind == TypeKind.BOOL, t.kind == TypeKind.POINTER
        out.append(Field(leaf_name, leaf.address_, sizeof(t), data, boolean, pointer))
    return out


def qemu_fields(prog: Program) -> List[Field]:
    """The fields of QEMU's structures that a dump or a view reads, from *prog*'s debug info."""
    from drgn_qemu.helpers import (
        flatview_for_each_range,
        for_each_cpu,
        for_each_ram_block,
    )

    fields: List[Field] = []
    asm = prog["address_space_memory"]
    fields += _fields_of(asm, "address_space_memory")
    view = asm.current_map[0]
    fields += _fields_of(view, "FlatView")
    regions: Dict[int, Object] = {}
    for i, fr in enumerate(flatview_for_each_range(view.address_of_())):
        fields += _fields_of(fr[0], f"FlatRange[{i}]")
        regions.setdefault(fr.mr.value_(), fr.mr)
    for mr in regions.values():
        fields += _fields_of(mr[0], f"MemoryRegion({mr.name.string_().decode()})")
    fields += _fields_of(prog["ram_list"], "ram_list", limit=8)
    for block in for_each_ram_block(prog):
        fields += _fields_of(block[0], f"RAMBlock({block.idstr.string_().decode()})")
    for name in ("cpus_queue", "cpus"):
        try:
            fields += _fields_of(prog[name], name)
            break
        except KeyError:
            continue
    for cpu in for_each_cpu(prog):
        state = f"CPUState({cpu.cpu_index.value_()})"
        for f in _fields_of(cpu[0], state, limit=400):
            # The list links, the index and the QOM class are structure;
            # the rest is the vCPU's state, any value of which is valid.
            structural = any(k in f.name for k in (".node.", ".cpu_index", ".class"))
            if structural or f.name.count(".") <= 2:
                fields.append(
                    Field(f.name, f.address, f.size, not structural, f.boolean, f.pointer)
                )
        try:
            env = drgn.cast("X86CPU *", cpu).env
        except LookupError:
            continue
        # Registers: any value is one a guest could have.
        fields += _fields_of(env, f"X86CPU({cpu.cpu_index.value_()}).env", data=True, limit=40)
    try:
        machine = prog["current_machine"]
    except KeyError:
        pass
    else:
        if machine:
            fields += [
                Field(f.name, f.address, f.size, "max_cpus" not in f.name, f.boolean, f.pointer)
                for f in _fields_of(machine[0], "MachineState", limit=200)
            ]
    return fields


def _load_segments(core: Path) -> List[Tuple[int, int, int]]:
    """(vaddr, filesz, offset) of the core's PT_LOADs, read with pyelftools."""
    with open(core, "rb") as f:
        return [
            (s["p_vaddr"], s["p_filesz"], s["p_offset"])
            for s in ELFFile(f).iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]


def _file_offset(
    segments: Sequence[Tuple[int, int, int]], address: int, size: int
) -> Optional[int]:
    for vaddr, filesz, offset in segments:
        if vaddr <= address and address + size <= vaddr + filesz:
            return offset + address - vaddr
    return None


def _values(
    f: Field, rng: random.Random, targets: Sequence[int]
) -> Iterator[Tuple[str, int, bool]]:
    """(kind, value, plausible) of the damage done to *f*."""
    bits = 8 * f.size
    mask = (1 << bits) - 1
    # Zero is a valid value of most integers (an offset, an index, a
    # count), so any output may be right; a null pointer is damage.
    yield "zero", 0, f.data or not f.pointer
    yield "ones", mask, f.data
    yield "random", rng.getrandbits(bits), f.data
    if f.boolean:
        yield "flip", 1, True  # xor'ed: the other truth value
    if f.size == 8:
        yield "self", f.address, f.data
        yield "cross", rng.choice(targets) + rng.choice((0, 8, 0x40, 0x1000)), f.data
        yield "huge", 1 << 63, f.data
        yield "page", 0x1000, True  # added: a nearby, plausible value
    if f.size == 4:
        yield "sign", 0x80000000, f.data


def field_cases(prog: Program, core: Path, rng: random.Random) -> List[Case]:
    """Every damage of every field of :func:`qemu_fields` that lies in the core file."""
    segments = _load_segments(core)
    fields = qemu_fields(prog)
    targets = sorted({f.address & ~0xFF for f in fields})
    little = prog.platform is not None and prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN
    byteorder: Literal["little", "big"] = "little" if little else "big"
    # Without QOM (QEMU before MemoryRegion and CPUState were objects, and
    # the synthetic fixtures) a pointer to another structure of the right
    # size cannot be told from a pointer to a region or vCPU: the dump may
    # read it as one, and any output is plausible.
    untyped = []
    if not prog.type("MemoryRegion").has_member("parent_obj"):
        untyped.append(re.compile(r"^FlatRange\[\d+\]\.mr$|^MemoryRegion\(.*\)\.alias$"))
    cpu_list = re.compile(r"^(cpus|cpus_queue)\.|\.node\.")
    if not prog.type("CPUState").has_member("parent_obj"):
        untyped.append(cpu_list)
    # Without the machine's -smp (no current_machine), a vCPU list cut short
    # by a null link is a plausible list of fewer vCPUs.
    try:
        prog["current_machine"]
        cut_short = None
    except KeyError:
        cut_short = cpu_list
    cases = []
    for f in fields:
        offset = _file_offset(segments, f.address, f.size)
        if offset is None:
            continue
        original = int.from_bytes(prog.read(f.address, f.size), byteorder)
        unchecked = f.pointer and any(p.search(f.name) for p in untyped)
        uncounted = f.pointer and cut_short is not None and bool(cut_short.search(f.name))
        for kind, value, plausible in _values(f, rng, targets):
            plausible = plausible or (unchecked and kind in ("self", "cross", "random"))
            plausible = plausible or (uncounted and kind == "zero")
            if kind == "flip":
                value = original ^ 1
            elif kind == "page":
                value = (original + value) & ((1 << (8 * f.size)) - 1)
            if value == original:
                continue
            cases.append(
                Case(f"{f.name}={kind}", offset, value.to_bytes(f.size, byteorder), None, plausible)
            )
    return cases


def file_cases(core: Path, rng: random.Random, count: int) -> List[Case]:
    """Truncations of the core and damage to its ELF header, program headers and notes."""
    size = core.stat().st_size
    with open(core, "rb") as f:
        elf = ELFFile(f)
        phoff, phentsize, phnum = (elf.header[k] for k in ("e_phoff", "e_phentsize", "e_phnum"))
        note_segs = [
            (s["p_offset"], s["p_filesz"]) for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"
        ]
        loads = [(s["p_offset"], s["p_filesz"]) for s in elf.iter_segments()
                 if s["p_type"] == "PT_LOAD" and s["p_filesz"]]  # fmt: skip
    cases = []
    cuts = [1, 63, phoff + phentsize * phnum // 2, size - 1]
    cuts += [rng.randrange(o, o + n) for o, n in rng.sample(loads, min(count, len(loads)))]
    cuts += [o + n // 2 for o, n in note_segs]
    for cut in cuts:
        cases.append(Case(f"truncate@{cut:#x}", truncate=cut))
    for _ in range(count):
        what = rng.choice(("ehdr", "phdr", "note"))
        if what == "ehdr":
            offset, n = rng.randrange(16, 64), rng.choice((1, 2, 4, 8))
        elif what == "phdr":
            offset, n = phoff + rng.randrange(phentsize * phnum), rng.choice((1, 4, 8))
        else:
            o, size_ = rng.choice(note_segs)
            offset, n = o + rng.randrange(size_), rng.choice((1, 4, 8, 32))
        data = rng.choice((b"\xff" * n, bytes(n), rng.randbytes(n)))
        cases.append(Case(f"{what}@{offset:#x}+{n}", offset, data, file=True))
    return cases


def make_cases(prog: Program, core: Path, seed: int, count: Optional[int]) -> List[Case]:
    """
    The cases of *seed*: all field damage and *count* // 10 file damages,
    then a deterministic sample of *count* of them (all if None).
    """
    rng = random.Random(seed)
    cases = field_cases(prog, core, rng)
    cases += file_cases(core, rng, max(8, (count or len(cases)) // 10))
    if count is None or count >= len(cases):
        return cases
    # As many of each structure (FlatRange, RAMBlock, CPUState, the file...)
    # as there are: a vCPU's hundreds of fields must not crowd out the rest.
    groups: Dict[str, List[Case]] = {}
    for case in cases:
        groups.setdefault(re.split(r"[(\[.@=]", case.name, maxsplit=1)[0], []).append(case)
    sample: List[Case] = []
    while len(sample) < count:
        for group in groups.values():
            if group and len(sample) < count:
                sample.append(group.pop(rng.randrange(len(group))))
    return sample


def memory_digest(vmcore: Path) -> List[Tuple[int, int, str]]:
    """(p_paddr, p_filesz, sha256 of the bytes) of each PT_LOAD, read with pyelftools."""
    out = []
    with open(vmcore, "rb") as f:
        for s in ELFFile(f).iter_segments():
            if s["p_type"] != "PT_LOAD":
                continue
            h = hashlib.sha256()
            f.seek(s["p_offset"])
            left = s["p_filesz"]
            while left:
                chunk = f.read(min(left, 16 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            out.append((s["p_paddr"], s["p_filesz"], h.hexdigest()))
    return out


@dataclass
class Reference:
    """The undamaged core's dump."""

    memory: List[Tuple[int, int, str]]
    notes: List[Tuple[str, int, bytes]]


class Workbench:
    """A copy of a core that cases damage in place and restore after."""

    def __init__(self, pristine: Path, binary: Path, workdir: Path, extra: Sequence[str] = ()):
        self.pristine = pristine
        self.binary = binary
        self.workdir = workdir
        self.core = workdir / "damaged.core"
        self.out_dir = workdir / "out"
        self.out_dir.mkdir(exist_ok=True)
        self.extra = list(extra)
        subprocess.run(["cp", "--sparse=always", str(pristine), str(self.core)], check=True)
        self.size = pristine.stat().st_size
        ref = self.out_dir / "reference.vmcore"
        r = self._dump(ref)
        assert r[0] == 0, f"the undamaged core does not dump: {r[1]}"
        self.reference = Reference(memory_digest(ref), notes(ref))
        ref.unlink()

    def _dump(self, out: Path) -> Tuple[int, str, float, int]:
        cmd = [*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(self.core),
               "-s", str(self.binary), *self.extra, str(out)]  # fmt: skip
        return _run_limited(cmd)

    def _apply(self, case: Case) -> bytes:
        with open(self.core, "r+b") as f:
            if case.truncate is not None:
                f.truncate(case.truncate)
                return b""
            f.seek(case.offset)
            old = f.read(len(case.data))
            f.seek(case.offset)
            f.write(case.data)
            return old

    def _restore(self, case: Case, old: bytes) -> None:
        if case.truncate is not None:
            with open(self.pristine, "rb") as src, open(self.core, "r+b") as dst:
                pos = case.truncate
                while pos < self.size:
                    n = os.copy_file_range(src.fileno(), dst.fileno(), self.size - pos, pos, pos)
                    assert n > 0
                    pos += n
            return
        with open(self.core, "r+b") as f:
            f.seek(case.offset)
            f.write(old)

    def run(self, case: Case, views: bool = False) -> Outcome:
        """
        Run *case*; with *views*, also the %qemu views, for damage to QEMU's
        structures (a damaged file stops drgn's own loader before any
        command runs).
        """
        old = self._apply(case)
        try:
            return self._check(case, views)
        finally:
            self._restore(case, old)

    def _check(self, case: Case, views: bool) -> Outcome:
        out = self.out_dir / "guest.vmcore"
        rc, stderr, seconds, rss = self._dump(out)
        o = Outcome(case, rc, stderr, seconds, rss)
        left = sorted(p.name for p in self.out_dir.iterdir() if p.name != out.name)
        try:
            if rc == -signal.SIGKILL:
                o.failure = f"took over {CASE_SECONDS} s"
            elif "Traceback" in stderr:
                o.failure = "traceback"
            elif rss > CASE_BYTES:
                o.failure = f"peak RSS {rss >> 20} MiB"
            elif left:
                o.failure = f"left {left} behind"
            elif rc == 0:
                if not out.exists():
                    o.failure = "exit 0 without an output"
                elif not case.plausible and memory_digest(out) != self.reference.memory:
                    o.failure = "exit 0 with guest memory unlike the reference's"
                elif not case.plausible and notes(out) != self.reference.notes:
                    o.failure = "exit 0 with notes unlike the reference's"
            elif rc != 1:
                o.failure = f"exit status {rc}"
            elif out.exists():
                o.failure = "an output file after an error"
            elif len(stderr.strip().splitlines()) != 1 or not stderr.startswith(
                "drgn-qemu: error: "
            ):
                o.failure = "not one error line"
            if not o.failure and views and case.truncate is None and not case.file:
                o.failure = self._check_views()
        finally:
            out.unlink(missing_ok=True)
        return o

    def _check_views(self) -> str:
        """Every %qemu view: its output or one error line, no traceback."""
        # %qemu raises CommandError for an error, which is not a failure.
        code = (
            "from drgn.commands import CommandError, run_command\n"
            f"for view in {VIEWS!r}:\n"
            "    try:\n"
            "        run_command(prog, 'qemu ' + view)\n"
            "    except CommandError as e:\n"
            "        print(e)\n"
        )
        drgn_exe = str(Path(sys.executable).parent / "drgn")
        cmd = [drgn_exe, "-q", "-c", str(self.core), "-s", str(self.binary), "-e", code]
        rc, stderr, seconds, rss = _run_limited(cmd)
        if "Traceback" in stderr:
            return "%qemu traceback: " + stderr.strip().splitlines()[-1]
        if rc != 0 and "error:" not in stderr:
            return f"%qemu exit status {rc}"
        if rc == -signal.SIGKILL:
            return "%qemu took too long"
        if rss > CASE_BYTES:
            return f"%qemu peak RSS {rss >> 20} MiB"
        return ""


def _run_limited(cmd: List[str]) -> Tuple[int, str, float, int]:
    """
    Run *cmd* under GNU time: (exit status, stderr, seconds, peak RSS in
    bytes); its process group is killed past CASE_SECONDS.
    """
    # One file per call: cases run on two threads of this process.
    fd, name = tempfile.mkstemp(prefix="drgn-qemu-rss-")
    os.close(fd)
    rss_file = Path(name)
    t0 = time.monotonic()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=CASE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        rss_file.unlink(missing_ok=True)
        return -signal.SIGKILL, stderr, time.monotonic() - t0, 0
    seconds = time.monotonic() - t0
    text = rss_file.read_text().split() if rss_file.exists() else []
    rss_file.unlink(missing_ok=True)
    # GNU time says "Command exited with non-zero status N" before the figure.
    rss = int(text[-1]) * 1024 if text and text[-1].isdigit() else 0
    return proc.returncode, stderr, seconds, rss
