"""
drgn on the guest's kernel in place (drgn-qemu guest, drgn_qemu.guest): a
Linux guest (Debian's 6.1 without -device vmcoreinfo, 6.12 with it, and an arm64 6.1 without it; QEMU
10.0, TCG, 2 vCPUs), stopped. One drgn script (init_uts_ns, every task's
pid, comm, state and stack, on-CPU tasks included, the module list, the
slab caches and the RAM the kernel counts) prints the same on:

- the guest Program from the QEMU core (drgn-qemu guest -c), and from the
  live process stopped for the session (-p --stop);
- drgn on our vmcore of the same core (the dump path's oracle);
- where the guest allows (the device: drgn needs it), drgn --qemu on the
  running QEMU over its QMP Unix socket, and drgn-qemu guest -p without
  --stop (is_live): both without registers, so without the on-CPU stacks.

And each error a user can meet is one line and exit 1.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from harness import DRGN, QemuGuest, cross_qemu_binary, drgn_qemu_command, qemu_binary
from linux_guest import CANARY, Kernel, boot_linux, fetch_kernel

#: Prints what a kernel engineer looks at first; with --no-on-cpu, the
#: stacks of the tasks on a vCPU are left out (a live kernel has no
#: registers for them).
SCRIPT = r"""
import sys
from drgn.helpers.linux.cpumask import for_each_online_cpu
from drgn.helpers.linux.mm import totalram_pages
from drgn.helpers.linux.module import for_each_module
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import cpu_curr, task_state_to_char
from drgn.helpers.linux.slab import for_each_slab_cache


def stack(task):
    for frame in prog.stack_trace(task):
        if frame.pc < 1 << 63:
            # User space: drgn reads a QEMU vmcore's p_vaddr (QEMU writes
            # the guest-physical address there) as a virtual address, so
            # it unwinds user stacks from low guest-physical memory there.
            break
        print("   ", frame.name or hex(frame.pc))


on_cpu = {cpu_curr(prog, cpu).value_(): cpu for cpu in for_each_online_cpu(prog)}
print(prog["init_uts_ns"].name.release.string_().decode())
for task in for_each_task(prog):
    cpu = on_cpu.get(task.value_())
    print(task.pid.value_(), task.comm.string_().decode(), task_state_to_char(task),
          "" if cpu is None else f"on CPU {cpu}")
    if cpu is None or "--no-on-cpu" not in sys.argv:
        stack(task)
for cpu in for_each_online_cpu(prog):  # an idle vCPU runs its idle task, not in the list
    task = cpu_curr(prog, cpu)
    print(f"on CPU {cpu}:", task.pid.value_(), task.comm.string_().decode())
    if "--no-on-cpu" not in sys.argv:
        stack(task)
