#!/usr/bin/env bash
# Supply-chain check (issue 12.9): `cargo deny` against deny.toml — licences, banned and duplicate crates,
# crate sources, and known advisories (RustSec). Run by .ci/run; works the same by hand.
#
# cargo-deny is installed once into $TOLLGATE_CI_CACHE/tools (pinned version, built with --locked by the
# toolchain in use). The advisory database is kept in $TOLLGATE_CI_CACHE/advisory-dbs and checked offline.
# It is brought up to date, in this order, from:
#   1. a local git copy of the RustSec advisory-db repository at $TOLLGATE_ADVISORY_MIRROR
#      (default: the workplace's mirror directory below), if there is one;
#   2. `cargo deny fetch db`: upstream (or the cached copy's origin) where the machine can reach it;
#   3. otherwise the copy already in the cache, if any.
# With no database at all, licences/bans/sources are still checked and the advisories step prints a loud
# ADVISORIES NOT CHECKED banner; TOLLGATE_REQUIRE_ADVISORIES=1 makes that a failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${TOLLGATE_CI_CACHE:-/var/cache/tollgate-ci}"
version=0.20.2 # needs rustc >= 1.88
tools="$cache/tools"
deny="$tools/bin/cargo-deny"
export TOLLGATE_ADVISORY_DBS="$cache/advisory-dbs" # deny.toml's db-path
# cargo-deny's directory name for the default database URL (a hash of the URL; see its db.rs).
db="$TOLLGATE_ADVISORY_DBS/advisory-db-3157b0e258782691"
mirror="${TOLLGATE_ADVISORY_MIRROR:-/work/.mirror/rustsec+advisory-db/repo}"

if [ "$("$deny" --version 2>/dev/null || true)" != "cargo-deny $version" ]; then
  echo "installing cargo-deny $version into $tools with $(rustc --version) (once; cached)"
  # Its own temporary target dir: the CI target dir is for the workspace.
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --force --version "$version" --root "$tools" cargo-deny
fi

# Crate sources present (a no-op when cached), so that cargo-deny can run --frozen: no network, and
# Cargo.lock must already be complete.
cargo fetch --locked --quiet

echo "-- licenses, bans (incl. duplicate versions), sources"
"$deny" --frozen check licenses bans sources

echo "-- advisories"
mkdir -p "$TOLLGATE_ADVISORY_DBS"
how=""
if git -C "$mirror" rev-parse --verify --quiet HEAD >/dev/null 2>&1; then
  if [ -d "$db/.git" ]; then
    git -C "$db" fetch --quiet "$mirror" HEAD && git -C "$db" reset --quiet --hard FETCH_HEAD
  else
    rm -rf "$db"
    git clone --quiet "$mirror" "$db"
  fi
  how="the local mirror $mirror"
elif "$deny" fetch db >/dev/null 2>&1; then
  how="$(git -C "$db" remote get-url origin) (fetched now)"
elif [ -d "$db/.git" ]; then
  how="the cached copy (neither a mirror nor upstream reachable)"
fi

if [ -z "$how" ] || ! git -C "$db" rev-parse --verify --quiet HEAD >/dev/null 2>&1; then
  cat <<EOF
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! ADVISORIES NOT CHECKED: no RustSec advisory database on this machine (no mirror at $mirror,
!!! upstream unreachable, nothing cached in $TOLLGATE_ADVISORY_DBS). Licences, bans and sources were checked.
!!! Put a git copy of the advisory-db repository at \$TOLLGATE_ADVISORY_MIRROR to check advisories offline.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
EOF
  [ "${TOLLGATE_REQUIRE_ADVISORIES:-0}" = 1 ] && exit 1
  exit 0
fi

newest=$(git -C "$db" log -1 --format=%cI)
age_days=$(( ($(date +%s) - $(git -C "$db" log -1 --format=%ct)) / 86400 ))
echo "advisory database from $how: newest entry committed $newest ($age_days days ago)"
if [ "$age_days" -gt 30 ]; then
  echo "!!! WARNING: the advisory database is $age_days days old: advisories published since $newest are NOT checked."
fi
"$deny" --frozen check advisories
