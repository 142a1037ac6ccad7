#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers (tollgate::fuzzing) with cargo-fuzz / libFuzzer on nightly Rust.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
# Inputs that grow coverage are added to fuzz/corpus/<target>/ (commit only the useful ones: `cargo fuzz cmin`
# first; `git clean -f fuzz/corpus` drops the rest); a crash is copied to
# fuzz/regressions/<target>/, where node/tests/fuzz_replay.rs replays it on stable in every test run.
# cargo-fuzz is installed once (pinned) into $TOLLGATE_CI_CACHE/tools or ~/.cache/tollgate-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"; shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse chat_request messages_request stream_translators responses config)
fi
rustup toolchain list | grep -q '^nightly' || { echo "scripts/fuzz.sh needs nightly Rust: rustup toolchain install nightly"; exit 1; }
tools="${TOLLGATE_CI_CACHE:-$HOME/.cache/tollgate-tools}/tools"
version=0.13.1
fuzz="$tools/bin/cargo-fuzz"
if [ "$("$fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $version" ]; then
  echo "installing cargo-fuzz $version into $tools (once; cached)"
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --force --version "$version" --root "$tools" cargo-fuzz
fi
export PATH="$tools/bin:$PATH"
# Its own target dir: the instrumented build shares nothing with the normal one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${TOLLGATE_CI_CACHE:-$PWD/fuzz}/fuzz-target}"
status=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/regressions/$target" "fuzz/artifacts/$target"
  echo "== fuzz $target for ${seconds}s"
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/regressions/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="fuzz/artifacts/$target/"; then
    status=1
    for crash in fuzz/artifacts/"$target"/*; do
      [ -f "$crash" ] && cp "$crash" "fuzz/regressions/$target/" && echo "kept $crash as a regression input"
    done
  fi
done
exit $status
