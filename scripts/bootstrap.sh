#!/usr/bin/env bash
# Install what drgn-qemu's demo, tests and benchmarks need on a fresh Debian
# machine (run as root): Debian packages, and a virtualenv in .venv with
# drgn-qemu installed in editable mode with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in gcc gdb gdb-multiarch binutils time seabios qemu-system-data busybox-static crash \
    makedumpfile xz-utils zstd lz4 \
    python3-venv util-linux ca-certificates; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

if [ ! -x .venv/bin/drgn-qemu ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "bootstrap: creating .venv" >&2
  python3 -m venv .venv
  log=$(mktemp)
  if ! { .venv/bin/pip install --upgrade pip && .venv/bin/pip install -e '.[test]'; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  touch .venv/.installed
fi
# An editable install leaves drgn_qemu uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set (CI machines) every run compiled its
# modules again: 0.13 s of each dump's 0.45 s here. pip compiles a normal
# install; this does the same for the checkout (a stale file is recompiled
# in memory, never used).
.venv/bin/python -m compileall -q drgn_qemu contrib >&2
