#!/usr/bin/env bash
# End-to-end check of the compose stack, built from the offline image target (no registry, no base image):
# deploys the tree, waits for health, injects records at ROOT through /test/inject-messages, checks that both
# consumer-apps' REST APIs return every record in order, stops the L3 that POS is connected to, checks that the
# stream goes on through the other L3, then tears everything down.
#
#   deploy/compose-e2e.sh                 stage host-built release binaries, then run
#   SKIP_BUILD=1 deploy/compose-e2e.sh    use binaries already in target/release
#   E2E_COUNT=10000 (records per phase)   E2E_KEEP=1 (leave the stack running)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
count=${E2E_COUNT:-10000}
project=relay-e2e
compose=(docker-compose -p "$project" -f docker-compose.yml)
export RELAY_IMAGE_TARGET=offline
root_url=http://127.0.0.1:8080
registry_url=http://127.0.0.1:8500
consumers=(http://127.0.0.1:8091 http://127.0.0.1:8092)

log() { printf '[compose-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "FAILED: $*"; "${compose[@]}" ps || true; "${compose[@]}" logs --tail=40 || true; exit 1; }
teardown() {
  if [ "${E2E_KEEP:-0}" != 1 ]; then
    log "tearing down"
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
}
trap teardown EXIT

# Polls `$@` until it succeeds, for at most $1 seconds.
retry() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}

# Prints how many records of `topic` a consumer-app holds in order from offset 0, or fails on a gap,
# a duplicate or a reordering.
count_in_order() { # consumer_url topic
  python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
base, topic = sys.argv[1], sys.argv[2]
expected, cursor = 0, 0
while True:
    url = f"{base}/api/v1/topics/{topic}/messages?from={cursor}&limit=1000"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            page = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            break
        raise
    for message in page["messages"]:
        if message["offset"] != expected:
            sys.exit(f"offset {message['offset']} where {expected} was expected")
        expected += 1
    if page.get("next") is None or not page["messages"]:
        break
    cursor = page["next"]
print(expected)
PY
}

wait_for_count() { # consumer_url topic want seconds
  local deadline=$((SECONDS + $4)) have=0
  while [ $SECONDS -lt $deadline ]; do
    have=$(count_in_order "$1" "$2" 2>/dev/null || echo error)
    [ "$have" = "$3" ] && return 0
    sleep 1
  done
  log "$1 holds $have of $3 records of $2"
  return 1
}

inject() { # topic count
  curl -fsS -X POST "$root_url/test/inject-messages" -H 'content-type: application/json' \
    -d "{\"topic\": \"$1\", \"count\": $2, \"size\": 256}" >/dev/null
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  deploy/stage-offline.sh
else
  SKIP_BUILD=1 deploy/stage-offline.sh
fi

log "building images and starting the stack"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
"${compose[@]}" up -d --build >/dev/null || fail "docker-compose up"

log "waiting for every service to be healthy"
for url in "$registry_url/health" "$root_url/health" "${consumers[@]/%//health}"; do
  retry 180 curl -fsS "$url" || fail "$url never became healthy"
done

log "injecting $count records at ROOT"
inject e2e "$count" || fail "inject at ROOT"
for consumer in "${consumers[@]}"; do
  wait_for_count "$consumer" e2e "$count" 120 || fail "$consumer did not receive every record in order"
done
log "both consumer-apps hold all $count records in order"

active_l3=$(curl -fsS "$registry_url/api/v1/nodes/pos-1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["parent"] or "")')
case "$active_l3" in
  l3-a) service=l3a ;;
  l3-b) service=l3b ;;
  *) fail "POS reports no L3 parent (got '$active_l3')" ;;
esac
log "stopping $service, the L3 that POS is connected to"
"${compose[@]}" stop "$service" >/dev/null || fail "stop $service"

log "injecting $count more records at ROOT"
inject e2e "$count" || fail "inject at ROOT after stopping $service"
for consumer in "${consumers[@]}"; do
  wait_for_count "$consumer" e2e "$((2 * count))" 120 || fail "$consumer stalled after $service stopped"
done
new_l3=$(curl -fsS "$registry_url/api/v1/nodes/pos-1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["parent"] or "")')
log "the stream went on through $new_l3: both consumer-apps hold all $((2 * count)) records in order"
echo "compose-e2e: 1 passed, 0 failed"
