#!/bin/bash
# A Kafka sink's publishing rate and CPU per event, next to kcat -P
# producing the same messages (the librdkafka floor), in one run.
#
#   bench/kafka_sink.sh             (from the project root; make bench runs it)
#   BENCH_KAFKA_EVENTS=20000        events published (deposits over BENCH_KAFKA_ACCOUNTS accounts)
#   BENCH_KAFKA_ACCOUNTS=64
#   BENCH_KAFKA_TURNS=3             turns (tide, kcat, tide, ...); medians reported
#
# Brokers: librdkafka's mock cluster (build/test/kafka_mock, 3 brokers on
# loopback, the topic with 3 partitions). tide: `tide project
# account_events --until-caught-up` with the example sink
# (examples/kafka/projections/account_events.lua) over the embedded store:
# read the feed, the projector, the default messages (JSON value, 5
# headers), the producer, the delivery reports, the checkpoints. kcat:
# `kcat -P -K` of the same keys and values, read back from the topic tide
# wrote, with 5 static headers of the same size, the same producer
# settings (idempotence, acks=all, murmur2). CPU = user + sys (GNU time,
# 10 ms resolution), the mock's not included. Start-up is included in both
# (kcat's is smaller): the counts are large enough for it not to matter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
EVENTS=${BENCH_KAFKA_EVENTS:-20000}
ACCOUNTS=${BENCH_KAFKA_ACCOUNTS:-64}
TURNS=${BENCH_KAFKA_TURNS:-3}
TIDE=$ROOT/build/tide
MOCK=$ROOT/build/test/kafka_mock
note() { echo "bench: $*" >&2; }
[ -x "$TIDE" ] && [ -x "$MOCK" ] || { note "build/tide or build/test/kafka_mock is missing: run make"; exit 1; }
command -v kcat >/dev/null || { note "kcat is missing (tools/deps.sh test)"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-kafka.XXXXXX")
mock_pid=""
cleanup() {
  exec 3>&- 2>/dev/null || true
  [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkfifo "$tmp/mock.in"
"$MOCK" >"$tmp/mock.out" 2>"$tmp/mock.err" <"$tmp/mock.in" &
mock_pid=$!
exec 3>"$tmp/mock.in"
for _ in $(seq 1 100); do grep -q bootstrap "$tmp/mock.out" && break; sleep 0.05; done
B=$(awk '/bootstrap/{print $2}' "$tmp/mock.out")
[ -n "$B" ] || { note "the mock cluster did not start"; exit 1; }
topic_n=0
new_topic() { # sets topic: a fresh topic, 3 partitions
  topic_n=$((topic_n + 1))
  topic="bench-$topic_n"
  echo "topic $topic 3" >&3
  sleep 0.2
}

# the store: EVENTS deposits (plus one Open per account)
mkdir -p "$tmp/app/projections"
awk -v n="$EVENTS" -v a="$ACCOUNTS" 'BEGIN {
  for (i = 1; i <= a; i++)
    printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}\n", i, i
  for (j = 1; j <= n - a; j++)
    printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}\n", j % a + 1, j
}' >"$tmp/cmds.ndjson"
cat >"$tmp/app/tide.yaml" <<EOF
store: sqlite
sqlite:
  path: $tmp/app/bench.db
aggregates: $ROOT/aggregates
projections: $tmp/app/projections
kafka:
  brokers: $B
EOF
"$TIDE" batch --config "$tmp/app/tide.yaml" <"$tmp/cmds.ndjson" >/dev/null

tide_turn() { # appends "seconds cpu" to tide.times
  new_topic
  # a sink of its own per turn (the file names it): a fresh checkpoint
  rm -f "$tmp/app/projections/"*.lua
  sed "s/\"account-events\"/\"$topic\"/" "$ROOT/examples/kafka/projections/account_events.lua" \
    >"$tmp/app/projections/sink_$topic_n.lua"
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$tmp/time" "$TIDE" project --config "$tmp/app/tide.yaml" "sink_$topic_n" \
    --until-caught-up >"$tmp/out" 2>"$tmp/err" || { note "tide project failed: $(tail -3 "$tmp/err")"; exit 1; }
  t1=$(date +%s.%N)
  grep -q "\"handled\":$EVENTS" "$tmp/out" || { note "tide published: $(cat "$tmp/out")"; exit 1; }
  echo "$topic" >"$tmp/last_topic"
  awk -v a="$t0" -v b="$t1" '{ printf "%.3f %.3f\n", b - a, $1 + $2 }' "$tmp/time" >>"$tmp/tide.times"
}

kcat_turn() { # appends "seconds cpu" to kcat.times: the messages of the last tide topic, produced again
  local src; src=$(cat "$tmp/last_topic")
  if [ ! -s "$tmp/messages" ]; then
    kcat -C -b "$B" -t "$src" -e -q -f '%k\t%s\n' >"$tmp/messages"
  fi
  new_topic
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$tmp/time" kcat -P -b "$B" -t "$topic" -K $'\t' -l \
    -X enable.idempotence=true -X acks=all -X partitioner=murmur2_random \
    -H tide-stream=account#a00 -H tide-version=00000 -H tide-type=Deposited \
    -H tide-event-id=account#a00@00000 -H tide-correlation-id=00000000000000000000000000000000 \
    "$tmp/messages" 2>"$tmp/kerr" || { note "kcat -P failed: $(tail -3 "$tmp/kerr")"; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" '{ printf "%.3f %.3f\n", b - a, $1 + $2 }' "$tmp/time" >>"$tmp/kcat.times"
}

: >"$tmp/tide.times"
: >"$tmp/kcat.times"
for turn in $(seq 1 "$TURNS"); do
  tide_turn
  kcat_turn
done
n=$(wc -l <"$tmp/messages")
[ "$n" -eq "$EVENTS" ] || note "the topic held $n messages, expected $EVENTS"

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
report() { # name file
  local s c
  s=$(awk '{ print $1 }' "$2" | median)
  c=$(awk '{ print $2 }' "$2" | median)
  awk -v name="$1" -v s="$s" -v c="$c" -v n="$EVENTS" 'BEGIN {
    printf "  %-34s %8.0f events/s   %6.1f us CPU/event   (%.2f s, %.2f s CPU, median of turns)\n",
      name, n / s, c * 1e6 / n, s, c }'
}
echo "  $EVENTS events over $ACCOUNTS accounts, mock cluster of 3 brokers, topic of 3 partitions, $TURNS turns"
echo "  (a shared machine: other agents' builds and suites run beside it)"
report "tide project (sink, embedded feed)" "$tmp/tide.times"
report "kcat -P (librdkafka floor)" "$tmp/kcat.times"
