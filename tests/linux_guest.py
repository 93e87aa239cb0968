"""
A real Linux guest for the tests: a Debian cloud kernel (scripts/fetch-kernel.sh)
booted under our debug QEMU with a tiny initramfs built here from Debian's
busybox-static. Its /init mounts proc, sys and devtmpfs, loads qemu_fw_cfg
(so that a vmcoreinfo device gets the kernel's VMCOREINFO) and virtio_mem (so
that a virtio-mem device's memory can be plugged; the kernel onlines it),
starts a process called "drgn-canary" and says on ttyS0 that it is up.
"""

import gzip
import io
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from harness import QemuGuest, cached_artifact

CANARY = "drgn-canary"
READY = "drgn-qemu guest up"
BUSYBOX = Path("/bin/busybox")


def init_script(modules: Sequence[str], console: str) -> str:
    """The guest's /init: mounts, *modules* loaded, the canary started, READY on *console*."""
    insmod = "".join(f"/bin/busybox insmod /{m}.ko\n" for m in modules)
    return f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
{insmod}/bin/{CANARY} &
echo "{READY}: $(/bin/busybox uname -r)" > /dev/{console}
while :; do /bin/busybox sleep 3600; done
"""


CANARY_SCRIPT = "#!/bin/busybox sh\nwhile :; do /bin/busybox sleep 3600; done\n"


@dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: Path
    vmlinux: Path
    fw_cfg_module: Path
    virtio_mem_module: Path
    #: Debian's architecture name: amd64, arm64, or i386 (686-pae).
    arch: str = "amd64"

    @property
    def busybox(self) -> Path:
        """busybox-static of the kernel's architecture: the host's, or fetched with it."""
        return BUSYBOX if self.arch == "amd64" else self.vmlinuz.parent / "busybox"

    @property
    def modules(self) -> List[Path]:
        """The modules /init loads: qemu_fw_cfg, and virtio_mem where the kernel has it."""
        return [m for m in (self.fw_cfg_module, self.virtio_mem_module) if m.exists()]

    @property
    def console(self) -> str:
        """The serial console of the machine the tests boot it on (pc's; virt's PL011)."""
        return "ttyAMA0" if self.arch == "arm64" else "ttyS0"


def fetch_kernel(series: str, arch: str = "amd64") -> Kernel:
    """A Debian cloud kernel of a series (6.1 or 6.12) and architecture, fetched once and cached."""
    d = cached_artifact("fetch-kernel.sh", series, arch)
    return Kernel(
        (d / "RELEASE").read_text().strip(),
        d / "vmlinuz",
        d / "vmlinux",
        d / "qemu_fw_cfg.ko",
        d / "virtio_mem.ko",
        arch,
    )


def _cpio_newc(entries: List[Tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's "newc" format: (path, mode, data)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
    return out.getvalue()


def build_initramfs(path: Path, kernel: Kernel) -> Path:
    dirs = ["bin", "proc", "sys", "dev", "tmp"]
    entries = [(d, 0o40755, b"") for d in dirs]
    init = init_script([m.stem for m in kernel.modules], kernel.console)
    entries += [
        ("bin/busybox", 0o100755, kernel.busybox.read_bytes()),
        ("bin/sh", 0o120777, b"busybox"),
        (f"bin/{CANARY}", 0o100755, CANARY_SCRIPT.encode()),
        ("init", 0o100755, init.encode()),
        *[(m.name, 0o100644, m.read_bytes()) for m in kernel.modules],
    ]
    path.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    return path


def boot_linux(
    binary: Path,
    work: Path,
    kernel: Kernel,
    vmcoreinfo_device: bool,
    memory: str = "1G",
    extra_args: Sequence[str] = (),
    smp: int = 1,
    accel: str = "tcg",
    cmdline: str = "",
    **guest_args: object,
) -> QemuGuest:
    """
    Start QEMU on the kernel (TCG unless *accel*, KASLR on unless *cmdline*
    says nokaslr) and wait until /init says it is up; *guest_args* go to
    :class:`QemuGuest` (cwd, core_limit).
    """
    initrd = build_initramfs(work / "initrd.gz", kernel)
    console = work / "console.log"
    extra = [
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initrd),
        "-append", f"console={kernel.console} panic=-1 loglevel=4 {cmdline}".rstrip(),
        "-no-reboot",
        "-serial", f"file:{console}",
    ]  # fmt: skip
    if vmcoreinfo_device:
        extra += ["-device", "vmcoreinfo"]
    extra += list(extra_args)
    guest = QemuGuest(binary, work, accel, memory=memory, machine_opts="dump-guest-core=on",
                      extra_args=extra, smp=smp, **guest_args).start()  # type: ignore[arg-type]  # fmt: skip
    deadline = time.monotonic() + 180
    while READY not in (console.read_text(errors="replace") if console.exists() else ""):
        if guest.proc is not None and guest.proc.poll() is not None:
            raise RuntimeError(f"QEMU exited while booting; console:\n{_tail(console)}")
        if time.monotonic() > deadline:
            guest.close()
            raise RuntimeError(f"the guest did not come up; console:\n{_tail(console)}")
        time.sleep(0.2)
    return guest


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def drgn_kernel_facts(vmcore: Path, vmlinux: Path) -> Dict[str, object]:
    """Open a kernel vmcore with drgn: the release and the tasks' names."""
    import drgn
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.Program()
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    release = prog["init_uts_ns"].name.release.string_().decode()
    comms = [t.comm.string_().decode() for t in for_each_task(prog)]
    return {"release": release, "comms": comms}


def crash_output(vmcore: Path, vmlinux: Path, commands: str = "sys\nps\n") -> str:
    """What crash prints for *commands* on a vmcore."""
    r = subprocess.run(
        ["crash", "-s", str(vmlinux), str(vmcore)],
        input=commands + "quit\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return r.stdout
