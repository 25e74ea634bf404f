#!/usr/bin/env bash
# Bounded fuzz smoke run: every cargo-fuzz target for FUZZ_SECONDS (default 20) seconds, starting
# from the committed seeds. New inputs go to a scratch directory, so the seeds in fuzz/corpus stay
# small. Exits non-zero on the first target that crashes; the crashing input is left in
# fuzz/artifacts/<target>/ and can be replayed with `cargo fuzz run <target> <file>`.
#
# Usage: scripts/fuzz-smoke.sh [seconds] [target...]
# FUZZ_SANITIZER (default `none`): sessionkit has no unsafe code, and without AddressSanitizer the
# targets run about 30 times faster; set FUZZ_SANITIZER=address for an ASan build.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler (libFuzzer is built from
# source by the libfuzzer-sys crate). Works on the stable toolchain (see RUSTC_BOOTSTRAP below).
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-${FUZZ_SECONDS:-20}}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(cookie_header signed_cookie record_decode store_formats)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
# cargo-fuzz passes nightly-only flags (-Z...); this lets the default (stable) toolchain take
# them, and is harmless on nightly.
export RUSTC_BOOTSTRAP=1

san="${FUZZ_SANITIZER:-none}"
scratch="$(mktemp -d)"
cleanup() {
    rm -rf "$scratch"
    # store_formats keeps its stores in sessionkit-fuzz-<pid> (on /dev/shm when present) and
    # cannot remove them itself: libFuzzer exits without running destructors.
    for d in /dev/shm/sessionkit-fuzz-* "${TMPDIR:-/tmp}"/sessionkit-fuzz-*; do
        [ -d "$d" ] && [ ! -d "/proc/${d##*-}" ] && rm -rf "$d"
    done
    return 0
}
trap cleanup EXIT

# Build everything first so the time budget below is spent fuzzing, not compiling.
cargo fuzz build -O -s "$san"

for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "fuzz-smoke: $t for ${secs}s"
    if ! cargo fuzz run -O -s "$san" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log" >&2
        echo "fuzz-smoke: $t FAILED (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units' "$scratch/$t.log" | sed "s/^/fuzz-smoke: $t /" || true
done
echo "fuzz-smoke: ${#targets[@]} targets ran ${secs}s each without a crash"
