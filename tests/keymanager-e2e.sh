#!/usr/bin/env bash
# End-to-end of the Keymanager source against a REAL validator client:
# Lodestar 1.5.1 on loopback (the Lodestar dev kit named by DEVNET_TOOLS:
# start-devnet.sh, make-keystore.sh; installs ~220 MB from npm on first use),
# its validator client running only interop validators 0-5 and serving the
# standard Keymanager API. keysync-sim plays only Optimum's auth service and
# console API; keysync reads its validators from the validator client alone
# (no pubkeys, index or records input) and resolves them on the real beacon.
#
# Proves:
#  1. `keysync diff` with only the keymanager source plans exactly 0-5;
#  2. `keysync watch --apply --keymanager-poll-secs 2` assigns 0-5;
#  3. a keystore imported into the validator client (interop 6) is assigned;
#  4. the same key deleted from the validator client is unassigned;
#  5. the keymanager token never appears in keysync's stdout, stderr, logs,
#     metrics or state store, and a wrong token makes `keysync diff` exit 4
#     naming the keymanager URL.
# The daemon starts before the chain's genesis (~5 s after the node), so its
# event stream connects a few seconds in; nothing here waits for it.
# Not part of `cargo test` (heavy: first use installs Lodestar, ~1.5 min, and
# builds keysync; after that ~15 s).
#
# Usage: DEVNET_TOOLS=/path/to/lodestar-devnet tests/keymanager-e2e.sh
#   KEYSYNC_BIN=/path/keysync SIM_BIN=/path/keysync-sim  use these binaries
#                                     (default: cargo build --release --bins)
#   DEVNET_PORT (9696; p2p on +1), KEYMANAGER_PORT (DEVNET_PORT+2),
#   KEYSYNC_LISTEN_PORT (DEVNET_PORT+3), DEVNET_HOME (/tmp/lodestar),
#   KEEP_WORK=1 keeps the temporary directory (always kept on failure).
# Needs node 18+, npm, python3, curl. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVNET=${DEVNET_TOOLS:-$ROOT/../shared/tools/lodestar-devnet}
PORT=${DEVNET_PORT:-9696}
KM_PORT=${KEYMANAGER_PORT:-$((PORT + 2))}
LISTEN_PORT=${KEYSYNC_LISTEN_PORT:-$((PORT + 3))}
export DEVNET_HOME=${DEVNET_HOME:-/tmp/lodestar}
KEYSYNC=${KEYSYNC_BIN:-}
SIM_EXE=${SIM_BIN:-}
# Nothing from the caller's environment may add an input or a setting.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^KEYSYNC_' || true)

