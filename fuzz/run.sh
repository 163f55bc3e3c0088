#!/usr/bin/env bash
# Bounded fuzzing of every parser: runs each fuzz target of tests/fuzz.rs
# (the #[ignore]d `fuzz_*` tests) in release mode, one after the other, and
# prints one line per target with the cases it ran and how long it took.
# Exits non-zero if any target fails (its log's tail is printed).
#
#   fuzz/run.sh                      # every target, 20000 cases per strategy
#   FUZZ_CASES=200000 fuzz/run.sh    # a longer run
#   fuzz/run.sh fuzz_sse_stream fuzz_keymanager   # some targets only
#
# Environment:
#   FUZZ_CASES           cases per strategy of each target (default 20000;
#                        a target runs 1 to 5 strategies)
#   FUZZ_JOBS            cargo build jobs (default 1: shared machines)
#   FUZZ_TARGET_TIMEOUT  seconds a target may run before it counts as
#                        failed (default 3600)
#   FUZZ_HANG_SECS       one case running longer aborts the run, printing
#                        the input (default 60; in tests/fuzz.rs)
#   FUZZ_SLOW_MS         one case running longer fails (default 5000)
#   CARGO_TARGET_DIR     build directory (default <repo>/target-fuzz, apart
#                        from the usual one: the profile is changed below)
#
# The release profile is built with debug assertions and overflow checks on
# (an overflow is a failure here, not a wrap) and without LTO (a faster
# build; the code is the same).
#
# A failing case's seed is saved in fuzz/regressions.txt and replayed first
# by every later run; a hang's input is written under the target directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export FUZZ_CASES=${FUZZ_CASES:-20000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-fuzz}
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_LTO=false
jobs=${FUZZ_JOBS:-1}
limit=${FUZZ_TARGET_TIMEOUT:-3600}
logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"

cargo_test() {
    cargo test --release -j "$jobs" --test fuzz "$@"
}

echo "building tests/fuzz.rs (release, $jobs job(s), $CARGO_TARGET_DIR)" >&2
if ! cargo_test --no-run >"$logs/build.log" 2>&1; then
    tail -n 40 "$logs/build.log" >&2
    echo "fuzz: the build failed" >&2
    exit 2
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo_test -- --ignored --list 2>/dev/null |
        sed -n 's/^\(fuzz_[a-z0-9_]*\): test$/\1/p')
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz: no fuzz_* target found in tests/fuzz.rs" >&2
    exit 2
fi

echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) FUZZ_CASES=$FUZZ_CASES per strategy, ${#targets[@]} targets" >&2
printf '%-22s %10s %10s  %s\n' target cases seconds result
failed=0
total_cases=0
start=$SECONDS
for t in "${targets[@]}"; do
    log="$logs/$t.log"
    t0=$SECONDS
    status=0
    timeout --signal=KILL "$limit" \
        cargo test --release -j "$jobs" --test fuzz -- --ignored --exact "$t" --nocapture \
        >"$log" 2>&1 || status=$?
    line=$(grep -o 'FUZZ-RESULT .*' "$log" | tail -n 1 || true)
    cases=$(sed -n 's/.* cases=\([0-9]*\).*/\1/p' <<<"$line")
    secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
    if [ "$status" -eq 0 ] && [ -n "$line" ]; then
        result=ok
        total_cases=$((total_cases + cases))
    else
        failed=$((failed + 1))
        if grep -q '^HANG: ' "$log"; then
            result="FAILED (a case hung: its input is in the log)"
        elif [ "$status" -eq 137 ]; then
            result="FAILED (over ${limit}s, killed)"
        else
            result="FAILED (exit $status)"
        fi
        cases=${cases:--}
        secs=${secs:-$((SECONDS - t0))}
    fi
    printf '%-22s %10s %10s  %s\n' "${t#fuzz_}" "$cases" "$secs" "$result"
    if [ "$result" != ok ]; then
        grep -v '^ *[0-9]*: \|^stack backtrace\|^note: ' "$log" | tail -n 30 | cut -c1-2000 | sed 's/^/    /'
        echo "    (whole log: $log)"
    fi
done
printf '%-22s %10s %10s  %s\n' total "$total_cases" "$((SECONDS - start))" \
    "$([ "$failed" -eq 0 ] && echo ok || echo "$failed FAILED")"
[ "$failed" -eq 0 ]
