#!/usr/bin/env bash
# What TLS to the store costs: `sessionkit bench --store` (create, load, save, touch, destroy
# per session lifecycle, 16 concurrent clients) on PostgreSQL plain / sslmode=require /
# verify-full, and on a private Redis plain / rediss://, in interleaved rounds.
#
#   bash scripts/tls-cost.sh [rounds]      # default 5; prints one line per run
#
# Needs: the machine's PostgreSQL with ssl = on (Debian's snakeoil certificate, which names
# localhost), redis-server built with TLS, openssl. Starts two redis-servers on 127.0.0.1:7298
# (plain) and :7299 (TLS) and stops them by PID when done; drops its table afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
cargo build -q --release --features redis-tls,postgres-tls --bin sessionkit
SK=target/release/sessionkit
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    psql -h 127.0.0.1 -U postgres test -qc "drop table if exists sk_tlsbench" >/dev/null 2>&1 || true
    psql -h 127.0.0.1 -U postgres test -qc "delete from sessionkit_meta where name like '%sk_tlsbench%'" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 1 -subj /CN=tls-cost-ca -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=127.0.0.1 -keyout "$dir/s.key" -out "$dir/s.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/s.ext"
openssl x509 -req -in "$dir/s.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 1 -out "$dir/s.pem" -extfile "$dir/s.ext" 2>/dev/null
redis-server --port 0 --tls-port 7299 --tls-cert-file "$dir/s.pem" --tls-key-file "$dir/s.key" \
    --tls-ca-cert-file "$dir/ca.pem" --tls-auth-clients no --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$dir" >/dev/null &
pids+=($!)
redis-server --port 7298 --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
pids+=($!)
sleep 0.5
pg=postgres://postgres@127.0.0.1:5432/test?table=sk_tlsbench
cert=$(psql -h 127.0.0.1 -U postgres test -Atc 'show ssl_cert_file')
names=(pg-plain pg-require pg-verify-full redis-plain rediss)
urls=(
    "$pg"
    "$pg&sslmode=require"
    "${pg/127.0.0.1/localhost}&sslmode=verify-full&sslrootcert=$cert"
    "redis://127.0.0.1:7298"
    "rediss://127.0.0.1:7299?ca=$dir/ca.pem"
)
echo "round store lifecycles/s load-p50-us save-p50-us errors"
for round in $(seq "$rounds"); do
    for i in "${!names[@]}"; do
        n=20000
        [[ ${names[$i]} == pg* ]] && n=5000
        "$SK" bench --store "${urls[$i]}" --requests "$n" --concurrency 16 --json 2>/dev/null |
            python3 -c "import json,sys; d=json.load(sys.stdin); o={x['op']:x for x in d['ops']}; print('$round ${names[$i]}', round(o['load']['per_sec']), o['load']['p50_us'], o['save']['p50_us'], d['errors'])"
    done
done
