#!/bin/bash
# Starts and stops the servers the test suite talks to, on loopback only.
#
#   tools/servers.sh start DIR [--dynamodb-only]
#                                starts DynamoDB Local and dynalite on free
#                                ports; writes DIR/env (sourceable: the
#                                TIDE_TEST_*_ENDPOINT variables) and pid files
#   tools/servers.sh stop DIR    stops them
#
# DynamoDB Local slows down with every stream record it holds (any table,
# deleted ones included), so heavy spec files start a private one
# (spec/helpers.lua: helpers.private_dynamodb) with --dynamodb-only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
cmd=${1:?usage: servers.sh start|stop DIR}
dir=${2:?usage: servers.sh start|stop DIR}
only=${3:-}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

wait_port() { # name port pid seconds
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then
      echo "servers: $1 exited during start-up; its log:" >&2
      tail -20 "$dir/$1.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "servers: $1 did not listen on 127.0.0.1:$2 within $4 s" >&2
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  ddb_port=$(free_port)
  (cd .deps/dynamodb-local && exec java -Xms256m -Xmx2g -Djava.library.path=DynamoDBLocal_lib \
      -jar DynamoDBLocal.jar -inMemory -sharedDb -disableTelemetry -port "$ddb_port" >"$dir/dynamodb-local.log" 2>&1) &
  echo $! >"$dir/dynamodb-local.pid"
  # DynamoDB Local has no bind-address option: it listens on every interface,
  # on an ephemeral port, for the test run only; clients use 127.0.0.1.
  if [ "$only" = --dynamodb-only ]; then
    wait_port dynamodb-local "$ddb_port" "$(cat "$dir/dynamodb-local.pid")" 60
    echo "export TIDE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:$ddb_port" >"$dir/env"
    echo "servers: DynamoDB Local on 127.0.0.1:$ddb_port"
    exit 0
  fi
  lite_port=$(free_port)
  node .deps/node_modules/dynalite/cli.js --host 127.0.0.1 --port "$lite_port" \
      >"$dir/dynalite.log" 2>&1 &
  echo $! >"$dir/dynalite.pid"
  wait_port dynamodb-local "$ddb_port" "$(cat "$dir/dynamodb-local.pid")" 60
  wait_port dynalite "$lite_port" "$(cat "$dir/dynalite.pid")" 30
  cat >"$dir/env" <<ENV
export TIDE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:$ddb_port
export TIDE_TEST_DYNALITE_ENDPOINT=http://127.0.0.1:$lite_port
ENV
  echo "servers: DynamoDB Local on 127.0.0.1:$ddb_port, dynalite on 127.0.0.1:$lite_port"
  ;;
stop)
  for name in dynamodb-local dynalite; do
    f="$dir/$name.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  ;;
*) echo "usage: servers.sh start|stop DIR" >&2; exit 2 ;;
esac
