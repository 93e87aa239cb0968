#!/usr/bin/env bash
# Build qemu-system-* with debug info from Debian's qemu source package.
#
#   scripts/build-qemu.sh 5.2|7.2|10.0|10.2 [TARGET...]
#
# TARGET is x86_64 (the default), aarch64, ppc64, s390x, riscv64 or
# loongarch64; the targets named are built by one configure (their common
# code compiled once). Prints the path of each built binary, one per line,
# in the order given. x86_64 is built with lzo and snappy, so that QEMU's
# own kdump-lzo and kdump-snappy files can be compared with ours. 5.2 (Debian
# bullseye's, as users still run it) is built for x86_64 only, with its
# default devices and meson 0.59 from PyPI: it predates --without-default-features
# and the device files the newer builds use.
#
# Builds are cached under ${DRGN_QEMU_CACHE:-~/.cache/drgn-qemu} (outside the
# checkout) in a directory whose name includes a hash of this script, so a
# change to the build recipe rebuilds, and an existing build is reused.
# The script installs what it needs (deb-src entries, build dependencies):
# run it as root on a fresh Debian machine.
set -euo pipefail

series=${1:?usage: build-qemu.sh 5.2|7.2|10.0|10.2 [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64)
for t in "${targets[@]}"; do
  case "$t" in
    x86_64|aarch64|ppc64|s390x|riscv64|loongarch64) ;;
    *) echo "build-qemu.sh: unknown target '$t' (x86_64, aarch64, ppc64, s390x, riscv64 or loongarch64)" >&2; exit 2 ;;
  esac
done
case "$series" in
  5.2)  suite=bullseye ;;
  7.2)  suite=bookworm ;;
  10.0) suite=trixie ;;
  10.2) suite=sid ;;
  *) echo "build-qemu.sh: unknown QEMU series '$series' (5.2, 7.2, 10.0 or 10.2)" >&2; exit 2 ;;
esac
if [ "$series" = 5.2 ] && [ "${targets[*]}" != x86_64 ]; then
  echo "build-qemu.sh: QEMU 5.2 is built for x86_64 only" >&2; exit 2
fi

cache=${DRGN_QEMU_CACHE:-$HOME/.cache/drgn-qemu}
recipe=$(sha256sum "$0" | cut -c1-12)
if [ "${targets[*]}" = x86_64 ]; then
  out=$cache/qemu-$series-$recipe
else
  out=$cache/qemu-$series-$(IFS=-; echo "${targets[*]}")-$recipe
fi
print_binaries() { for t in "${targets[@]}"; do echo "$out/qemu-system-$t"; done; }
if [ -f "$out/VERSION" ]; then
  print_binaries
  exit 0
fi
# One build of a directory at a time: a second run (two test runs on one
# machine) waits for the first, then finds its result.
mkdir -p "$cache"
exec 9>"$out.lock"
flock 9
if [ -f "$out/VERSION" ]; then
  print_binaries
  exit 0
fi
log() { echo "build-qemu.sh: $*" >&2; }

# Keep pyenv and other user Pythons out of QEMU's configure.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive

src_list=/etc/apt/sources.list.d/drgn-qemu-src.sources
if ! grep -qx "Suites: bullseye bookworm trixie sid" "$src_list" 2>/dev/null; then
  log "adding deb-src entries for bullseye, bookworm, trixie and sid ($src_list)"
  cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bullseye bookworm trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -q >&2
fi
if ! apt-cache showsrc qemu 2>/dev/null | grep -q "^Version: "; then
  apt-get update -q >&2
fi
apt-get install -y -q --no-install-recommends dpkg-dev build-essential pkg-config \
  libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev ninja-build meson flex \
  bison python3-venv xz-utils liblzo2-dev libsnappy-dev >&2

