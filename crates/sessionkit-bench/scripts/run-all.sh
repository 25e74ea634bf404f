#!/bin/sh
# Runs every sessionkit benchmark and keeps the logs in bench-results/ (from the repo root:
# `sh crates/sessionkit-bench/scripts/run-all.sh`). Records the machine and its load before
# and after, since the figures only mean something next to those.
set -e
cd "$(dirname "$0")/.."
out=bench-results
mkdir -p "$out"
{
  date -u
  echo "nproc: $(nproc)"
  grep -m1 'model name' /proc/cpuinfo
  rustc --version
  echo "load before: $(uptime)"
} > "$out/machine.txt"
cargo bench -p sessionkit-bench --bench heap 2>&1 | tee "$out/heap.txt"
cargo bench -p sessionkit-bench --bench store 2>&1 | tee "$out/store.txt"
# The http bench also runs the real demo (`sessionkit serve --store memory://`).
cargo build --release -p sessionkit-cli
cargo bench -p sessionkit-bench --bench http 2>&1 | tee "$out/http.txt"
cargo bench -p sessionkit-bench --bench backends 2>&1 | tee "$out/backends.txt"
python3 scripts/plot.py
echo "load after: $(uptime)" >> "$out/machine.txt"
date -u >> "$out/machine.txt"