print("modules:", sorted(m.name.string_().decode() for m in for_each_module(prog)))
print("slab caches:", len(list(for_each_slab_cache(prog))))
print("RAM pages:", totalram_pages(prog))
"""


#: HMP's 'info registers' of a vCPU in user mode: x86 CPL 3, Arm EL0.
USER_MODE = re.compile(r"CPL=3|EL0[th]")


@dataclass
class Guest:
    kernel: Kernel
    device: bool
    binary: Path
    core: Path
    vmcore: Path
    #: What the script printed, by how it ran.
    out: Dict[str, str]


def _guest_cmd(*args: str) -> List[str]:
    return [*drgn_qemu_command(), "guest", *args]


def _script(work: Path) -> Path:
    path = work / "tasks.py"
    path.write_text(SCRIPT)
    return path


def _run(command: List[str]) -> str:
    r = subprocess.run(command, capture_output=True, text=True)
    assert r.returncode == 0, (command, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


#: (kernel series, -device vmcoreinfo, Debian architecture): x86-64 with and
#: without the device, and an arm64 guest (virt, Cortex-A57).
CASES = [("6.1", False, "amd64"), ("6.12", True, "amd64"), ("6.1", False, "arm64")]


def _id(case: Tuple[str, bool, str]) -> str:
    series, device, arch = case
    suffix = "" if arch == "amd64" else "-arm64"
    return f"linux{series}-{'device' if device else 'nodevice'}{suffix}"


@pytest.fixture(scope="module", params=CASES, ids=_id)
def guest(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    series, device, arch = request.param
    kernel = fetch_kernel(series, arch)
    work = tmp_path_factory.mktemp(f"guest{series}-{arch}")
    script = _script(work)
    sock = work / "drgn.sock"
    extra = ["-qmp", f"unix:{sock},server=on,wait=off"]
    if arch == "amd64":
        binary = qemu_binary("10.0")
        running = boot_linux(binary, work, kernel, device, smp=2, extra_args=extra)
    else:
        binary = cross_qemu_binary("aarch64")
        running = boot_linux(binary, work, kernel, device, smp=2, machine="virt",
                             extra_args=[*extra, "-cpu", "cortex-a57"])  # fmt: skip
    out: Dict[str, str] = {}
    try:
        # Both vCPUs in the kernel (x86 CPL 0, Arm EL1), so that each on-CPU
        # task has a kernel stack to unwind: just after the console says
        # READY, a vCPU may still be in the init's user space.
        running.stop_when("info registers -a", lambda text: not USER_MODE.search(text))
        vmlinux = str(kernel.vmlinux)
        pid = str(running.pid)
        out["live --stop"] = _run(_guest_cmd("-p", pid, "--stop", "-s", str(binary), "-g", vmlinux,
                                             str(script)))  # fmt: skip
        out["live"] = _run(_guest_cmd("-p", pid, "-s", str(binary), "-g", vmlinux, str(script),
                                      "--no-on-cpu"))  # fmt: skip
        if device:
            out["drgn --qemu"] = _run([DRGN, "-q", "--qemu", str(sock), "-s", vmlinux,
                                       str(script), "--no-on-cpu"])  # fmt: skip
        core = running.gcore(work / "qemu.core")
    finally:
        running.close()
    vmcore = work / "ours.vmcore"
    _run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core), "-s", str(binary),
          str(vmcore)])  # fmt: skip
    out["core"] = _run(_guest_cmd("-c", str(core), "-s", str(binary), "-g", str(kernel.vmlinux),
                                  str(script)))  # fmt: skip
    out["core --no-on-cpu"] = _run(_guest_cmd("-c", str(core), "-s", str(binary), "-g",
                                              str(kernel.vmlinux), str(script), "--no-on-cpu"))  # fmt: skip
    out["vmcore"] = _run([DRGN, "-q", "-c", str(vmcore), "-s", str(kernel.vmlinux), str(script)])
    yield Guest(kernel, device, binary, core, vmcore, out)
    for p in work.iterdir():
        if p.is_file():
            p.unlink()


def test_core_equals_vmcore(guest: Guest) -> None:
    """From the QEMU core in place, drgn sees what it sees in our vmcore, on-CPU stacks included."""
    out = guest.out
    assert out["core"] == out["vmcore"]
    lines = out["core"].splitlines()
    assert lines[0] == guest.kernel.release
    assert any(line.split()[1:2] == [CANARY] for line in lines if line[:1].isdigit())
    # Two vCPUs, each running a task whose stack is unwound from its registers.
    on_cpu = [n for n, line in enumerate(lines) if line.startswith("on CPU ")]
    assert len(on_cpu) == 2
    for n in on_cpu:
        assert lines[n + 1].startswith("    "), lines[n : n + 3]
    # Without registers (--no-on-cpu, as live), no stacks under the on-CPU tasks.
    bare = guest.out["core --no-on-cpu"].splitlines()
    assert [bare[n + 1][:4] for n, line in enumerate(bare) if line.startswith("on CPU ")] == [
        "on C",
        "modu",
    ]
    (modules,) = [line for line in lines if line.startswith("modules: ")]
    assert "'qemu_fw_cfg'" in modules  # the test's init loads it
    assert int(lines[-1].split()[-1]) > 100_000  # pages of a 1 GiB guest


def test_live_stopped_equals_core(guest: Guest) -> None:
    """-p --stop: a still picture of the running QEMU, with the vCPUs' registers."""
    assert guest.out["live --stop"] == guest.out["core"]


def test_live_equals_core_but_registers(guest: Guest) -> None:
    """-p (is_live): the same kernel, read as it runs (paused here), without on-CPU stacks."""
    assert guest.out["live"] == guest.out["core --no-on-cpu"]
    assert guest.out["core --no-on-cpu"] != guest.out["core"]


@pytest.mark.parametrize("guest", [CASES[1]], indirect=True, ids=_id)
def test_drgn_qemu_qmp_equals_core(guest: Guest) -> None:
    """drgn's own --qemu on the running QEMU (it needs -device vmcoreinfo) sees the same."""
    assert guest.out["drgn --qemu"] == guest.out["core --no-on-cpu"]


def _error(command: List[str]) -> str:
    r = subprocess.run(command, capture_output=True, text=True)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("drgn-qemu: error: "), r.stderr
    return lines[0]


def test_wrong_vmlinux(guest: Guest) -> None:
    other = fetch_kernel("6.12" if guest.kernel.release.startswith("6.1.0-") else "6.1", "amd64")
    line = _error(_guest_cmd("-c", str(guest.core), "-s", str(guest.binary), "-g",
                             str(other.vmlinux), "-e", "pass"))  # fmt: skip
    assert f"{other.vmlinux} (build ID " in line
    assert f"is not the guest's kernel: it runs Linux {guest.kernel.release} (build ID " in line
    # No -g, and none in drgn's standard places: the release and build ID to look for.
    line = _error(_guest_cmd("-c", str(guest.core), "-s", str(guest.binary), "-e", "pass"))
    assert f"no debug info for the guest's kernel, Linux {guest.kernel.release} (build ID " in line
    assert "-g PATH" in line