# The newest qemu source of the suite.
version=$(apt-cache showsrc qemu | awk -v s="$series" '
  /^Package: /{p=$2} /^Version: /{v=$2; split(v,a,":"); u=a[2]; if (p=="qemu" && index(u, s)==1) print v}' \
  | sort -V | tail -n1)
[ -n "$version" ] || { log "no qemu $series source package found in the $suite sources"; exit 1; }

srcroot=$cache/src
mkdir -p "$srcroot"
upstream=${version#*:}; upstream=${upstream%-*}
srcdir=$srcroot/qemu-$upstream
if [ ! -f "$srcdir/configure" ]; then
  log "fetching qemu $version source"
  rm -rf "$srcdir"
  (cd "$srcroot" && apt-get source -q "qemu=$version" >&2)
fi

# A small device set per target. x86_64: the pc machine, -device loader, DIMMs,
# virtio-mem (over PCI) and fw_cfg DMA (which brings the vmcoreinfo device). The others: the one
# machine the tests run (virt, pseries, s390-ccw-virtio) and what it selects.
declare -A devices=(
  [x86_64]=$'CONFIG_I440FX=y\nCONFIG_GENERIC_LOADER=y\nCONFIG_DIMM=y\nCONFIG_FW_CFG_DMA=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_MEM=y'
  [aarch64]=$'CONFIG_ARM_VIRT=y\nCONFIG_GENERIC_LOADER=y'
  [ppc64]=$'CONFIG_PSERIES=y\nCONFIG_GENERIC_LOADER=y'
  [s390x]=$'CONFIG_S390_CCW_VIRTIO=y'
  [riscv64]=$'CONFIG_RISCV_VIRT=y\nCONFIG_GENERIC_LOADER=y'
  [loongarch64]=$'CONFIG_LOONGARCH_VIRT=y\nCONFIG_GENERIC_LOADER=y'
)
# QEMU 10.2's x86 build, with default devices off, links and starts its
# machines only with q35's PCIe, PXB and CXL devices.
if [ "$series" = 10.2 ]; then
  devices[x86_64]+=$'\nCONFIG_Q35=y\nCONFIG_PXB=y\nCONFIG_CXL=y\nCONFIG_CXL_MEM_DEVICE=y\nCONFIG_PCIE_PORT=y'
fi
target_list=()
ninja_targets=()
device_args=()
for t in "${targets[@]}"; do
  target_list+=("$t-softmmu")
  ninja_targets+=("qemu-system-$t")
  if [ "$series" != 5.2 ]; then
    echo "${devices[$t]}" > "$srcdir/configs/devices/$t-softmmu/drgn-qemu.mak"
    device_args+=("--with-devices-$t=drgn-qemu")
  fi
done

build=$out.build
rm -rf "$build" "$out"
mkdir -p "$build"
args=(--target-list="$(IFS=,; echo "${target_list[*]}")" --enable-tcg --enable-debug-info
      --disable-docs --disable-tools --disable-werror --disable-strip)
if [ "$series" != 5.2 ]; then
  args+=(--without-default-features --without-default-devices "${device_args[@]}")
fi
# KVM only serves the host's own architecture; lzo and snappy for QEMU's
# kdump-lzo and kdump-snappy, compared with ours on x86.
if [[ " ${targets[*]} " == *" x86_64 "* ]]; then args+=(--enable-kvm --enable-lzo --enable-snappy); fi
if [ "$series" = 5.2 ]; then
  # QEMU 5.2's meson.build wants meson 0.55 to 0.59; Debian 12's is 1.0.
  venv=$cache/meson-0.59-venv
  if [ ! -x "$venv/bin/meson" ]; then
    log "creating $venv with meson 0.59 from PyPI"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'meson>=0.59,<0.60' >&2
  fi
  args+=(--meson="$venv/bin/meson")
elif [ -d "$srcdir/python/scripts" ] && grep -q "disable-download" "$srcdir/configure"; then
  # QEMU >= 8.1: needs a meson newer than Debian bookworm's; use one from PyPI.
  venv=$cache/meson-venv
  if [ ! -x "$venv/bin/meson" ]; then
    log "creating $venv with meson from PyPI"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'meson>=1.5,<2' >&2
  fi
  args+=(--python="$venv/bin/python3" --disable-download --disable-install-blobs)
else
  args+=(--meson=/usr/bin/meson)
fi
log "configuring qemu $version in $build"
(cd "$build" && "$srcdir/configure" "${args[@]}" >&2)
log "building (this takes a few minutes)"
ninja -C "$build" "${ninja_targets[@]}" >&2
mkdir -p "$out"
for t in "${targets[@]}"; do
  cp "$build/qemu-system-$t" "$out/"
done
# VERSION is written last: its presence marks a complete build.
echo "$version" > "$out/VERSION"
rm -rf "$build"
log "built $(print_binaries | tr '\n' ' ')"
print_binaries
