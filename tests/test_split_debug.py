"""
QEMU as distributions ship it: a stripped binary, its debug info in a
separate .debug file found by build ID (``--debug-directory``, like drgn's).
"""

import re
import shutil
import subprocess
from pathlib import Path

from harness import SERIES, QemuGuest, drgn_qemu_command, qemu_binary
from test_errors import assert_error
from test_real_qemu import run
from vmcore import assert_same_file_but_ehsize


def test_split_debug_info(tmp_path: Path) -> None:
    built = qemu_binary(SERIES[-1])
    binary = tmp_path / "usr" / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    shutil.copy(built, binary)
    notes = subprocess.run(["readelf", "-n", str(binary)], check=True, capture_output=True,
                           text=True).stdout  # fmt: skip
    m = re.search(r"Build ID: ([0-9a-f]+)", notes)
    assert m, notes
    build_id = m.group(1)
    debug_dir = tmp_path / "debug"
    debug_file = debug_dir / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    debug_file.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug_file)], check=True)
    subprocess.run(["strip", "--strip-debug", str(binary)], check=True)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={debug_file}", str(binary)], check=True)
    assert ".debug_info" not in subprocess.run(["readelf", "-S", str(binary)],
                                               capture_output=True, text=True).stdout  # fmt: skip

    with QemuGuest(binary, tmp_path, memory="256M", machine_opts="dump-guest-core=on") as guest:
        guest.stop()
        theirs = guest.dump(tmp_path / "qemu.vmcore")
        core = guest.gcore(tmp_path / "qemu.core")
    # The .gnu_debuglink names a file elsewhere: hide it, so only the
    # build-ID tree can find it.
    hidden = debug_file.with_name("hidden")
    debug_file.rename(hidden)
    out = tmp_path / "guest.vmcore"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core), str(out)])
    assert_error(
        r, f"no debug info for {binary}", f"build ID {build_id}", "/usr/lib/debug/.build-id"
    )
    hidden.rename(debug_file)
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core),
             "--debug-directory", str(debug_dir), str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_same_file_but_ehsize(out, theirs)
    # The debug link's file straight in the --debug-directory, as users
    # put it (no build-ID tree): found too, and listed when it is not.
    flat = tmp_path / "flat"
    flat.mkdir()
    hidden_tree = debug_dir.rename(tmp_path / "hidden-tree")
    out3 = tmp_path / "flat.vmcore"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core),
             "--debug-directory", str(flat), str(out3)])  # fmt: skip
    assert_error(r, f"{flat}/{debug_file.name}", f"{binary.parent}/.debug/{debug_file.name}")
    shutil.copy(hidden_tree / debug_file.relative_to(debug_dir), flat / debug_file.name)
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core),
             "--debug-directory", str(flat), str(out3)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out3.read_bytes() == out.read_bytes()
    # The same with the unstripped binary given with -s.
    out2 = tmp_path / "unstripped.vmcore"
    r = run([*drgn_qemu_command(), "dump-guest-memory", "-q", "-c", str(core), "-s", str(built),
             str(out2)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == out2.read_bytes()
