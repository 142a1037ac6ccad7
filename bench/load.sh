#!/usr/bin/env bash
# Load benchmark: the same ~300-byte OpenAI chat request sent (1) straight to the mock upstream, (2) through
# nginx as a plain reverse proxy, (3) through tollgate, on a 2-core machine:
#
#   CPU 1: the gateway under test (nginx with worker_processes 1, or tollgate with one tokio worker)
#   CPU 0: the mock upstream (tests/src/mock_upstream.rs, answers at once) and the load generator (oha)
#
# Scenarios per target: closed loop at $CONNS connections, open loop at each rate in $RATES (oha -q, with
# latency correction), and a streaming closed loop ("stream": true) at $CONNS connections. Each scenario gets
# a fresh mock (it records every request it serves, so its memory grows) and a fresh gateway, a warm-up, then
# a $DURATION measurement. Prints a table with req/s, p50, p99, the throughput ratio vs nginx and the latency
# each proxy adds over direct.
#
# Usage (as root on Debian; installs nginx, jq and oha if missing):  bash bench/load.sh
# Env: DURATION=10s  WARMUP=1s  CONNS=64  RATES="2000 8000"  TARGETS="direct nginx tollgate"  REPEAT=1 (rounds; medians)
#      (more targets: tollgate-raft = a one-node Raft cluster; tollgate-budget = the same with an org token budget,
#       so TARGETS="tollgate-raft tollgate-budget" measures what budget enforcement costs end to end;
#       tollgate-spin = standalone with node.idle_spin_us = $SPIN_US (default 150); tollgate-guard = standalone
#       with an injection and a PII guardrail on every request; tollgate-trace = standalone with every request
#       traced (OTLP, 100 % sampling, to an endpoint where nothing listens); hyper = a bare hyper
#       server + pooled client (bench/src/bin/hyper_proxy.rs), the floor for any proxy built on that stack)
#      SCENARIOS="closed open stream"  OUT_DIR=<dir to keep the raw oha JSON + table>
#      REPORT_FROM=<an OUT_DIR of an earlier run: print its table again, run nothing>
#      OHA=<path to oha>  BENCH_CACHE=~/.cache/tollgate-bench (where oha is installed)
#      NGINX_PORT=18080 TOLLGATE_PORT=18081 TOLLGATE_ADMIN_PORT=18091  GATEWAY_CPU=1 CLIENT_CPU=0  NICE=-10  PRIO=nice|rt
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
RATES=${RATES:-"2000 8000"}
TARGETS=${TARGETS:-"direct nginx tollgate"}
SCENARIOS=${SCENARIOS:-"closed open stream"}
REPEAT=${REPEAT:-1}
SPIN_US=${SPIN_US:-150}
NGINX_PORT=${NGINX_PORT:-18080}
HYPER_PORT=${HYPER_PORT:-18082}
TOLLGATE_PORT=${TOLLGATE_PORT:-18081}
TOLLGATE_ADMIN_PORT=${TOLLGATE_ADMIN_PORT:-18091}
TOLLGATE_RAFT_PORT=${TOLLGATE_RAFT_PORT:-18071}
GATEWAY_CPU=${GATEWAY_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
# Measured processes run at this nice level, so stray background work (builds) disturbs them less; on a busy
# shared machine PRIO=rt runs them SCHED_FIFO instead (chrt -f 10), which preempts everything else.
NICE=${NICE:--10}
PRIO=${PRIO:-nice}
case $PRIO in
    nice) PRIO_CMD=(nice -n "$NICE") ;;
    rt) PRIO_CMD=(chrt -f 10) ;;
    *) echo "PRIO must be nice or rt" >&2; exit 2 ;;
