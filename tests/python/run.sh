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
    || ! "$venv/bin/python" -c "import openai, anthropic" 2>/dev/null; then
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
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
# `tollgate dev` gives its cluster 30 s to elect a leader and load the config before it writes the env file
# (node/src/dev.rs), so wait that long plus a margin for starting the process; stop early if it exits. The
# file is complete once its last line, TOLLGATE_ADMIN_TOKEN, is there with its newline.
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
set -a; . "$work/env"; set +a
"$venv/bin/python" "$here/test_sdks.py"
