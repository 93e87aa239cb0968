#!/usr/bin/env bash
# Build qemu-system-* with debug info from Debian's qemu source package.
#
#   scripts/build-qemu.sh 7.2|10.0 [TARGET...]
#
# TARGET is x86_64 (the default), aarch64, ppc64 or s390x; the targets named
# are built by one configure. Prints the path of each built binary, one per
# line, in the order given.
#
# Builds are cached under ${DRGN_QEMU_CACHE:-~/.cache/drgn-qemu} (outside the
# checkout) in a directory whose name includes a hash of this script, so a
# change to the build recipe rebuilds, and an existing build is reused.
# The script installs what it needs (deb-src entries, build dependencies):
# run it as root on a fresh Debian machine.
set -euo pipefail

series=${1:?usage: build-qemu.sh 7.2|10.0 [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64)
for t in "${targets[@]}"; do
  case "$t" in
    x86_64|aarch64|ppc64|s390x) ;;
    *) echo "build-qemu.sh: unknown target '$t' (x86_64, aarch64, ppc64 or s390x)" >&2; exit 2 ;;
  esac
done
case "$series" in
  7.2)  suite=bookworm ;;
  10.0) suite=trixie ;;
  *) echo "build-qemu.sh: unknown QEMU series '$series' (7.2 or 10.0)" >&2; exit 2 ;;
esac

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
log() { echo "build-qemu.sh: $*" >&2; }

# Keep pyenv and other user Pythons out of QEMU's configure.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive

src_list=/etc/apt/sources.list.d/drgn-qemu-src.sources
if [ ! -f "$src_list" ]; then
  log "adding deb-src entries for bookworm and trixie ($src_list)"
  cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm trixie
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
  bison python3-venv xz-utils >&2

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

# A small device set per target. x86_64: the pc machine, -device loader, DIMMs
# and fw_cfg DMA (which brings the vmcoreinfo device). The others: the one
# machine the tests run (virt, pseries, s390-ccw-virtio) and what it selects.
declare -A devices=(
  [x86_64]=$'CONFIG_I440FX=y\nCONFIG_GENERIC_LOADER=y\nCONFIG_DIMM=y\nCONFIG_FW_CFG_DMA=y'
  [aarch64]=$'CONFIG_ARM_VIRT=y\nCONFIG_GENERIC_LOADER=y'
  [ppc64]=$'CONFIG_PSERIES=y\nCONFIG_GENERIC_LOADER=y'
  [s390x]=$'CONFIG_S390_CCW_VIRTIO=y'
)
target_list=()
ninja_targets=()
device_args=()
for t in "${targets[@]}"; do
  echo "${devices[$t]}" > "$srcdir/configs/devices/$t-softmmu/drgn-qemu.mak"
  target_list+=("$t-softmmu")
  ninja_targets+=("qemu-system-$t")
  device_args+=("--with-devices-$t=drgn-qemu")
done

build=$out.build
rm -rf "$build" "$out"
mkdir -p "$build"
args=(--target-list="$(IFS=,; echo "${target_list[*]}")" --without-default-features
      --without-default-devices "${device_args[@]}" --enable-tcg --enable-debug-info
      --disable-docs --disable-tools --disable-werror --disable-strip)
# KVM only serves the host's own architecture.
if [[ " ${targets[*]} " == *" x86_64 "* ]]; then args+=(--enable-kvm); fi
if [ -d "$srcdir/python/scripts" ] && grep -q "disable-download" "$srcdir/configure"; then
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