esac
BENCH_CACHE=${BENCH_CACHE:-${HOME:-/root}/.cache/tollgate-bench}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
KEY=$BENCH_KEY
WORK=$(mktemp -d /tmp/tollgate-load.XXXXXX)
PIDS=()

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop_pid() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_all
    if [[ -n "${KEEP_WORK:-}" ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- dependencies ----

apt_install() {
    command -v apt-get >/dev/null || die "$1 is missing and apt-get is not available; install $1"
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; } \
        || die "apt-get install $* failed"
}

REPORT_FROM=${REPORT_FROM:-}
if [[ -n "$REPORT_FROM" ]]; then
    command -v jq >/dev/null || apt_install jq
else
    command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
    command -v taskset >/dev/null || apt_install util-linux
    command -v jq >/dev/null || apt_install jq
    NGINX=$(command -v nginx || true)
    [[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
    if [[ -z "$NGINX" && " $TARGETS " == *" nginx "* ]]; then
        apt_install nginx
        # Debian starts the packaged service; it is not ours to leave running on :80, but not ours to stop either.
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    fi

    OHA=${OHA:-$(command -v oha || true)}
    if [[ -z "$OHA" ]]; then
        OHA="$BENCH_CACHE/bin/oha"
        if [[ ! -x "$OHA" ]]; then
            log "installing oha into $BENCH_CACHE (first run only; takes a few minutes)"
            mkdir -p "$BENCH_CACHE"
            cargo install oha --locked --root "$BENCH_CACHE" >&2 \
                || die "cargo install oha failed; install oha (https://github.com/hatoo/oha) and set OHA=/path/to/oha"
        fi
    fi
    "$OHA" --version >/dev/null || die "$OHA does not run"

    # ---- build ----

    log "building tollgate and the mock server (release)"
    (cd "$ROOT" && cargo build --release -q -p tollgate -p tollgate-bench --bin tollgate --bin mock_server --bin hyper_proxy) >&2
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    TOLLGATE="$TARGET_DIR/release/tollgate"
    MOCK="$TARGET_DIR/release/mock_server"
    HYPER_PROXY="$TARGET_DIR/release/hyper_proxy"
    [[ -x "$TOLLGATE" && -x "$MOCK" && -x "$HYPER_PROXY" ]] || die "binaries not found under $TARGET_DIR/release"

fi

# ---- request bodies (~300 bytes) ----

BODY="$WORK/body.json"
STREAM_BODY="$WORK/stream.json"
bench_body >"$BODY"
# Tollgate always asks the upstream for usage on streams; asking everywhere keeps the three streams identical.
cat >"$STREAM_BODY" <<'EOF'
{"model":"mock-gpt","messages":[{"role":"system","content":"You are a concise assistant for an online store."},{"role":"user","content":"Where is my order #48213? It was supposed to arrive on Monday?"}],"temperature":0.2,"max_tokens":256,"stream":true,"stream_options":{"include_usage":true}}
EOF

# ---- processes ----

wait_port() { # port, what, pid
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || die "$2 exited; see $WORK/*.log"
        sleep 0.05
    done
    die "$2 did not listen on :$1"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

MOCK_PORT=
start_mock() {
    rm -f "$WORK/mock.port"
    "${PRIO_CMD[@]}" taskset -c "$CLIENT_CPU" "$MOCK" "$WORK/mock.port" >"$WORK/mock.log" 2>&1 &
    PIDS+=($!)
    MOCK_PID=$!
    local pid=$! _
    for _ in $(seq 200); do [[ -s "$WORK/mock.port" ]] && break; kill -0 "$pid" 2>/dev/null || die "mock exited"; sleep 0.05; done
    MOCK_PORT=$(cat "$WORK/mock.port")
    wait_port "$MOCK_PORT" mock "$pid"
}

start_nginx() {
    port_free "$NGINX_PORT" || die "port $NGINX_PORT is in use (set NGINX_PORT)"
    local prefix="$WORK/nginx"
    mkdir -p "$prefix/tmp"
    chmod 777 "$prefix/tmp"
    cat >"$prefix/nginx.conf" <<EOF
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    "${PRIO_CMD[@]}" taskset -c "$GATEWAY_CPU" "$NGINX" -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" -g 'daemon off;' \
        >"$WORK/nginx.log" 2>&1 &
    PIDS+=($!)
    GW_PID=$!
    wait_port "$NGINX_PORT" nginx $!
}

start_hyper() {
    port_free "$HYPER_PORT" || die "port $HYPER_PORT is in use (set HYPER_PORT)"
    TOKIO_WORKER_THREADS=1 "${PRIO_CMD[@]}" taskset -c "$GATEWAY_CPU" "$HYPER_PROXY" "127.0.0.1:$HYPER_PORT" \
        "http://127.0.0.1:$MOCK_PORT" >"$WORK/hyper.log" 2>&1 &
    PIDS+=($!)
    GW_PID=$!
    wait_port "$HYPER_PORT" hyper_proxy $!
}

start_tollgate() { # [standalone | raft | budget | spin | guard | trace]
    local mode=${1:-standalone} extra_mode= otel_env=()
    port_free "$TOLLGATE_PORT" || die "port $TOLLGATE_PORT is in use (set TOLLGATE_PORT)"
    cat >"$WORK/tollgate.toml" <<EOF
[node]
listen = "127.0.0.1:$TOLLGATE_PORT"
admin_listen = "127.0.0.1:$TOLLGATE_ADMIN_PORT"
EOF
    if [[ $mode == spin ]]; then
        echo "idle_spin_us = $SPIN_US" >>"$WORK/tollgate.toml"
        mode=standalone
    fi
    if [[ $mode == guard || $mode == trace ]]; then
        extra_mode=$mode
        mode=standalone
    fi
    if [[ $extra_mode == trace ]]; then
        # Every request traced (100 % sampling) to an OTLP endpoint where nothing listens: span creation,
        # attributes and the batch processor are measured; serializing and sending a batch are not.
        otel_env=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_TRACES_SAMPLER=always_on)
    fi
    if [[ $mode != standalone ]]; then
        # A one-node Raft cluster: the same control plane as a real cluster (keys and routes from the replicated
        # state); with `budget`, the key's org has a token budget far larger than the run can spend, so every
        # request goes through escrow admission, max_tokens pinning, settlement and usage reporting.
        rm -rf "$WORK/raft-data"
        cat >>"$WORK/tollgate.toml" <<EOF
id = 1
data_dir = "$WORK/raft-data"
raft_listen = "127.0.0.1:$TOLLGATE_RAFT_PORT"
peers = { 1 = "127.0.0.1:$TOLLGATE_RAFT_PORT" }
admin_token = "bench-admin"
cluster_secret = "bench-cluster-secret-0123456789"
EOF
    fi
    bench_routes_toml "$MOCK_PORT" >>"$WORK/tollgate.toml"
    if [[ $mode == budget ]]; then
        cat >>"$WORK/tollgate.toml" <<EOF

[[orgs]]
name = "bench"
budget = { limit_tokens = 1000000000000, period = "month" }
EOF
    fi
    if [[ $extra_mode == guard ]]; then
        # An injection guardrail (block) and a PII guardrail (redact, all entity types) on every request of
        # the key's org: the bench prompt matches neither, so this is the cost of looking.
        cat >>"$WORK/tollgate.toml" <<EOF

[[guardrails]]
name = "injection"
kind = "injection"

[[guardrails]]
name = "pii"
kind = "pii"

[[orgs]]
name = "bench"
guardrails = ["injection", "pii"]
EOF
    fi
    # One tokio worker on the one core it gets (tokio reads TOKIO_WORKER_THREADS in new_multi_thread()).
    env "${otel_env[@]}" TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} "${PRIO_CMD[@]}" taskset -c "$GATEWAY_CPU" "$TOLLGATE" serve --config "$WORK/tollgate.toml" \
        >"$WORK/tollgate.log" 2>&1 &
    PIDS+=($!)
    GW_PID=$!
    local pid=$! _
    wait_port "$TOLLGATE_PORT" tollgate "$pid"
    if [[ $mode != standalone ]]; then
        for _ in $(seq 200); do
            curl -fsS "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/readyz" >/dev/null 2>&1 && break
            sleep 0.05
        done
    fi
    # The tokenizer vocabularies load on a background thread at start; let it finish off the measured core.
    for _ in $(seq 200); do
        grep -qs '^tokenizer-warmu' /proc/"$pid"/task/*/comm || break
        sleep 0.05
    done
}

url_for() {
    case $1 in
        direct) echo "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
        hyper) echo "http://127.0.0.1:$HYPER_PORT/v1/chat/completions" ;;
        tollgate*) echo "http://127.0.0.1:$TOLLGATE_PORT/v1/chat/completions" ;;
    esac
}

oha_run() { # out.json body url [oha args...]
    local out=$1 body=$2 url=$3
    shift 3
    "${PRIO_CMD[@]}" taskset -c "$CLIENT_CPU" "$OHA" --no-tui --output-format json --worker-threads 1 -m POST -T application/json \
        -H "Authorization: Bearer $KEY" -D "$body" "$@" "$url" >"$out"
}

mkdir -p "$WORK/results"
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# utime+stime (clock ticks) of a process and its children (nginx's worker).
proc_ticks() {
    local total=0 pid stat fields
    [[ -n "$1" ]] || { echo 0; return; }
    for pid in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        stat=$(cat /proc/"$pid"/stat 2>/dev/null) || continue
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# "busy total" jiffies of one CPU from /proc/stat.
cpu_jiffies() {
    awk -v cpu="cpu$1" '$1 == cpu { total = 0; for (i = 2; i <= NF; i++) total += $i; print total - $5 - $6, total }' /proc/stat
}

run_scenario() { # target scenario-name round body [oha args...]
    local target=$1 name=$2 round=$3 body=$4
    shift 4
    GW_PID=
    start_mock
    case $target in
        nginx) start_nginx ;;
        tollgate) start_tollgate ;;
        tollgate-raft) start_tollgate raft ;;
        tollgate-budget) start_tollgate budget ;;
        tollgate-spin) start_tollgate spin ;;
        tollgate-guard) start_tollgate guard ;;
        tollgate-trace) start_tollgate trace ;;
        hyper) start_hyper ;;
    esac
    local url ok run=$target.$name.r$round
    url=$(url_for "$target")
    # Correctness first: 20 requests must all be 200.
    oha_run "$WORK/check.json" "$body" "$url" -n 20 -c 4
    ok=$(jq '.statusCodeDistribution["200"] // 0' "$WORK/check.json")
    [[ "$ok" == 20 ]] || die "$target does not answer 200: $(jq -c '.statusCodeDistribution, .errorDistribution' "$WORK/check.json")"
    oha_run "$WORK/warmup.json" "$body" "$url" -z "$WARMUP" -c "$CONNS" "$@"
    log "$target / $name (round $round): $DURATION"
    local gw_before mock_before client_before gateway_before
    gw_before=$(proc_ticks "$GW_PID"); mock_before=$(proc_ticks "$MOCK_PID")
    client_before=$(cpu_jiffies "$CLIENT_CPU"); gateway_before=$(cpu_jiffies "$GATEWAY_CPU")
    oha_run "$WORK/results/$run.json" "$body" "$url" -z "$DURATION" -c "$CONNS" "$@"
    # CPU used during the run: the gateway process, the mock, and how busy each core was.
    echo "$(( $(proc_ticks "$GW_PID") - gw_before )) $(( $(proc_ticks "$MOCK_PID") - mock_before ))" \
        "$(cpu_jiffies "$CLIENT_CPU") $client_before $(cpu_jiffies "$GATEWAY_CPU") $gateway_before" >"$WORK/results/$run.cpu"
    stop_all
}

SCENARIO_NAMES=()
for scenario in $SCENARIOS; do
    case $scenario in
        closed) SCENARIO_NAMES+=("closed-c$CONNS") ;;
        open) for rate in $RATES; do SCENARIO_NAMES+=("open-q$rate"); done ;;
        stream) SCENARIO_NAMES+=("stream-c$CONNS") ;;
        *) die "unknown scenario $scenario (closed, open, stream)" ;;
    esac
done

if [[ -n "$REPORT_FROM" ]]; then
    cp "$REPORT_FROM"/*.json "$REPORT_FROM"/*.cpu "$REPORT_FROM"/meta.txt "$WORK/results/"
else
    {
        echo "Tollgate load benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
        echo "gateway on CPU $GATEWAY_CPU; mock + oha on CPU $CLIENT_CPU; priority: ${PRIO_CMD[*]}; ${DURATION} per run (+${WARMUP} warm-up), median of $REPEAT round(s); ~$(wc -c <"$BODY") B body; $("$OHA" --version)${NGINX:+; $("$NGINX" -v 2>&1 | sed 's/.*: //')}"
    } >"$WORK/results/meta.txt"
    START=$(date +%s)
    log "targets: $TARGETS; scenarios: ${SCENARIO_NAMES[*]}; $REPEAT round(s) of $DURATION each (+$WARMUP warm-up)"
    # Targets interleaved within each scenario, so slow drift on the machine hits them alike.
    for round in $(seq "$REPEAT"); do
        for name in "${SCENARIO_NAMES[@]}"; do
            for target in $TARGETS; do
                case $name in
                    closed-*) run_scenario "$target" "$name" "$round" "$BODY" ;;
                    open-q*) run_scenario "$target" "$name" "$round" "$BODY" -q "${name#open-q}" --latency-correction ;;
                    stream-*) run_scenario "$target" "$name" "$round" "$STREAM_BODY" ;;
                esac
            done
        done
    done
    log "load phase took $(( $(date +%s) - START ))s"
fi

# ---- report ----

# One line per run: rps p50_ms p99_ms errors gw_cpu_pct gw_us_per_request client_core_busy_pct gateway_core_busy_pct
# (errors: non-200 answers + transport errors; requests cut off by the end of the run are not errors.)
run_metrics() { # run-name target
    local stats
    stats=$(jq -r '
        [ (.summary.requestsPerSec // 0),
          ((.latencyPercentiles.p50 // 0) * 1000),
          ((.latencyPercentiles.p99 // 0) * 1000),
          (.summary.total // 1),
          (([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
           + ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0)) ]
        | @tsv' "$WORK/results/$1.json")
    awk -v tck="$CLK_TCK" -v stats="$stats" -v gw="$2" '
        { split(stats, m, "\t"); rps = m[1]; secs = m[4]; gwcpu = $1 / tck
          printf "%s %s %s %s %s %s %.0f %.0f\n", m[1], m[2], m[3], m[5],
              (gw == "direct" ? "-" : sprintf("%.0f", 100 * gwcpu / secs)),
              (gw == "direct" ? "-" : sprintf("%.1f", 1e6 * gwcpu / (rps * secs))),
              100 * ($3 - $5) / ($4 - $6), 100 * ($7 - $9) / ($8 - $10) }' "$WORK/results/$1.cpu"
}

median() { # values... ("-" stays "-")
    [[ $1 == - ]] && { echo -; return; }
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

TABLE="$WORK/table.txt"
{
    cat "$WORK/results/meta.txt"
    echo
    printf '%-15s %-13s %8s %8s %8s %6s %7s %8s %8s %6s %8s %8s %10s\n' target scenario 'req/s' 'p50 ms' 'p99 ms' errors 'x nginx' '+p50 ms' '+p99 ms' 'gw CPU' 'gw us/r' 'cap x ng' "cpu$CLIENT_CPU/cpu$GATEWAY_CPU"
    declare -A M=()
    for name in "${SCENARIO_NAMES[@]}"; do
        for target in $TARGETS; do
            runs=()
            for file in "$WORK"/results/"$target.$name".r*.json; do [[ -f $file ]] && runs+=("$(basename "$file" .json)"); done
            [[ ${#runs[@]} -gt 0 ]] || continue
            # Per metric, the median over the rounds.
            declare -a cols=()
            for run in "${runs[@]}"; do cols+=("$(run_metrics "$run" "$target")"); done
            line=
            for column in 1 2 3 4 5 6 7 8; do
                line+="$(median $(printf '%s\n' "${cols[@]}" | cut -d' ' -f"$column")) "
            done
            M[$target.$name]=$line
        done
    done
    for name in "${SCENARIO_NAMES[@]}"; do
        for target in $TARGETS; do
            [[ -n "${M[$target.$name]:-}" ]] || continue
            read -r rps p50 p99 errors gwcpu gwus core0 core1 <<<"${M[$target.$name]}"
            ratio=-; add50=-; add99=-; cap=-
            if [[ -n "${M[nginx.$name]:-}" ]]; then
                read -r ng_rps _ _ _ _ ng_us _ <<<"${M[nginx.$name]}"
                ratio=$(awk -v a="$rps" -v b="$ng_rps" 'BEGIN { printf "%.2f", a / b }')
                # Capacity relative to nginx: nginx's CPU per request / this gateway's (the req/s ratio if the
                # gateway's core, not the client's, were the bottleneck).
                [[ $gwus != - ]] && cap=$(awk -v a="$ng_us" -v b="$gwus" 'BEGIN { printf "%.2f", a / b }')
            fi
            if [[ -n "${M[direct.$name]:-}" && $target != direct ]]; then
                read -r _ d50 d99 _ <<<"${M[direct.$name]}"
                add50=$(awk -v a="$p50" -v b="$d50" 'BEGIN { printf "%+.3f", a - b }')
                add99=$(awk -v a="$p99" -v b="$d99" 'BEGIN { printf "%+.3f", a - b }')
            fi
            [[ $gwcpu != - ]] && gwcpu+=%
            printf '%-15s %-13s %8.0f %8.3f %8.3f %6d %7s %8s %8s %6s %8s %8s %10s\n' "$target" "$name" "$rps" "$p50" "$p99" "$errors" \
                "$ratio" "$add50" "$add99" "$gwcpu" "$gwus" "$cap" "$core0/$core1"
        done
    done
    echo
    echo "x nginx = req/s relative to nginx in the same scenario; +p50/+p99 = latency added over direct-to-mock."
    echo "gw CPU = the gateway's CPU time / wall time (100% = its whole core); gw us/r = gateway CPU per request;"
    echo "cap x ng = nginx's CPU per request / the gateway's: relative capacity once the gateway's core is the limit"
    echo "(in closed loop here the client core, mock + oha, saturates first); cpuA/cpuB = busy % of the client / gateway core."
    echo "Closed loop: throughput-bound, latency is mostly queueing (connections / throughput). Open loop (-q): latency at"
    echo "a fixed offered rate, corrected for coordinated omission."
} >"$TABLE"
cat "$TABLE"
if [[ -n "${OUT_DIR:-}" ]]; then
    mkdir -p "$OUT_DIR"
    cp "$WORK"/results/*.json "$WORK"/results/*.cpu "$WORK/results/meta.txt" "$TABLE" "$OUT_DIR"/
    log "raw oha JSON and the table are in $OUT_DIR"
fi
