#!/usr/bin/env bash
# A/B of two tollgate binaries on the load benchmark's mock: for each, a closed loop at 64 connections and an open
# loop at 2,000 req/s, printing req/s, p50/p99 and the gateway's CPU per request (from /proc). The two binaries
# alternate ROUNDS times so drift on the machine hits both alike. Gateway on CPU 1, mock + oha on CPU 0, all
# SCHED_FIFO (run as root). Needs oha and the mock (build them with `bash bench/load.sh` once).
#
# Usage: bash bench/ab.sh A_BINARY B_BINARY        Env: ROUNDS=3 DURATION=5s RATE=2000 OHA=... MOCK=...
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 A_BINARY B_BINARY" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-5s}; RATE=${RATE:-2000}
OHA=${OHA:-$(command -v oha || echo "${HOME:-/root}/.cache/tollgate-bench/bin/oha")}
MOCK=${MOCK:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mock_server}
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
KEY=$BENCH_KEY
WORK=$(mktemp -d /tmp/tollgate-ab.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
bench_body >"$WORK/body.json"

run() { # label binary
    rm -f "$WORK/mock.port"
    chrt -f 10 taskset -c 0 "$MOCK" "$WORK/mock.port" >"$WORK/mock.log" 2>&1 &
    local mock=$! _
    for _ in $(seq 100); do [[ -s "$WORK/mock.port" ]] && break; sleep 0.05; done
    printf '[node]\nlisten = "127.0.0.1:18181"\nadmin_listen = "127.0.0.1:18191"\n' >"$WORK/tollgate.toml"
    bench_routes_toml "$(cat "$WORK/mock.port")" >>"$WORK/tollgate.toml"
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn chrt -f 10 taskset -c 1 "$2" serve --config "$WORK/tollgate.toml" >"$WORK/gw.log" 2>&1 &
    local gw=$! mode t0 t1 n
    sleep 1.5
    for mode in closed open; do
        local args=(-z "$DURATION" -c 64)
        [[ $mode == open ]] && args+=(-q "$RATE" --latency-correction)
        chrt -f 10 taskset -c 0 "$OHA" --no-tui --output-format json -z 1s -c 64 -m POST -T application/json \
            -H "Authorization: Bearer $KEY" -D "$WORK/body.json" http://127.0.0.1:18181/v1/chat/completions >/dev/null 2>&1
        t0=$(awk '{print $14+$15}' /proc/$gw/stat)
        chrt -f 10 taskset -c 0 "$OHA" --no-tui --output-format json "${args[@]}" -m POST -T application/json \
            -H "Authorization: Bearer $KEY" -D "$WORK/body.json" http://127.0.0.1:18181/v1/chat/completions >"$WORK/o.json" 2>/dev/null
        t1=$(awk '{print $14+$15}' /proc/$gw/stat)
        n=$(jq '.statusCodeDistribution["200"] // 0' "$WORK/o.json")
        jq -r --arg name "$1" --arg mode "$mode" --arg us "$(( (t1 - t0) * 1000000 / $(getconf CLK_TCK) / (n > 0 ? n : 1) ))" \
            '"\($name) \($mode): \(.summary.requestsPerSec | floor) req/s, p50 \(.latencyPercentiles.p50 * 1e6 | floor) us, p99 \(.latencyPercentiles.p99 * 1e6 | floor) us, gateway \($us) us CPU/request"' "$WORK/o.json"
    done
    kill "$gw" "$mock"; wait "$gw" "$mock" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
    run A "$A"
    run B "$B"
done
