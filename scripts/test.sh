#!/usr/bin/env bash
# The whole test suite: unit tests, black-box tests of in-process and real nodes, the official
# OpenAI/Anthropic Python SDKs against a live node, and (as root, where network namespaces work) a short
# chaos run of three regions behind a WAN link proxy (jepsen/ci.sh; it says SKIPPED otherwise). Needs: cargo, python3 (with venv), network access to
# crates.io/PyPI on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --locked -p tollgate --bin tollgate -p tollgate-tests --bin tollgate-mock-upstream
# --workspace: the bench crate too (not a default member); --no-fail-fast: every test binary runs and
# all failures are reported, not only the first binary's.
cargo test --locked --workspace --no-fail-fast
bash tests/python/run.sh "$target/debug/tollgate"
bash jepsen/ci.sh
