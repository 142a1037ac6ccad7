#!/usr/bin/env bash
# Three Tollgate "regions" on one Linux machine: one network namespace per region, one `tollgate serve`
# each, and a userspace WAN (25 ms one-way, ~50 ms RTT) between them. Needs root (namespaces, a bridge).
#
#   sudo deploy/local-regions.sh up [--env-file PATH] [jepsen regions up flags, e.g. --delay-ms 40]
#   sudo deploy/local-regions.sh status     # exit 0 only when all three regions answer
#   sudo deploy/local-regions.sh down       # removes every namespace, link and process it made
#
# Binaries: $TOLLGATE_BIN and $JEPSEN_BIN when set, else $CARGO_TARGET_DIR (or ./target)/release/{tollgate,jepsen},
# built with `cargo build --release` when missing. State, configs and logs: $TOLLGATE_REGIONS_DIR
# (default /tmp/tollgate-regions). Topology and measured figures: jepsen/README.md.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
tollgate="${TOLLGATE_BIN:-$target/release/tollgate}"
jepsen="${JEPSEN_BIN:-$target/release/jepsen}"

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[ $# -ge 1 ] || usage
command="$1"
shift

case "$command" in
  up | down | status | env) ;;
  -h | --help | help) usage ;;
  *)
    echo "local-regions.sh: unknown command \`$command\` (up, down, status, env)" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "local-regions.sh: needs root for network namespaces and a bridge; run: sudo $0 $command $*" >&2
  exit 1
fi

build_if_missing() {
  local missing=()
  [ -x "$tollgate" ] || missing+=(-p tollgate --bin tollgate)
  [ -x "$jepsen" ] || missing+=(-p tollgate-jepsen --bin jepsen)
  if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v cargo >/dev/null; then
      echo "local-regions.sh: $tollgate or $jepsen is missing and cargo is not on root's PATH;" \
        "build them first (cargo build --release -p tollgate -p tollgate-jepsen) or set TOLLGATE_BIN/JEPSEN_BIN" >&2
      exit 1
    fi
    echo "building ${missing[*]} (release) ..." >&2
    (cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release --locked "${missing[@]}")
  fi
}

case "$command" in
  up)
    build_if_missing
    exec "$jepsen" regions up --tollgate "$tollgate" "$@"
    ;;
  down | status | env)
    if [ ! -x "$jepsen" ]; then
      build_if_missing
    fi
    exec "$jepsen" regions "$command" "$@"
    ;;
esac
