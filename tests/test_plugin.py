"""
The drgn plugin: %qemu in drgn's REPL and through drgn.commands.run_command,
checked against QEMU's own human monitor for the same stopped process.
"""

import os
import pty
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator

import pytest
from fixture_programs import GetCore
from harness import DRGN, SERIES, QemuGuest, kvm_usable, qemu_binary, qemu_source_dir
from vmcore import assert_same_file_but_ehsize

#: Runs each command; a CommandError (what %qemu raises on an error) is
#: printed as "CommandError: message" and the next command runs.
SCRIPT = """\
from drgn.commands import CommandError, run_command
for command in {commands!r}:
    try:
        run_command(prog, command)
    except CommandError as e:
        print(f"{{type(e).__name__}}: {{e}}")
"""


def run_commands(core: Path, binary: Path, *commands: str) -> str:
    code = SCRIPT.format(commands=commands)
    r = subprocess.run([DRGN, "-q", "-c", str(core), "-s", str(binary), "-e", code],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


@dataclass
class Monitored:
    series: str
    accel: str
    binary: Path
    core: Path
    guest: QemuGuest
    #: QEMU's own HMP output for each command.
    hmp: Dict[str, str]
    #: QEMU's own dump, taken before the core (under KVM, QEMU synchronizes
    #: the vCPU registers it holds when it dumps).
    qemu_dump: Path


#: CPU#0's code segment once SeaBIOS has run its course and idles in real
#: mode at F000:xxxx, where it stays: the state the guest is stopped in. It
#: passes through its 32-bit code on the way, for how long depends on the
#: machine's load, so a test must not stop it anywhere earlier.
SEABIOS_IDLE = re.compile(r"^CS =f000 000f0000 ", re.M)

HMP_COMMANDS = ["info ramblock", "info cpus", "info mtree", "info mtree -f", "info qom-tree",
                "info registers -a"]  # fmt: skip


@pytest.fixture(
    scope="module",
    params=[(s, a) for s in SERIES for a in ("tcg", "kvm")],
    ids=lambda p: f"qemu{p[0]}-{p[1]}",
)
def monitored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitored]:
    series, accel = request.param
    if accel == "kvm" and not kvm_usable():
        pytest.skip("/dev/kvm is not usable on this machine (the TCG cases still run)")
    binary = qemu_binary(series)
    work = tmp_path_factory.mktemp(f"plugin{series}")
    # Several RAM blocks and memory backends: a DIMM, with its own backend.
    extra = ["-object", "memory-backend-ram,id=mem1,size=128M",
             "-device", "pc-dimm,id=dimm1,memdev=mem1"]  # fmt: skip
    guest = QemuGuest(binary, work, accel, memory="512M,slots=2,maxmem=2G", smp=2,
                      extra_args=extra).start()  # fmt: skip
    try:
        guest.stop_when("info registers", lambda text: bool(SEABIOS_IDLE.search(text)))
        hmp = {c: guest.hmp(c).replace("\r\n", "\n") for c in HMP_COMMANDS}
        qemu_dump = guest.dump(work / "qemu.vmcore")
        core = guest.gcore(work / "qemu.core")
        yield Monitored(series, accel, binary, core, guest, hmp, qemu_dump)
    finally:
        guest.close()
        (work / "qemu.core").unlink(missing_ok=True)
        (work / "qemu.vmcore").unlink(missing_ok=True)


def test_ramblocks_equal_hmp(monitored: Monitored) -> None:
    m = monitored
    ours = run_commands(m.core, m.binary, "qemu ramblocks")
    assert "pc.ram" in ours and "mem1" in ours
    # In the columns of that QEMU: 7.2 prints no HVA and RO.
    assert ours == m.hmp["info ramblock"]
    assert (" HVA " in ours) == (m.series != "7.2")


def test_cpus_equal_hmp(monitored: Monitored) -> None:
    ours = run_commands(monitored.core, monitored.binary, "qemu cpus")
    assert ours == monitored.hmp["info cpus"]
    assert ours.count("CPU #") == 2


