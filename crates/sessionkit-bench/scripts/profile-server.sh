#!/bin/sh
# Instructions per request of a whole HTTP server under callgrind: user space only (hyper, tokio,
# the app; the kernel is not counted), which is exact and repeatable where wall figures on a
# shared machine are not. The server runs under valgrind, the bench's load generator drives it
# over loopback: a 3 s warm-up, then the counters are zeroed and one counted load runs.
#
#   sh scripts/profile-server.sh <cookies> <secs> <server command...>
#
# <cookies> is the load generator's mode (none, conn, shared64); the server must print its
# port (alone, or at the end of its first line, as `sessionkit serve` does). Examples, from
# crates/sessionkit-bench after `cargo bench --no-run` and `cargo build --release -p sessionkit-cli`:
#
#   H=$(ls -t ../../target/release/deps/http-* | grep -v '\.d$' | head -1)
#   sh scripts/profile-server.sh conn 6 $H serve sessionkit-cookie
#   sh scripts/profile-server.sh shared64 6 ../../target/release/sessionkit serve \
#       --addr 127.0.0.1:0 --store memory://
#
# Prints `instructions requests instructions/request`; the callgrind output stays in
# $TMPDIR/profile-server.<pid>.* for callgrind_annotate.
set -e
cookies=$1 secs=$2
shift 2
load=$(ls -t "$(dirname "$0")"/../../../target/release/deps/http-* | grep -v '\.d$' | head -1)
tmp=${TMPDIR:-/tmp}
out=$tmp/profile-server.$$
valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" > "$out.stdout" 2> "$out.stderr" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
port=
for _ in $(seq 1 600); do
  port=$(head -1 "$out.stdout" 2>/dev/null | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "profile-server: the server printed no port" >&2; cat "$out.stderr" >&2; exit 1; }
"$load" --bench load "$port" "$cookies" 3 8 > /dev/null
callgrind_control -z "$pid" > /dev/null 2>&1
total=$("$load" --bench load "$port" "$cookies" "$secs" 8 | awk '{print $4}')
callgrind_control -d "$pid" > /dev/null 2>&1
sleep 1
instr=$(grep -h '^summary:' "$out.$pid".* | awk '{s += $2} END {print s}')
kill "$pid"
wait "$pid" 2>/dev/null || true
echo "$instr $total $((instr / total))"
