#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (cargo fuzz), each for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # e.g. scripts/fuzz.sh 600   (the pre-release run)
#   FUZZ_SANITIZER=none scripts/fuzz.sh 5      # the brief CI run: no AddressSanitizer, faster build
#
# Inputs: fuzz/seeds/<target> (committed) and fuzz/corpus/<target> (grown here, not committed).
# A crash is copied to fuzz/regressions/<target>/, which tests/tests/fuzz_corpus.rs replays on
# every test run: commit it with the fix. Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(control_commands config_text password_file acl_file packet_codec gate_session)
fi
sanitizer="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build -O -s "$sanitizer")

status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" "fuzz/regressions/$target"
    echo "== $target: ${seconds}s" >&2
    if ! (cd fuzz && cargo fuzz run -O -s "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tail -n 25); then
        status=1
    fi
    for crash in fuzz/artifacts/"$target"/*; do
        [ -f "$crash" ] || continue
        cp "$crash" "fuzz/regressions/$target/"
        echo "crash in $target: $crash (copied to fuzz/regressions/$target/)" >&2
        status=1
    done
done
exit $status
