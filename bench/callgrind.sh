#!/bin/bash
# Instructions per request of a release `tollgate serve`, traced or not (bench/README.md, "Tracing cost"):
# standalone, one tokio worker, load.sh's routes, the mock outside valgrind; 300 warm-up requests, wait until
# the tokenizers have loaded, zero the counters, 2,000 non-stream requests (oha -n 2000 -c 8), dump; every
# thread's instructions (batch processor and exporter included) over 2,000.
#
# Usage: bash bench/callgrind.sh plain|trace   (TOLLGATE=…/release/tollgate MOCK=…/release/mock_server OHA=…)
# `trace` exports every request's spans (OTEL_TRACES_SAMPLER=always_on) to an endpoint where nothing
# listens: spans are built, queued and converted; sending fails.
set -euo pipefail
MODE=${1:?plain or trace}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE=${TOLLGATE:-$TARGET_DIR/release/tollgate}
MOCK=${MOCK:-$TARGET_DIR/release/mock_server}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cache/tollgate-bench/bin/oha")}
WORK=$(mktemp -d /tmp/tollgate-callgrind.XXXX)
source "$ROOT/bench/common.sh"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

"$MOCK" "$WORK/mock.port" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
for _ in $(seq 100); do [[ -s $WORK/mock.port ]] && break; sleep 0.1; done
PORT=$(free_port) ADMIN_PORT=$(free_port)
printf '[node]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n' "$PORT" "$ADMIN_PORT" >"$WORK/tollgate.toml"
bench_routes_toml "$(cat "$WORK/mock.port")" >>"$WORK/tollgate.toml"
OTEL=(OTEL_EXPORTER_OTLP_ENDPOINT=)
if [[ $MODE == trace ]]; then
    OTEL=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_TRACES_SAMPLER=always_on)
fi
env "${OTEL[@]}" TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$TOLLGATE" serve --config "$WORK/tollgate.toml" >"$WORK/tollgate.log" 2>&1 &
GW_PID=$!
trap 'kill $GW_PID $MOCK_PID 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
bench_body >"$WORK/body.json"
load() {
    "$OHA" --no-tui --output-format json -m POST -T application/json -H "Authorization: Bearer $BENCH_KEY" \
        -D "$WORK/body.json" "$@" "http://127.0.0.1:$PORT/v1/chat/completions"
}
load -n 300 -c 8 >"$WORK/warmup.json"
for _ in $(seq 600); do grep -qs '^tokenizer-warmu' /proc/"$GW_PID"/task/*/comm || break; sleep 0.5; done
sleep 5
callgrind_control -z "$GW_PID" >/dev/null
load -n 2000 -c 8 >"$WORK/run.json"
sleep 1
callgrind_control -d "$GW_PID" >/dev/null
total=$(awk '/^summary:/ { print $2; exit }' "$WORK/callgrind.out.1")
statuses=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["statusCodeDistribution"])' "$WORK/run.json")
echo "$MODE: $((total / 2000)) instructions per request ($total over 2,000; statuses $statuses; profile $WORK/callgrind.out.1)"
