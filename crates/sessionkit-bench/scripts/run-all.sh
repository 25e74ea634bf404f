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
# Runs one bench, its output shown and kept in $out/<name>.txt; stops the script if it fails
# (plain sh has no pipefail, and `cargo bench | tee` would hide a failed bench).
bench() {
  { cargo bench -p sessionkit-bench --bench "$1" 2>&1; echo $? > "$out/.status"; } | tee "$out/$1.txt"
  status=$(cat "$out/.status"); rm -f "$out/.status"
  if [ "$status" != 0 ]; then echo "run-all: the $1 bench failed (exit $status)" >&2; exit 1; fi
}
bench heap
bench store
# The http bench also runs the real demo (`sessionkit serve --store memory://`).
cargo build --release -p sessionkit-cli
bench http
bench backends
python3 scripts/plot.py
echo "load after: $(uptime)" >> "$out/machine.txt"
date -u >> "$out/machine.txt"
