#!/usr/bin/env bash
# The demo: build a debug QEMU if needed, boot a guest, core the QEMU process,
# dump the guest's memory from the core with drgn-qemu, and show that the
# result equals QEMU's own dump-guest-memory of the same guest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
binary=$(scripts/build-qemu.sh 10.0)
exec .venv/bin/python scripts/demo.py "$binary" "$@"
