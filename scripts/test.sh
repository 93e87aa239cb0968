#!/usr/bin/env bash
# Run all of drgn-qemu's checks on a fresh machine: install what is needed,
# build the debug QEMUs and fetch the guest kernels (cached in
# ~/.cache/drgn-qemu), lint, type-check and
# run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
# QEMU 10.0's x86_64 and the other targets by one configure (as tests/harness.py).
for series in 5.2 7.2 10.2; do
  echo "test.sh: QEMU $series: $(scripts/build-qemu.sh "$series")"
done
echo "test.sh: QEMU 10.0:" $(scripts/build-qemu.sh 10.0 x86_64 aarch64 ppc64 s390x riscv64 loongarch64)
for series in 6.1 6.12; do
  echo "test.sh: Linux $series guest kernel: $(scripts/fetch-kernel.sh "$series")"
done
echo "test.sh: Linux 6.1 arm64 guest kernel: $(scripts/fetch-kernel.sh 6.1 arm64)"
echo "test.sh: Linux 6.1 686-pae guest kernel: $(scripts/fetch-kernel.sh 6.1 i386)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The benchmark on its smallest guest, as a smoke test (timings are not asserted).
bench=$(mktemp -d)  # a directory of this run's own: two runs may share the machine
.venv/bin/python benchmarks/bench_dump.py --smoke --workdir "$bench"
rm -rf "$bench"
.venv/bin/python benchmarks/bench_startup.py
# The slowest tests are listed at the end, to keep the run within its hour.
exec .venv/bin/pytest -v --durations=40 "$@"
