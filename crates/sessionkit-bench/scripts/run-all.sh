#!/bin/sh
# Runs every sessionkit benchmark and keeps the logs in bench-results/ (from the repo root:
# `sh crates/sessionkit-bench/scripts/run-all.sh`). Records the machine and its load before
# and after, since the figures only mean something next to those.
#
# Sized to finish in under 20 minutes on a 2-core machine once built: 3 interleaved runs or
# rounds per figure (the benches' own defaults are 5-7; set SKB_RUNS / SKB_ROUNDS to override).
set -e
cd "$(dirname "$0")/.."
: "${SKB_RUNS:=3}" "${SKB_ROUNDS:=3}"
export SKB_RUNS SKB_ROUNDS
# Everything is built first, so the timed part measures benches, not the compiler.
cargo build --release -p sessionkit-cli
cargo bench -p sessionkit-bench --no-run
# The tower-sessions side of the backends bench, which would otherwise build it on first use.
cargo build --release --manifest-path tower/Cargo.toml --target-dir tower/target
started=$(date +%s)
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
# The http bench also runs the real demo (`sessionkit serve --store memory://`), built above.
bench http
bench backends
python3 scripts/plot.py
echo "load after: $(uptime)" >> "$out/machine.txt"
echo "benches took $(( $(date +%s) - started )) s (SKB_RUNS=$SKB_RUNS SKB_ROUNDS=$SKB_ROUNDS)" | tee -a "$out/machine.txt"
date -u >> "$out/machine.txt"
