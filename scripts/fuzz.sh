#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (cargo fuzz), each for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # e.g. scripts/fuzz.sh 600   (the pre-release run)
#   scripts/fuzz.sh --quick [SECONDS]          # the brief CI run (default 5 s per target)
#   scripts/fuzz.sh --quick-build              # only the build of --quick (CI starts it early)
#
# The full run uses cargo-fuzz (installed if missing) with AddressSanitizer and optimisations.
# --quick needs no cargo-fuzz: it builds the same targets with the same coverage instrumentation
# (no sanitizer, debug profile: a much cheaper build) and runs libFuzzer on the seeds alone.
#
# Inputs: fuzz/seeds/<target> (committed) and fuzz/corpus/<target> (grown here, not committed).
# A crash is copied to fuzz/regressions/<target>/, which tests/tests/fuzz_corpus.rs replays on
# every test run: commit it with the fix. Exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

# libfuzzer-sys compiles libFuzzer itself (C++).
if ! command -v c++ >/dev/null 2>&1; then
    echo "installing g++ (libFuzzer is C++)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++ >/dev/null
fi

if [ "${1:-}" = "--quick" ] || [ "${1:-}" = "--quick-build" ]; then
    seconds="${2:-5}"
    export RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_DIR="$PWD/fuzz/target/quick"
    triple="$(rustc -vV | sed -n 's/^host: //p')"
    # The instrumentation cargo-fuzz applies (sancov), without a sanitizer.
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
    cargo build --quiet --manifest-path fuzz/Cargo.toml --target "$triple" --bins
    [ "$1" = "--quick-build" ] && exit 0
    status=0
    for target in control_commands config_text password_file acl_file packet_codec gate_session router_session; do
        scratch="$(mktemp -d)"
        # The log stays out of the corpus directory: libFuzzer rereads that directory and would
        # take its own log for an input.
        log="$(mktemp)"
        echo "== $target: ${seconds}s (quick)" >&2
        if ! "$CARGO_TARGET_DIR/$triple/debug/$target" "$scratch" "fuzz/seeds/$target" \
            -max_total_time="$seconds" -timeout=20 -artifact_prefix="$scratch/" 2>"$log"; then
            grep -m1 -A3 "panicked at" "$log" >&2 || true
            tail -n 30 "$log" >&2
            mkdir -p "fuzz/regressions/$target"
            cp "$scratch"/crash-* "$scratch"/timeout-* "$scratch"/oom-* "fuzz/regressions/$target/" 2>/dev/null || true
            echo "crash in $target: see fuzz/regressions/$target/" >&2
            status=1
        else
            grep -E '^Done [0-9]+ runs' "$log" >&2 || true
        fi
        rm -rf "$scratch" "$log"
    done
    exit $status
fi

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(control_commands config_text password_file acl_file packet_codec gate_session router_session)
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
    # Moved, not copied: an artifact left from an earlier run must not be reported again.
    for crash in fuzz/artifacts/"$target"/*; do
        [ -f "$crash" ] || continue
        mv "$crash" "fuzz/regressions/$target/"
        echo "crash in $target: $(basename "$crash") (moved to fuzz/regressions/$target/)" >&2
        status=1
    done
done
exit $status
