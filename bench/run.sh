#!/usr/bin/env bash
# keysync benchmarks, one command: bench/run.sh
#
#  1. builds the release binaries (keysync, keysync-sim);
#  2. installs the original optimum-keysync==1.1.1 into a throwaway
#     virtualenv (its console script is also called `keysync`: we call it by
#     its venv path);
#  3. one-shot comparison (bench/oneshot.py, stdlib Python): diff best of 3
#     and cold sync --apply for N = 1,000 / 10,000 / 100,000, keysync alone
#     at 1,000,000, against `keysync-sim --latency-ms $LATENCY_MS`;
#  4. the daemon benchmark: `cargo run --release --example watch-bench`
#     (bench/watch_bench.rs): one `keysync watch --apply` run per size in
#     WATCH_SIZES (first pass, steady memory, beacon requests per quiet
#     epoch over whole scan periods, exit → unassign from the withdrawable
#     boundary with mainnet exit timing, file drop → assign). About 10
#     minutes per size on 2 cores.
# Both write their section of BENCHMARKS.md (and print it).
#
# Knobs (env): LATENCY_MS (default 1), SIZES (default 1000,10000,100000),
# KEYSYNC_ONLY (default 1000000), SKIP_ONESHOT=1, SKIP_WATCH=1,
# PIP_SPEC (default optimum-keysync==1.1.1),
# WATCH_SIZES (daemon benchmark sizes, default 100000,1000000; passed on as
# BENCH_SIZES). The daemon benchmark's own knobs (BENCH_SLOT_MS,
# BENCH_SLOTS_PER_EPOCH, BENCH_EXIT_DELAY_EPOCHS,
# BENCH_WITHDRAWABLE_DELAY_EPOCHS, BENCH_QUIET_PERIODS, BENCH_DEBOUNCE_MS,
# BENCH_OUT, KEYSYNC_LOG) pass through; see bench/watch_bench.rs.
# Loopback only; every child process is bounded by a timeout and killed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
LATENCY_MS="${LATENCY_MS:-1}"
SIZES="${SIZES:-1000,10000,100000}"
KEYSYNC_ONLY="${KEYSYNC_ONLY-1000000}"
WATCH_SIZES="${WATCH_SIZES:-100000,1000000}"
PIP_SPEC="${PIP_SPEC:-optimum-keysync==1.1.1}"

VENV="$(mktemp -d "${TMPDIR:-/tmp}/keysync-bench-venv.XXXXXX")"
cleanup() { rm -rf "$VENV"; }
trap cleanup EXIT

echo "== building release binaries" >&2
cargo build --release --bins
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
# Snapshot the binaries: others may rebuild target/release while this runs.
BIN="$VENV/bin-snapshot"
mkdir -p "$BIN"
cp "$TARGET/keysync" "$TARGET/keysync-sim" "$BIN/"

if [[ ! -x /usr/bin/time ]]; then
  echo "== GNU time missing: installing it (apt)" >&2
  apt-get install -y time >/dev/null
fi

if [[ "${SKIP_ONESHOT:-0}" != 1 ]]; then
  echo "== installing $PIP_SPEC into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PIP_SPEC"
  echo "== one-shot benchmark (latency ${LATENCY_MS} ms)" >&2
  timeout 7200 python3 bench/oneshot.py \
    --keysync "$BIN/keysync" --sim "$BIN/keysync-sim" --original "$VENV/bin/keysync" \
    --latency-ms "$LATENCY_MS" --sizes "$SIZES" --keysync-only "$KEYSYNC_ONLY" \
    --out BENCHMARKS.md --json "$TARGET/bench-oneshot.json"
fi

if [[ "${SKIP_WATCH:-0}" != 1 ]]; then
  # ~10 minutes a size; the bench's own watchdog is tighter than this bound.
  n_sizes=$(tr ', ' '\n\n' <<<"$WATCH_SIZES" | grep -c .)
  echo "== daemon benchmark (sizes $WATCH_SIZES)" >&2
  KEYSYNC_BIN="$BIN/keysync" BENCH_SIZES="$WATCH_SIZES" timeout $((1800 * n_sizes + 600)) \
    cargo run --release --example watch-bench
fi
