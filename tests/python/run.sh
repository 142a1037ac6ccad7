#!/usr/bin/env bash
# Runs the official OpenAI and Anthropic Python SDKs against a `tollgate dev` node.
# Usage: tests/python/run.sh [path/to/tollgate]   (installs the SDKs into a venv on first use)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/tollgate}"
venv="${TOLLGATE_PY_VENV:-${CARGO_TARGET_DIR:-$root/target}/sdk-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import openai, anthropic" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai>=1.40" "anthropic>=0.40"
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
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do [ -s "$work/env" ] && break; sleep 0.05; done
if [ ! -s "$work/env" ]; then cat "$work/dev.log"; echo "tollgate dev did not start"; exit 1; fi
set -a; . "$work/env"; set +a
"$venv/bin/python" "$here/test_sdks.py"