def test_python_api(guest: Guest) -> None:
    """drgn_qemu.guest_program() from a script: the guest's Program beside QEMU's."""
    code = (
        "import drgn_qemu\n"
        "from drgn_qemu.guest import load_guest_debug_info\n"
        "guest = drgn_qemu.guest_program(prog)\n"
        f"load_guest_debug_info(guest, [{str(guest.kernel.vmlinux)!r}])\n"
        "print(guest['init_uts_ns'].name.release.string_().decode())\n"
        "print(prog['current_machine'].type_)\n"
    )
    out = _run([DRGN, "-q", "-c", str(guest.core), "-s", str(guest.binary), "-e", code])
    assert out.splitlines()[0] == guest.kernel.release
    assert "MachineState" in out.splitlines()[1]


def test_qemu_repl_binds_the_guest(guest: Guest) -> None:
    """%qemu guest in the QEMU session binds the guest's Program: QEMU and its guest side by side."""
    code = (
        "from drgn.commands import run_command\n"
        f"run_command(prog, 'qemu guest -g {guest.kernel.vmlinux}', globals=globals())\n"
        "from drgn.helpers.linux.sched import cpu_curr\n"
        "print(guest.stack_trace(cpu_curr(guest, 0))[0].name)\n"
        "print(prog['current_machine'].smp.cpus.value_())\n"
    )
    out = _run([DRGN, "-q", "-c", str(guest.core), "-s", str(guest.binary), "-e", code])
    lines = [line for line in out.splitlines() if not line.startswith("warning: ")]
    assert lines[0] == f"guest: the guest's Linux {guest.kernel.release}"
    assert lines[-1] == "2"  # QEMU's own state, in the same session
    trace = guest.out["core"].split("\non CPU 0: ", 1)[1].splitlines()
    assert lines[-2] == trace[1].strip()


def _firmware_guest_error(tmp_path: Path, binary: Path, *args: str, **guest: object) -> str:
    """The error of drgn-qemu guest ARGS on the core of a stopped firmware-only guest."""
    with QemuGuest(binary, tmp_path, memory="128M", **guest) as running:  # type: ignore[arg-type]
        running.stop()
        core = running.gcore(tmp_path / "qemu.core")
    return _error(_guest_cmd("-c", str(core), "-s", str(binary), *args, "-e", "pass"))


def test_no_linux_kernel(tmp_path: Path) -> None:
    """A firmware-only guest: no VMCOREINFO, and --vmcoreinfo named as the way out."""
    line = _firmware_guest_error(tmp_path, qemu_binary("10.0"))
    assert "no Linux kernel's VMCOREINFO in the guest" in line and "--vmcoreinfo FILE" in line


def test_no_guest_ram(tmp_path: Path) -> None:
    """dump-guest-core=off: the reason a dump gives, for every block."""
    line = _firmware_guest_error(tmp_path, qemu_binary("10.0"),
                                 machine_opts="dump-guest-core=off")  # fmt: skip
    assert "is not in the core" in line and "dump-guest-core=off" in line


def test_architecture_drgn_cannot_debug(tmp_path: Path) -> None:
    """A riscv64 guest: drgn walks no RISC-V page tables; the dump route is named instead."""
    vmcoreinfo = tmp_path / "vmcoreinfo"  # past the check for a Linux kernel
    vmcoreinfo.write_text(
        "OSRELEASE=6.12.0\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff81000000\n"
    )
    line = _firmware_guest_error(tmp_path, cross_qemu_binary("riscv64"), "--vmcoreinfo",
                                 str(vmcoreinfo), machine="virt", machine_opts="",
                                 extra_args=["-bios", "none"])  # fmt: skip
    assert "drgn cannot debug the Linux kernel of this riscv64 guest" in line
    assert "drgn-qemu dump-guest-memory" in line


def test_usage(tmp_path: Path) -> None:
    r = subprocess.run(_guest_cmd("-c", str(tmp_path / "x"), "--stop"), capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().endswith(
        "--stop only works with -p PID (a core does not run)"
    )


@pytest.mark.parametrize("guest", [CASES[0]], indirect=True, ids=_id)
def test_readme_transcript(guest: Guest, tmp_path: Path) -> None:
    """The README's guest transcript, run as written on this guest, compared but for counts."""
    from test_linux_guest import _run_readme_block, _vary, readme_links
    from test_readme import README

    body = README.split("\n### The guest's kernel in drgn, in place: `guest`\n", 1)[1]
    readme_links(tmp_path, guest.core, guest.binary, guest.kernel.vmlinux)
    runs = _run_readme_block(body.split("```\n", 2)[1], tmp_path)
    assert len(runs) == 1
    got, expected = runs[0]
    assert _vary(got) == _vary(expected)
    assert got[1] == guest.kernel.release
