"""
The corruption suite: seeded damage to cores of the synthetic fixtures and
of real QEMU 7.2 and 10.0 guests (see corruption.py for the cases and the
invariant). CI runs a deterministic sample of each; the long run takes
every case:

    DRGN_QEMU_CORRUPTION=all pytest tests/test_corruption.py -s

(DRGN_QEMU_CORRUPTION=N for N cases per core, DRGN_QEMU_CORRUPTION_SEED
for another seed). Each test prints its figures: cases, outcomes, the
slowest case and the peak memory.
"""

import collections
import concurrent.futures
import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import drgn
import pytest
from corruption import Outcome, Workbench, make_cases
from fixture_programs import LAYOUTS, GetCore
from harness import SERIES, QemuGuest, qemu_binary

SEED = int(os.environ.get("DRGN_QEMU_CORRUPTION_SEED", "20261127"))
_SETTING = os.environ.get("DRGN_QEMU_CORRUPTION", "")
#: Cases per core: a sample in CI, every case in the long run.
COUNT: Optional[int] = None if _SETTING == "all" else int(_SETTING or 0) or None
#: The %qemu views run on every VIEWS_EVERY-th case.
VIEWS_EVERY = 4


def _program(core: Path, binary: Path) -> drgn.Program:
    prog = drgn.Program()
    prog.set_core_dump(str(core))
    try:
        prog.load_debug_info([str(binary)], main=True)
    except drgn.MissingDebugInfoError:
        pass
    return prog


def _campaign(core: Path, binary: Path, workdir: Path, count: int, label: str) -> None:
    """
    Run the cases of *core*, two at a time on two copies of it (each case
    damages its copy and restores it), and check the invariant of each.
    """
    cases = make_cases(_program(core, binary), core, SEED, COUNT if _SETTING else count)
    workers = min(2, len(os.sched_getaffinity(0)))
    benches = []
    for i in range(workers):
        (workdir / f"copy{i}").mkdir()
        benches.append(Workbench(core, binary, workdir / f"copy{i}"))

    def run_share(i: int) -> List[Outcome]:
        return [benches[i].run(case, views=n % VIEWS_EVERY == 0)
                for n, case in enumerate(cases) if n % workers == i]  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        shares = list(pool.map(run_share, range(workers)))
    outcomes = [o for share in shares for o in share]
    failures = [o for o in outcomes if o.failure]
    results = collections.Counter(
        "exit 0" if o.returncode == 0 else o.stderr.split(":", 2)[-1].split("(")[0].strip()[:60]
        for o in outcomes
    )
    slowest = max(outcomes, key=lambda o: o.seconds)
    biggest = max(outcomes, key=lambda o: o.max_rss)
    print(
        f"\n{label}: {len(outcomes)} cases (seed {SEED}), {len(failures)} failures; "
        f"slowest {slowest.seconds:.2f} s ({slowest.case.name}), "
        f"peak RSS {biggest.max_rss >> 20} MiB ({biggest.case.name})"
    )
    for result, n in results.most_common(12):
        print(f"  {n:5d}  {result}")
    assert not failures, "\n".join(
        f"{o.case.name}: {o.failure}; exit {o.returncode}; {o.stderr.strip()[-600:]}"
        for o in failures[:20]
    )
    # The sample must damage what matters: some cases are refused.
    assert any(o.returncode == 1 for o in outcomes)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synthetic_cores(layout: str, cored: GetCore, tmp_path: Path) -> None:
    c = cored(layout)
    _campaign(c.core, c.binary, tmp_path, 60, f"synthetic {layout}")


@pytest.fixture(scope="module", params=SERIES, ids=lambda s: f"qemu{s}")
def qemu_core(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tuple[str, Path, Path]]:
    """A core of a stopped 2-vCPU pc guest with a memory backend and a DIMM."""
    series = request.param
    work = tmp_path_factory.mktemp(f"corrupt{series}")
    binary = qemu_binary(series)
    extra = ["-object", "memory-backend-ram,id=mem1,size=64M",
             "-device", "pc-dimm,id=dimm1,memdev=mem1"]  # fmt: skip
    with QemuGuest(binary, work, memory="128M,slots=2,maxmem=1G", smp=2,
                   machine_opts="dump-guest-core=on", extra_args=extra) as guest:  # fmt: skip
        guest.stop()
        core = guest.gcore(work / "qemu.core")
    yield series, binary, core
    core.unlink()


def test_qemu_cores(qemu_core: Tuple[str, Path, Path], tmp_path: Path) -> None:
    series, binary, core = qemu_core
    _campaign(core, binary, tmp_path, 150, f"QEMU {series}")
