#!/usr/bin/env bash
# Fetch a Debian cloud kernel for the Linux guest tests and print the
# directory holding it:
#
#   scripts/fetch-kernel.sh 6.1|6.12 [amd64|arm64|i386]
#
# The directory (under ${DRGN_QEMU_CACHE:-~/.cache/drgn-qemu}/kernels, outside
# the checkout) holds vmlinuz, vmlinux (debug info, from the -dbg package),
# the modules the guest loads, qemu_fw_cfg.ko and virtio_mem.ko
# (uncompressed; arm64 and i386 kernels have no virtio_mem), and RELEASE; for
# arm64 and i386 also busybox, Debian's busybox-static of that architecture,
# for the guest's initramfs. i386 is the 686-pae flavour (no cloud flavour
# there; 6.1 only): a 32-bit kernel in PAE paging. Fetched once, then reused. Picks the newest build of the
# series whose -dbg package is in the archive.
set -euo pipefail

series=${1:?usage: fetch-kernel.sh 6.1|6.12 [amd64|arm64|i386]}
arch=${2:-amd64}
flavour=cloud-$arch
case "$arch" in
  amd64|arm64) ;;
  i386) flavour=686-pae ;;
  *) echo "fetch-kernel.sh: unknown architecture '$arch' (amd64, arm64 or i386)" >&2; exit 2 ;;
esac
case "$series/$arch" in
  6.12/i386) echo "fetch-kernel.sh: no 6.12 kernel for i386 here (6.1)" >&2; exit 2 ;;
esac
case "$series" in
  6.1)  release_re="6\\.1\\.0-[0-9]+-$flavour" ;;
  6.12) release_re="6\\.12\\.[0-9]+\\+deb12-cloud-$arch" ;;
  *) echo "fetch-kernel.sh: unknown series '$series' (6.1 or 6.12)" >&2; exit 2 ;;
esac
cache=${DRGN_QEMU_CACHE:-$HOME/.cache/drgn-qemu}/kernels
export DEBIAN_FRONTEND=noninteractive
log() { echo "fetch-kernel.sh: $*" >&2; }

MODULES="qemu_fw_cfg virtio_mem"
pkgarch=""  # the host's packages; another architecture's are named pkg:ARCH
if [ "$arch" != amd64 ]; then MODULES="qemu_fw_cfg"; pkgarch=":$arch"; fi
if [ "$arch" != amd64 ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  log "adding the $arch architecture to dpkg, for its kernel and busybox packages"
  dpkg --add-architecture "$arch"
  apt-get update -q >&2
fi
# Uncompress the modules of an unpacked linux-image package into the current directory.
take_modules() {
  for name in $MODULES; do
    module=$(find lib/modules -name "$name.ko*")
    case "$module" in
      *.xz) xz -dc "$module" > "$name.ko" ;;
      *.zst) zstd -dc "$module" > "$name.ko" ;;
      *) cp "$module" "$name.ko" ;;
    esac
  done
}
module_paths() {
  for name in $MODULES; do echo "./lib/modules/$1/kernel/*/$name.ko*"; done
}

# A kernel of the series fetched before is reused; one fetched before the
# guest needed virtio_mem.ko gets it from its image package.
cached=$(ls "$cache" 2>/dev/null | grep -E "^$release_re\$" | sort -V | tail -n1 || true)
if [ -n "$cached" ] && [ -f "$cache/$cached/RELEASE" ]; then
  if [ "$arch" = amd64 ] && [ ! -f "$cache/$cached/virtio_mem.ko" ]; then
    log "adding virtio_mem.ko to $cache/$cached"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q "linux-image-$cached-unsigned" >&2 &&
     dpkg-deb --fsys-tarfile linux-image-*.deb | tar -x --wildcards $(module_paths "$cached") &&
     take_modules && cp virtio_mem.ko "$cache/$cached/")
    rm -rf "$tmp"
  fi
  echo "$cache/$cached"
  exit 0
fi

pattern="^linux-image-$release_re-unsigned\$"
names=$(apt-cache pkgnames linux-image- 2>/dev/null || true)
if ! grep -Eq "$pattern" <<<"$names"; then
  apt-get update -q >&2
  names=$(apt-cache pkgnames linux-image-)
fi
release=
for pkg in $(grep -E "$pattern" <<<"$names" | sort -V -r); do
  rel=${pkg#linux-image-}; rel=${rel%-unsigned}
  if apt-cache show "linux-image-$rel-dbg$pkgarch" >/dev/null 2>&1; then
    release=$rel
    break
  fi
done
[ -n "$release" ] || { log "no $series cloud kernel with a -dbg package in the archive"; exit 1; }

out=$cache/$release
for tool in dpkg-deb xz; do
  command -v "$tool" >/dev/null || apt-get install -y -q --no-install-recommends dpkg xz-utils >&2
done
tmp=$out.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
cd "$tmp"
log "downloading linux-image-$release-unsigned and -dbg (about 300 MB)"
apt-get download -q "linux-image-$release-unsigned$pkgarch" "linux-image-$release-dbg$pkgarch" >&2
dpkg-deb --fsys-tarfile linux-image-"$release"-unsigned_*.deb \
  | tar -x --wildcards "./boot/vmlinuz-$release" $(module_paths "$release")
dpkg-deb --fsys-tarfile linux-image-"$release"-dbg_*.deb \
  | tar -x --wildcards "./usr/lib/debug/boot/vmlinux-$release"
mv "boot/vmlinuz-$release" vmlinuz
mv "usr/lib/debug/boot/vmlinux-$release" vmlinux
take_modules
if [ "$arch" != amd64 ]; then
  apt-get download -q "busybox-static:$arch" >&2
  dpkg-deb --fsys-tarfile busybox-static_*.deb | tar -x ./bin/busybox
  mv bin/busybox busybox
  rm -rf bin
fi
rm -rf boot usr lib ./*.deb
echo "$release" > RELEASE
cd /
mv "$tmp" "$out"
log "fetched $release into $out"
echo "$out"