@pytest.mark.parametrize("command", ["mtree", "mtree -f", "qom-tree"])
def test_trees_equal_hmp(monitored: Monitored, command: str) -> None:
    """
    Identical, address spaces and flat views in the order of QEMU's
    GHashTable of them (pointer hashes), and under KVM the " KVM" marks of
    the ranges KVM has memory slots for.
    """
    m = monitored
    ours = run_commands(m.core, m.binary, f"qemu {command}")
    assert ours == m.hmp[f"info {command}"]
    assert ("dimm1" in ours) if command == "qom-tree" else ("mem1" in ours)
    if command == "mtree -f":
        assert (" KVM\n" in ours) == (m.accel == "kvm")


def test_registers_equal_hmp(monitored: Monitored) -> None:
    """
    Under TCG and KVM alike: HMP synchronizes the registers from KVM
    before it prints them, into the CPUX86State the core then holds (the
    guest is stopped, so KVM's registers do not move after).
    """
    m = monitored
    ours = run_commands(m.core, m.binary, "qemu registers -a")
    assert ours == m.hmp["info registers -a"]
    # SeaBIOS, idle in real mode: no long mode.
    assert "EIP=" in ours and SEABIOS_IDLE.search(ours.split("\nCPU#1\n")[0])
    one = run_commands(m.core, m.binary, "qemu registers 1")
    assert one == "\nCPU#1\n" + ours.split("\nCPU#1\n")[1]
    assert run_commands(m.core, m.binary, "qemu registers 7") == "CPU#7 not available\n"


