"""
The demo behind scripts/demo.sh: a firmware-only QEMU guest with known bytes
in its RAM, stopped, dumped by QEMU itself over QMP, cored with gcore, and
dumped again from the core by drgn-qemu; then the two vmcores are compared.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import QemuGuest, drgn_qemu_command, kvm_usable, write_blob  # noqa: E402
from vmcore import (  # noqa: E402
    assert_same_file_but_ehsize,
    assert_same_memory,
    loads,
    read_phys,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("qemu", type=Path, help="debug qemu-system-x86_64")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "drgn-qemu-demo",
        help="where the core and vmcores go (default: %(default)s)",
    )
    parser.add_argument("--memory", default="768M", help="guest RAM (default: %(default)s)")
    args = parser.parse_args()

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    for name in ("qemu.core", "qemu.vmcore", "guest.vmcore", "qmp.sock"):
        (work / name).unlink(missing_ok=True)
    blob = write_blob(work / "blob.bin", 4 << 20, 1)
    accel = "kvm" if kvm_usable() else "tcg"
    print(f"== starting {args.qemu} ({accel}, {args.memory}, dump-guest-core=on)")
    with QemuGuest(
        args.qemu,
        work,
        accel,
        memory=args.memory,
        extra_args=["-device", f"loader,file={work / 'blob.bin'},addr=0x1000000,force-raw=on"],
    ) as guest:
        time.sleep(0.5)
        guest.stop()
        t0 = time.monotonic()
        guest.dump(work / "qemu.vmcore")
        qemu_seconds = time.monotonic() - t0
        print(f"== QEMU's own QMP dump-guest-memory: {qemu_seconds:.2f} s")
        guest.gcore(work / "qemu.core")
        print(f"== gcore wrote {work / 'qemu.core'}; killing QEMU")
    cmd = [
        *drgn_qemu_command(),
        "dump-guest-memory",
        "-c",
        str(work / "qemu.core"),
        "-s",
        str(args.qemu),
        str(work / "guest.vmcore"),
    ]
    print("== $ drgn-qemu " + " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    ours_seconds = time.monotonic() - t0
    compared = assert_same_memory(work / "guest.vmcore", work / "qemu.vmcore")
    # Notes and headers too, but for e_ehsize, which QEMU writes wrong (8).
    assert_same_file_but_ehsize(work / "guest.vmcore", work / "qemu.vmcore")
    segments = len(loads(work / "guest.vmcore"))
    assert read_phys(work / "guest.vmcore", 0x1000000, len(blob)) == blob
    print(
        f"== identical to QEMU's own dump but for e_ehsize: {segments} PT_LOAD segments, "
        f"{compared / (1 << 20):.1f} MiB of guest memory and the vCPU notes, byte for byte "
        f"(drgn-qemu from the core {ours_seconds:.2f} s, QEMU over QMP {qemu_seconds:.2f} s)"
    )
    (work / "qemu.vmcore").unlink()
    print(f"== the vmcore is {work / 'guest.vmcore'}; the QEMU core is {work / 'qemu.core'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
