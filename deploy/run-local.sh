#!/usr/bin/env bash
# Runs the whole relay tree on this machine, without Docker: the registry, ROOT, L2, L3, POS and LOCAL brokers,
# and a consumer-app on LOCAL, as local processes on 127.0.0.1 with all data under one directory. Injects sample
# data at ROOT, prints where to look, and stops everything cleanly on Ctrl-C.
#
#   deploy/run-local.sh                 build (release) and run; data under ./data/local-tree
#   RELAY_DATA=/tmp/tree deploy/run-local.sh
#   RELAY_BASE_PORT=19000 deploy/run-local.sh      ports start here (default 18000)
#   RELAY_SAMPLE_COUNT=10000 deploy/run-local.sh   generated sample records (default 1000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${RELAY_DATA:-$root/data/local-tree}
base=${RELAY_BASE_PORT:-18000}
sample_count=${RELAY_SAMPLE_COUNT:-1000}
bin="$root/target/release"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "building release binaries (the first build takes a few minutes)..."
  (cd "$root" && cargo build --release --locked -p broker -p registry -p consumer-app)
fi
mkdir -p "$data/logs"

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  # Children first, so that nothing reconnects to a parent that is going away.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; data kept in $data"
  exit 0
}
trap stop_all INT TERM EXIT

wait_healthy() { # name url
  for _ in $(seq 1 300); do
    if curl -fsS "$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become healthy; see $data/logs/$1.log" >&2
  exit 1
}

registry_port=$base
REGISTRY_LISTEN=127.0.0.1:$registry_port REGISTRY_DB="$data/registry/registry.sqlite" \
  "$bin/registry" >"$data/logs/registry.log" 2>&1 &
pids+=($!)
wait_healthy registry "http://127.0.0.1:$registry_port/health"

level_names=(ROOT L2 L3 POS LOCAL)
node_ids=(root l2-eu l3-s12 pos-t1 local-t1)
labels=("" "region=eu" "region=eu,store=s12" "region=eu,store=s12,till=t1" "region=eu,store=s12,till=t1")
for i in 0 1 2 3 4; do
  http_port=$((base + 10 + i))
  tcp_port=$((base + 20 + i))
  id=${node_ids[i]}
  BROKER_NODE_ID=$id BROKER_LEVEL=${level_names[i]} BROKER_LABELS=${labels[i]} \
    BROKER_DATA_DIR="$data/$id" BROKER_HTTP_ADDR=127.0.0.1:$http_port BROKER_CONSUMER_ADDR=127.0.0.1:$tcp_port \
    BROKER_REGISTRY_URL=http://127.0.0.1:$registry_port BROKER_TEST_ENDPOINTS=true \
    "$bin/broker" >"$data/logs/$id.log" 2>&1 &
  pids+=($!)
  wait_healthy "$id" "http://127.0.0.1:$http_port/health"
done

consumer_port=$((base + 30))
CONSUMER_BROKER_ADDR=127.0.0.1:$((base + 24)) CONSUMER_ID=till-app-1 CONSUMER_GROUP=till-app CONSUMER_TOPICS='*' \
  CONSUMER_DATA_DIR="$data/consumer-app" CONSUMER_HTTP_LISTEN=127.0.0.1:$consumer_port \
  "$bin/consumer-app" >"$data/logs/consumer-app.log" 2>&1 &
pids+=($!)
wait_healthy consumer-app "http://127.0.0.1:$consumer_port/health"

root_http=http://127.0.0.1:$((base + 10))
echo "injecting sample data at ROOT..."
curl -fsS -X POST "$root_http/api/v1/topics/prices/messages" -H 'content-type: application/json' -d '[
  {"key": "AAPL", "value": {"price": 189.91, "currency": "USD"}},
  {"key": "GOOGL", "value": {"price": 141.80, "currency": "USD"}},
  {"key": "MSFT", "value": {"price": 378.85, "currency": "USD"}},
  {"key": "TSLA", "value": {"price": 248.48, "currency": "USD"}},
  {"key": "AMZN", "value": {"price": 151.94, "currency": "USD"}}
]' >/dev/null
curl -fsS -X POST "$root_http/test/inject-messages" -H 'content-type: application/json' \
  -d "{\"topic\": \"catalog\", \"count\": $sample_count, \"size\": 256}" >/dev/null

cat <<TXT

The relay tree is running (data and logs under $data):
  registry page (the tree):        http://127.0.0.1:$registry_port/
  ROOT HTTP API (publish here):    $root_http/api/v1/topics
  LOCAL broker:                    http://127.0.0.1:$((base + 14))/test/stats
  consumer-app REST (local copy):  http://127.0.0.1:$consumer_port/api/v1/topics/prices/messages
                                   http://127.0.0.1:$consumer_port/api/v1/topics/prices/keys/AAPL
                                   http://127.0.0.1:$consumer_port/api/v1/stats
Publish more:
  curl -X POST $root_http/api/v1/topics/prices/messages -H 'content-type: application/json' \\
       -d '{"key": "AAPL", "value": {"price": 190.12}}'
Press Ctrl-C to stop everything.
TXT
wait -n "${pids[@]}" || true
echo "a process exited unexpectedly; see $data/logs" >&2
exit 1
