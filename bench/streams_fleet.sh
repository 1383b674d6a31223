#!/bin/bash
# `tide run` workers on 64 virtual shards: records/s with 1, 4 and 8
# workers, lease-table requests per worker, takeover after SIGKILL and
# SIGTERM (bench/streams_fleet.lua). A DynamoDB Local of its own and the
# Streams stand-in (spec/fixtures/streams_standin.js) on 127.0.0.1.
#   BENCH_FLEET_EVENTS=6000   events written before the workers start
#   BENCH_FLEET_WORKERS="1 4 8"   the worker counts
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
standin_pid=
cleanup() {
  [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null || true
  tools/servers.sh stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
tools/servers.sh start "$dir" --dynamodb-only >/dev/null
# shellcheck disable=SC1091
. "$dir/env"
node spec/fixtures/streams_standin.js --upstream "$TIDE_TEST_DYNAMODB_ENDPOINT" --shards 64 </dev/null >"$dir/standin.out" &
standin_pid=$!
for _ in $(seq 100); do grep -q '^PID=' "$dir/standin.out" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/^PORT=//p' "$dir/standin.out")
echo "conditions: DynamoDB Local and the stand-in on 127.0.0.1, 64 virtual shards, projection balances,"
echo "  lease_ms 3000, ${BENCH_FLEET_EVENTS:-6000} events written before the workers start (time includes start-up);"
echo "  the 2-core VM is shared with other agents' work: figures vary from run to run"
build/tide script bench/streams_fleet.lua "$TIDE_TEST_DYNAMODB_ENDPOINT" "http://127.0.0.1:$port" "${BENCH_FLEET_EVENTS:-6000}" ${BENCH_FLEET_WORKERS:-1 4 8} \
  | grep -v '^{'
