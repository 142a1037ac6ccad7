#!/usr/bin/env bash
# Runs the official OpenAI and Anthropic Python SDKs against a `tollgate dev` node.
# Usage: tests/python/run.sh [path/to/tollgate]   (installs the SDKs pinned in requirements.txt into a venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/tollgate}"
venv="${TOLLGATE_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/sdk-venv}"
# The SDK versions are pinned in requirements.txt. The venv remembers the SHA-256 of the file it was built
# from and is rebuilt from scratch when the pins change (or when it is missing or broken).
req="$here/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1)"
stamp="$venv/.tollgate-requirements.sha256"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
    || ! "$venv/bin/python" -c "import openai, anthropic, prometheus_client" 2>/dev/null; then
  echo "installing the pinned Python SDKs into $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
work="$(mktemp -d)"
# A base port whose nine ports (API base+i, admin base+1010+i, Raft base-1010+i) are all free.
port=$(python3 - <<'PY'
import socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(500):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); base = s.getsockname()[1]; s.close()
    if 2000 <= base <= 60000 and all(free(base + d + i) for d in (0, 1010, -1010) for i in range(3)):
        print(base); break
PY
)
"$bin" dev --base-port "$port" --token-delay-ms 1 --env-file "$work/env" > "$work/dev.log" 2>&1 &
pid=$!
pids="$pid"
trap 'kill $pids 2>/dev/null || true; wait $pids 2>/dev/null || true; rm -rf "$work"' EXIT
# `tollgate dev` gives its cluster 30 s to elect a leader and load the config before it writes the env file
# (node/src/dev.rs), so wait that long plus a margin for starting the process; stop early if it exits. The
# file is written atomically (temp + rename); its last line, TOLLGATE_ADMIN_TOKEN, is checked all the same.
deadline=$(( $(date +%s) + 40 ))
until grep -q '^TOLLGATE_ADMIN_TOKEN=.' "$work/env" 2>/dev/null && [ "$(tail -c1 "$work/env" | wc -l)" = 1 ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$work/dev.log"; echo "tollgate dev exited before writing $work/env"; exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    cat "$work/dev.log"; echo "tollgate dev did not write $work/env within 40 s"; exit 1
  fi
  sleep 0.05
done
(
  set -a; . "$work/env"; set +a
  "$venv/bin/python" "$here/test_sdks.py"
)

# Second: a `tollgate serve` node whose providers are the test mock upstream over a socket (an OpenAI-kind
# and an Anthropic-kind provider), for tools and for usage checked against what the upstream generated.
mock_bin="$(dirname "$bin")/tollgate-mock-upstream"
[ -x "$mock_bin" ] || { echo "$mock_bin is missing: cargo build -p tollgate-tests --bin tollgate-mock-upstream"; exit 1; }
"$mock_bin" > "$work/mock.out" 2> "$work/mock.err" &
pids="$pids $!"
deadline=$(( $(date +%s) + 20 ))
until grep -q '^listening on ' "$work/mock.out" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then cat "$work/mock.err"; echo "the mock upstream did not start"; exit 1; fi
  sleep 0.05
done
mock_url="$(sed -n 's/^listening on //p' "$work/mock.out")"
read -r api_port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
key="tg-py-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat > "$work/upstream.toml" <<TOML
[node]
listen = "127.0.0.1:$api_port"
admin_listen = "127.0.0.1:$admin_port"
data_dir = "$work/upstream-data"

[[providers]]
name = "up-openai"
kind = "openai"
base_url = "$mock_url/v1"
api_key = "mock-provider-key"

[[providers]]
name = "up-anthropic"
kind = "anthropic"
base_url = "$mock_url"
api_key = "mock-provider-key"

[[models]]
name = "gpt-4o-mini"
targets = [ { provider = "up-openai", model = "mock-gpt" } ]

[[models]]
name = "claude-3-5-haiku"
targets = [ { provider = "up-anthropic", model = "mock-claude" } ]

[[keys]]
key = "$key"
org = "py"
TOML
chmod 600 "$work/upstream.toml"
"$bin" serve --config "$work/upstream.toml" > "$work/serve.log" 2>&1 &
pids="$pids $!"
deadline=$(( $(date +%s) + 30 ))
healthy() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
until healthy "http://127.0.0.1:$admin_port/healthz"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then cat "$work/serve.log"; echo "tollgate serve did not come up"; exit 1; fi
  sleep 0.05
done
TOLLGATE_URL="http://127.0.0.1:$api_port/v1" TOLLGATE_KEY="$key" MOCK_URL="$mock_url" \
  "$venv/bin/python" "$here/test_upstream.py"
