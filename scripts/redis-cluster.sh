#!/usr/bin/env bash
# Starts or stops a throwaway three-master Redis Cluster on loopback ports for the tests.
#
#   scripts/redis-cluster.sh start   # idempotent; prints the URL to export
#   scripts/redis-cluster.sh stop    # stops the nodes it started (by PID file) and removes its dir
#   scripts/redis-cluster.sh url     # prints redis+cluster://127.0.0.1:7101,...
#
# Environment: SESSIONKIT_CLUSTER_PORTS (default "7101 7102 7103"),
#              SESSIONKIT_CLUSTER_DIR (default /tmp/sessionkit-redis-cluster).
# Use it as: export SESSIONKIT_REDIS_CLUSTER=$(scripts/redis-cluster.sh start)
set -euo pipefail

PORTS=(${SESSIONKIT_CLUSTER_PORTS:-7101 7102 7103})
DIR=${SESSIONKIT_CLUSTER_DIR:-/tmp/sessionkit-redis-cluster}

url() {
    local hosts=()
    for p in "${PORTS[@]}"; do hosts+=("127.0.0.1:$p"); done
    local IFS=,
    echo "redis+cluster://${hosts[*]}"
}

alive() { # port pidfile
    [[ -f $2 ]] && kill -0 "$(cat "$2")" 2>/dev/null &&
        redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG
}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'
}

start() {
    command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 1; }
    mkdir -p "$DIR"
    for p in "${PORTS[@]}"; do
        local d="$DIR/$p"
        mkdir -p "$d"
        if alive "$p" "$d/pid"; then continue; fi
        rm -f "$d/nodes.conf" "$d/pid"
        redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 2000 \
            --save '' --appendonly no --dir "$d" --daemonize yes \
            --pidfile "$d/pid" --logfile "$d/log" >/dev/null
    done
    for p in "${PORTS[@]}"; do
        for _ in $(seq 100); do
            redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
        redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null | grep -q PONG ||
            { echo "node $p did not start (see $DIR/$p/log)" >&2; exit 1; }
    done
    if ! cluster_ok; then
        local nodes=()
        for p in "${PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
        # A half-made cluster from an interrupted run: start over on empty nodes.
        if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1; then
            cat "$DIR/create.log" >&2
            stop
            echo "cluster create failed; nodes stopped" >&2
            exit 1
        fi
        for _ in $(seq 100); do
            cluster_ok && break
            sleep 0.1
        done
        cluster_ok || { echo "cluster did not become ready" >&2; exit 1; }
    fi
    url
}

stop() {
    for p in "${PORTS[@]}"; do
        local f="$DIR/$p/pid"
        if [[ -f $f ]]; then
            local pid
            pid=$(cat "$f")
            if kill -0 "$pid" 2>/dev/null; then
                kill "$pid"
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -f "$f"
        fi
    done
    rm -rf "$DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