WORK=$(mktemp -d)
PIDS=()
LODESTAR_PID=
OK=no
log() { echo "[keymanager-e2e] $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { python3 -c "print(f'{$(now) - $1:.2f}')"; }

alive() { # pid: running (a zombie child waiting to be reaped is not)
  local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$s" ] && [ "$s" != Z ]
}
stop_pid() { # pid [seconds]: SIGTERM, then SIGKILL after the deadline
  local p=$1 deadline=$((SECONDS + ${2:-15}))
  kill "$p" 2>/dev/null || return 0
  while alive "$p"; do
    [ $SECONDS -lt $deadline ] || { log "pid $p ignored SIGTERM for ${2:-15}s: SIGKILL"; kill -9 "$p" 2>/dev/null || true; break; }
    sleep 0.2
  done
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
  [ -z "$LODESTAR_PID" ] || stop_pid "$LODESTAR_PID" 20
  wait 2>/dev/null || true
  if [ "$OK" = yes ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- binaries ----------
if [ -z "$KEYSYNC" ] || [ -z "$SIM_EXE" ]; then
  cargo build --release --bins >&2
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  KEYSYNC=${KEYSYNC:-$TARGET/release/keysync}
  SIM_EXE=${SIM_EXE:-$TARGET/release/keysync-sim}
fi
[ -x "$KEYSYNC" ] && [ -x "$SIM_EXE" ] || fail "no binaries: KEYSYNC_BIN=$KEYSYNC SIM_BIN=$SIM_EXE"

# ---------- the chain and the validator client (interop 0-5) ----------
t=$(now)
LODESTAR_PID=$(KEYMANAGER_PORT=$KM_PORT START_VALIDATORS=0..5 "$DEVNET/start-devnet.sh" "$PORT")
BEACON=http://127.0.0.1:$PORT
KM=http://127.0.0.1:$KM_PORT
TOKEN_FILE=$DEVNET_HOME/data-$PORT/validator-db/api-token.txt
TOKEN=$(cat "$TOKEN_FILE")
[ ${#TOKEN} -ge 16 ] || fail "token file $TOKEN_FILE holds no usable token"
T_DEVNET=$(since "$t")
log "lodestar pid $LODESTAR_PID: beacon $BEACON, keymanager $KM (up in ${T_DEVNET}s)"

km() { # method path [body]: the validator client's Keymanager API
  curl -sS --max-time 20 -X "$1" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' ${3:+--data "$3"} "$KM$2"
}
pubkey_of() { curl -sS --max-time 10 "$BEACON/eth/v1/beacon/states/head/validators?id=$1" | json 'd["data"][0]["validator"]["pubkey"]'; }
for i in 0 1 2 3 4 5 6 7; do echo "$(pubkey_of $i) $i"; done \
  | python3 -c 'import json,sys; print(json.dumps({k: int(i) for k, i in map(str.split, sys.stdin)}))' >"$WORK/index-of.json"
index_of() { json "d.get('$1', '')" <"$WORK/index-of.json"; }
km_indices() { # the interop indices of the validator client's local keys, sorted
  km GET /eth/v1/keystores | python3 -c '
import json,sys; m=json.load(open(sys.argv[1]))
print(" ".join(str(x) for x in sorted(m.get(k["validating_pubkey"], -1) for k in json.load(sys.stdin)["data"])))' "$WORK/index-of.json"
}
[ "$(km_indices)" = "0 1 2 3 4 5" ] || fail "the validator client lists '$(km_indices)', not 0-5"
log "the validator client's keymanager lists interop 0-5"

# ---------- Optimum (auth + console) from the simulator; its beacon is not used ----------
"$SIM_EXE" --validators 8 >"$WORK/sim.json" 2>"$WORK/sim.log" &
PIDS+=($!)
deadline=$((SECONDS + 20))
until [ -s "$WORK/sim.json" ]; do [ $SECONDS -lt $deadline ] || fail "keysync-sim did not start"; sleep 0.1; done
SIM=$(json 'd["url"]' <"$WORK/sim.json")
KEY=$(json 'd["api_key"]' <"$WORK/sim.json")

assigned() { curl -sS --max-time 10 "$SIM/sim/registry" | json '" ".join(str(i) for i in sorted(r["validator_index"] for r in d["assignments"] if r.get("active", True)))'; }
wait_assigned() { # expected seconds what: poll the registry until it holds exactly `expected`
  local want=$1 deadline=$((SECONDS + $2)) got
  while got=$(assigned); [ "$got" != "$want" ]; do
    [ $SECONDS -lt $deadline ] || { tail -30 "$WORK/watch.log" >&2; fail "$3: registry '$got', want '$want' after $2s"; }
    alive "$WATCH_PID" || { tail -30 "$WORK/watch.log" >&2; fail "$3: keysync watch exited (registry '$got')"; }
    sleep 0.2
  done
}
[ -z "$(assigned)" ] || fail "the simulated registry does not start empty: '$(assigned)'"

# The one-shot commands' environment (the keymanager source comes by flag or as set below).
export KEYSYNC_API_URL=$SIM KEYSYNC_AUTH_URL=$SIM KEYSYNC_API_KEY=$KEY \
  KEYSYNC_BEACON_URL=$BEACON KEYSYNC_CHAIN_ID=0x5 KEYSYNC_SLOT_MS=2000 KEYSYNC_LOG_FORMAT=json
WATCH_PID=
KM_FLAGS=(--keymanager-url "$KM" --keymanager-token-file "$TOKEN_FILE")

# ---------- 1. diff with only the keymanager source plans exactly 0-5 ----------
t=$(now)
rc=0; "$KEYSYNC" diff "${KM_FLAGS[@]}" >"$WORK/diff.out" 2>"$WORK/diff.err" || rc=$?
T_DIFF=$(since "$t")
[ $rc = 0 ] || { cat "$WORK/diff.err" >&2; fail "keysync diff exited $rc"; }
python3 - "$WORK/diff.out" <<'PY' || { cat "$WORK/diff.out" "$WORK/diff.err" >&2; fail "keysync diff did not plan exactly 0-5"; }
import json, sys
d = json.load(open(sys.argv[1]))
want = {"to_register": 6, "to_assign": [[i, "0x5"] for i in range(6)], "to_unassign": []}
assert d == want, f"plan {d}\nwant {want}"
PY
log "PASS 1: keysync diff (keymanager source only) plans exactly 0-5, registering 6 keys (${T_DIFF}s)"

# ---------- 5b. a wrong token: exit 4 naming the keymanager URL (set through the environment) ----------
WRONG="api-token-0x$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
printf '%s' "$WRONG" >"$WORK/wrong-token.txt"
rc=0
KEYSYNC_KEYMANAGER_URL=$KM KEYSYNC_KEYMANAGER_TOKEN_FILE=$WORK/wrong-token.txt \
  "$KEYSYNC" diff >"$WORK/wrong.out" 2>"$WORK/wrong.err" || rc=$?
[ $rc = 4 ] || { cat "$WORK/wrong.out" "$WORK/wrong.err" >&2; fail "a wrong keymanager token: keysync diff exited $rc, want 4"; }
grep -qF "$KM" "$WORK/wrong.err" || { cat "$WORK/wrong.err" >&2; fail "the wrong-token error does not name $KM"; }
[ ! -s "$WORK/wrong.out" ] || { cat "$WORK/wrong.out" >&2; fail "a wrong token still printed a plan"; }
! grep -qF "${WRONG#api-token-0x}" "$WORK/wrong.out" "$WORK/wrong.err" || fail "the wrong token itself appears in keysync's output"
log "PASS 5b: a wrong token exits 4 naming $KM: $(tail -1 "$WORK/wrong.err" | cut -c1-300)"

# ---------- 2. the daemon assigns 0-5 from the keymanager ----------
t=$(now)
"$KEYSYNC" watch --apply "${KM_FLAGS[@]}" --keymanager-poll-secs 2 \
  --data-dir "$WORK/state" --listen "127.0.0.1:$LISTEN_PORT" >"$WORK/watch.out" 2>"$WORK/watch.log" &
WATCH_PID=$!
PIDS+=($WATCH_PID)
wait_assigned "0 1 2 3 4 5" 90 "watch --apply"
T_WATCH=$(since "$t")
log "PASS 2: keysync watch --apply assigned 0-5 ${T_WATCH}s after start"

# ---------- 3. a keystore imported into the validator client is assigned ----------
"$DEVNET/make-keystore.sh" --interop 6 >"$WORK/keystore-6.json"
PK6=0x$(json 'd["pubkey"]' <"$WORK/keystore-6.json")
[ "$(index_of "$PK6")" = 6 ] || fail "make-keystore.sh --interop 6 made pubkey $PK6, not interop 6's"
body=$(python3 -c 'import json,sys; print(json.dumps({"keystores": [open(sys.argv[1]).read().strip()], "passwords": ["testpassword"]}))' "$WORK/keystore-6.json")
t=$(now)
status=$(km POST /eth/v1/keystores "$body" | json 'd["data"][0]["status"]')
[ "$status" = imported ] || fail "importing interop 6: status '$status'"
[ "$(km_indices)" = "0 1 2 3 4 5 6" ] || fail "after the import the validator client lists '$(km_indices)'"
wait_assigned "0 1 2 3 4 5 6" 60 "after importing interop 6"
T_IMPORT=$(since "$t")
log "PASS 3: interop 6 imported into the validator client, assigned ${T_IMPORT}s later"

# ---------- 4. the same key deleted from the validator client is unassigned ----------
# Lodestar 1.5.1 bug: once its validator client has learned the key's index
# (at an epoch's duties poll), DELETE answers "deleted" and removes the
# keystore from disk but keeps listing the key (ValidatorStore.removeSigner
# short-circuits `indicesService.removeForKey(pk) || validators.delete(pk)`);
# a second DELETE removes it. So: DELETE until the list no longer holds it,
# and time keysync from the moment it stopped listing it.
t=$(now)
attempts=0
deadline=$((SECONDS + 30))
while [ "$(km_indices)" != "0 1 2 3 4 5" ]; do
  [ $SECONDS -lt $deadline ] || fail "the validator client still lists '$(km_indices)' after $attempts DELETEs"
  [ $attempts = 0 ] || sleep 0.5
  status=$(km DELETE /eth/v1/keystores "{\"pubkeys\": [\"$PK6\"]}" | json 'd["data"][0]["status"]')
  attempts=$((attempts + 1))
  case "$status" in deleted|not_active) ;; *) fail "deleting interop 6 (DELETE $attempts): status '$status'" ;; esac
done
T_UNLIST=$(since "$t")
t=$(now)
wait_assigned "0 1 2 3 4 5" 60 "after deleting interop 6"
T_DELETE=$(since "$t")
log "PASS 4: interop 6 deleted from the validator client ($attempts DELETE(s), unlisted after ${T_UNLIST}s), unassigned ${T_DELETE}s later"

# ---------- 5a. the token never surfaces ----------
curl -sS --max-time 10 "http://127.0.0.1:$LISTEN_PORT/metrics" >"$WORK/metrics.txt" || fail "no /metrics on 127.0.0.1:$LISTEN_PORT"
curl -sS --max-time 10 "http://127.0.0.1:$LISTEN_PORT/ready" >"$WORK/ready.json" || true
alive "$WATCH_PID" || fail "keysync watch is no longer running"
stop_pid "$WATCH_PID" 15
rc=0; wait "$WATCH_PID" || rc=$?
rest=(); for p in "${PIDS[@]}"; do [ "$p" = "$WATCH_PID" ] || rest+=("$p"); done; PIDS=("${rest[@]}")
[ $rc = 0 ] || { tail -20 "$WORK/watch.log" >&2; fail "keysync watch exited $rc on SIGTERM, want 0"; }
HEX=${TOKEN#api-token-}; HEX=${HEX#0x}
leaks=$(grep -rlaF -e "$TOKEN" -e "${HEX:0:16}" -e "${HEX: -16}" \
  "$WORK"/diff.* "$WORK"/wrong.* "$WORK"/watch.* "$WORK/metrics.txt" "$WORK/ready.json" "$WORK/state" || true)
[ -z "$leaks" ] || fail "the keymanager token (or part of it) appears in: $leaks"
if grep -q '"level":"ERROR"' "$WORK/watch.log"; then log "note: the daemon logged errors:"; grep '"level":"ERROR"' "$WORK/watch.log" | cut -c1-300 >&2; fi
log "PASS 5a: the token is in none of keysync's stdout/stderr/logs, /metrics, /ready or its store ($(wc -l <"$WORK/watch.log") log lines)"

OK=yes
log "timings: devnet up ${T_DEVNET}s; diff ${T_DIFF}s; watch start->0-5 assigned ${T_WATCH}s; import->assigned ${T_IMPORT}s; unlisted->unassigned ${T_DELETE}s (${attempts} DELETEs)"
echo "keymanager-e2e: 5 passed, 0 failed"