def test_tree_options(monitored: Monitored) -> None:
    m = monitored
    ours = run_commands(m.core, m.binary, "qemu mtree --address-space I/O")
    assert ours.startswith("address-space: I/O\n") and "address-space: memory" not in ours
    assert ours.split("\n\n")[0] in m.hmp["info mtree"]
    flat = run_commands(m.core, m.binary, "qemu mtree -f --address-space memory")
    assert flat.count("FlatView #") == 1 and ' AS "memory", root: system' in flat
    assert flat in m.hmp["info mtree -f"]
    sub = run_commands(m.core, m.binary, "qemu qom-tree /machine/peripheral")
    assert sub == "/peripheral (container)\n  /dimm1 (pc-dimm)\n"
    err = run_commands(m.core, m.binary, "qemu mtree --address-space nowhere")
    assert err.startswith("CommandError: qemu mtree: no address space 'nowhere' (there are: ")
    # Uncaught, the error fails the script as any drgn command's does.
    r = subprocess.run([DRGN, "-q", "-c", str(m.core), "-s", str(m.binary), "-e",
                        "from drgn.commands import run_command\n"
                        "run_command(prog, 'qemu registers nine')"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0
    assert "CommandArgumentError: qemu registers: error: argument VCPU: invalid int" in r.stderr
    assert run_commands(m.core, m.binary, "qemu qom-tree /nowhere") == (
        "Path '/nowhere' could not be resolved.\n"
    )


def test_dump_command_equals_console_command(monitored: Monitored, tmp_path: Path) -> None:
    binary, core, theirs = monitored.binary, monitored.core, monitored.qemu_dump
    out = tmp_path / "repl.vmcore"
    text = run_commands(core, binary, f"qemu dump-guest-memory -q {out}")
    assert text == ""
    assert_same_file_but_ehsize(out, theirs)
    # Errors are one line, not a traceback.
    text = run_commands(core, binary, f"qemu dump-guest-memory -q {out}")
    assert text == (
        f"CommandError: qemu dump-guest-memory: output {out} already exists; use --force to "
        "overwrite it\n"
    )


def test_not_enabled_for_other_programs(cored: GetCore) -> None:
    c = cored("not_qemu")
    r = subprocess.run(
        [DRGN, "-q", "-c", str(c.core), "-s", str(c.binary), "-e",
         "from drgn.commands import run_command\nrun_command(prog, 'qemu cpus')"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode != 0
    assert "CommandNotFoundError" in r.stderr and "qemu" in r.stderr


def test_repl(monitored: Monitored) -> None:
    """%qemu typed at drgn's interactive prompt (a pseudo-terminal)."""
    binary, core, cpus = monitored.binary, monitored.core, monitored.hmp["info cpus"]
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(DRGN, [DRGN, "-q", "-c", str(core), "-s", str(binary)])
    output = b""

    def read_until(token: bytes, timeout: float = 60) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while token not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([fd], [], [], 1)[0]:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    break

    try:
        read_until(b">>> ")
        os.write(fd, b"%qemu cpus\n")
        read_until(b"thread_id=", 30)
        read_until(b">>> ", 30)
        # An error is one line, as drgn prints any command's.
        os.write(fd, b"%qemu mtree --address-space nowhere\n")
        read_until(b"drgn: error: qemu mtree: no address space 'nowhere'", 30)
        read_until(b">>> ", 30)
        os.write(fd, b"exit()\n")
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    for line in cpus.splitlines():
        assert line in text


def qemu_gdb(m: Monitored, *commands: str) -> str:
    """
    Run QEMU's own gdb script on the core: QEMU 10.0's scripts/qemu-gdb.py,
    for 7.2's too (7.2's 'qemu timers' reads a QEMUClock.last that 7.2 no
    longer has, and stops after its first line).
    """
    script = qemu_source_dir(qemu_binary("10.0")) / "scripts" / "qemu-gdb.py"
    args = [a for c in [f"source {script}", *commands] for a in ("-ex", c)]
    r = subprocess.run(["gdb", "-nx", "-batch", str(m.binary), str(m.core), *args],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    return r.stdout


def test_timers_equal_qemu_gdb(monitored: Monitored) -> None:
    m = monitored
    ours = run_commands(m.core, m.binary, "qemu timers")
    theirs = qemu_gdb(m, "qemu timers")
    assert ours and ours in theirs  # gdb prints its own banner lines first
    assert "Processing Virtual timers" in ours and "<rtc_update_timer>" in ours


def test_coroutine_equals_qemu_gdb(monitored: Monitored) -> None:
    """
    The monitor's QMP dispatcher coroutine, suspended waiting for commands:
    its demangled pc and sp equal what QEMU's gdb script computes
    ($qemu_coroutine_pc/sp), and drgn unwinds its stack to
    coroutine_trampoline (the gdb script's frame-pointer walk gets nothing
    from an -O2 build in a core).
    """
    m = monitored
    ours = run_commands(m.core, m.binary, "qemu coroutine qmp_dispatcher_co")
    theirs = qemu_gdb(m, "p/x (long)$qemu_coroutine_pc(qmp_dispatcher_co)",
                      "p/x (long)$qemu_coroutine_sp(qmp_dispatcher_co)")  # fmt: skip
    pc, sp = re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", theirs, re.M)
    header, *frames = ours.splitlines()
    assert f"rip={pc} rsp={sp} " in header
    assert " in qemu_coroutine_switch " in frames[0]
    assert any(" in monitor_qmp_dispatcher_co " in f for f in frames)
    assert " in coroutine_trampoline " in frames[-1]


def test_bt_finds_coroutines_as_gdb(monitored: Monitored) -> None:
    m = monitored
    ours = run_commands(m.core, m.binary, "qemu bt")
    theirs = qemu_gdb(m, "thread apply all -s p/x (long)co_tls_current")
    found = re.findall(r"\(LWP (\d+)\)[^\n]*:\n\$\d+ = (0x[0-9a-f]+)", theirs)
    assert found
    for tid, co in found:
        # Each thread's co_tls_current (a TLS variable) as gdb reads it.
        line = next(ln for ln in ours.splitlines() if ln.startswith(f"Thread {tid}"))
        assert line.endswith(f", in coroutine {co}:" if co != "0x0" else ":"), line
    tids = [tid for tid, _ in found]
    assert "qemu_thread_start" in ours and "main_loop_wait" in ours
    one = run_commands(m.core, m.binary, f"qemu bt {tids[-1]}")
    assert one.startswith(f"Thread {tids[-1]}") and one.count("Thread ") == 1


def test_live_process(monitored: Monitored) -> None:
    """The same views from the live, stopped QEMU (-p), whose monitor we do not use."""
    m = monitored
    code = SCRIPT.format(commands=("qemu mtree -f", "qemu qom-tree", "qemu bt"))
    r = subprocess.run([DRGN, "-q", "-p", str(m.guest.pid), "-s", str(m.binary), "-e", code],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    expected = m.hmp["info mtree -f"] + m.hmp["info qom-tree"]
    assert r.stdout.startswith(expected)
    assert r.stdout[len(expected) :] == (
        "CommandError: qemu bt: backtraces need a core: drgn cannot read a live process's "
        "registers (take a core with gcore, and keep QEMU running)\n"
    )
