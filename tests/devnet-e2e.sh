#!/usr/bin/env bash
# End-to-end against a REAL beacon node: Lodestar 1.5.1 on loopback (the
# Lodestar dev kit named by DEVNET_TOOLS: start-devnet.sh, exit-validator.sh;
# installs ~220 MB from npm on first use),
# with keysync-sim playing only Optimum's auth service and console API.
#
# Proves: a file-listed interop validator is assigned; a real voluntary exit
# stays assigned through active_exiting / exited_unslashed and is unassigned
# once its status reaches withdrawal_*. Not part of `cargo test` (heavy, ~3 min).
#
# Usage: DEVNET_TOOLS=/path/to/lodestar-devnet tests/devnet-e2e.sh
#        (needs node 18+, npm, python3, curl)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVNET=${DEVNET_TOOLS:-$ROOT/../shared/tools/lodestar-devnet}
PORT=${DEVNET_PORT:-9596}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
log() { echo "[devnet-e2e] $*" >&2; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

cargo build --release --bins >&2
LODESTAR_PID=$("$DEVNET/start-devnet.sh" "$PORT")
PIDS+=("$LODESTAR_PID")
BEACON=http://127.0.0.1:$PORT
log "lodestar pid $LODESTAR_PID at $BEACON"

# Optimum (auth + console) from the simulator; its own beacon is not used.
target/release/keysync-sim --validators 8 >"$WORK/sim.json" 2>"$WORK/sim.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/sim.json" ] && break; sleep 0.1; done
SIM=$(json 'd["url"]' <"$WORK/sim.json")
KEY=$(json 'd["api_key"]' <"$WORK/sim.json")

# Our validators: interop indices 1, 2, 3, listed by pubkey (resolved through Lodestar).
for i in 1 2 3; do
  curl -s "$BEACON/eth/v1/beacon/states/head/validators?id=$i" | json 'd["data"][0]["validator"]["pubkey"]'
done >"$WORK/validators.pubkeys"
log "pubkeys file: $(wc -l <"$WORK/validators.pubkeys") keys"

KEYSYNC_API_URL=$SIM KEYSYNC_AUTH_URL=$SIM KEYSYNC_API_KEY=$KEY \
KEYSYNC_BEACON_URL=$BEACON KEYSYNC_CHAIN_ID=0x5 KEYSYNC_SLOT_MS=2000 \
KEYSYNC_PUBKEYS_FILE=$WORK/validators.pubkeys KEYSYNC_DATA_DIR=$WORK/state \
KEYSYNC_LISTEN=127.0.0.1:0 KEYSYNC_LOG_FORMAT=json \
  target/release/keysync watch --apply 2>"$WORK/keysync.log" &
PIDS+=($!)

assigned() { curl -s "$SIM/sim/registry" | json '" ".join(str(r["validator_index"]) for r in (d if isinstance(d, list) else d.get("assignments", d.get("validators", []))) if r.get("active", True))'; }
status() { curl -s "$BEACON/eth/v1/beacon/states/head/validators?id=$1" | json 'd["data"][0]["status"]'; }

deadline=$((SECONDS + 60))
until [ "$(assigned)" = "1 2 3" ]; do
  [ $SECONDS -lt $deadline ] || { log "FAIL: not assigned: '$(assigned)'"; tail -20 "$WORK/keysync.log" >&2; exit 1; }
  sleep 0.5
done
log "PASS: interop validators 1 2 3 assigned from the pubkeys file"

"$DEVNET/exit-validator.sh" 3 "$PORT" >&2
seen_exiting=no
deadline=$((SECONDS + 240))
while :; do
  s=$(status 3); a=$(assigned)
  case "$s" in
    active_exiting|exited_*)
      case " $a " in *" 3 "*) seen_exiting=yes ;; *) log "FAIL: 3 unassigned too early at $s"; exit 1 ;; esac ;;
    withdrawal_*) break ;;
  esac
  [ $SECONDS -lt $deadline ] || { log "FAIL: validator 3 never reached withdrawal (status $s)"; exit 1; }
  sleep 1
done
log "validator 3 reached $(status 3) (stayed assigned while exiting: $seen_exiting)"
deadline=$((SECONDS + 60))
until [ "$(assigned)" = "1 2" ]; do
  [ $SECONDS -lt $deadline ] || { log "FAIL: 3 not unassigned after withdrawal: '$(assigned)'"; tail -20 "$WORK/keysync.log" >&2; exit 1; }
  sleep 0.5
done
[ "$seen_exiting" = yes ] || { log "FAIL: never observed the exiting window"; exit 1; }
grep -c '"voluntary_exit"' "$WORK/keysync.log" >/dev/null || true
log "PASS: the real exit of validator 3 was unassigned once it reached withdrawal_*"
echo "devnet-e2e: 2 passed, 0 failed"
