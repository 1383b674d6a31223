#!/bin/bash
# Hot streams and many writers, through `tide batch --stats`:
#
#  1. hot stream: BENCH_HOT_DEPOSITS deposits on one account, as one batch
#     (commands waiting on the stream share a write), against the same
#     deposits sent one at a time (--concurrency 1: one write per round
#     trip, the floor); on DynamoDB Local and on the embedded store.
#  2. many writers: the same deposits on 8 accounts by 4 writer processes
#     at once against 1 process: DynamoDB requests per command, read and
#     write capacity units per command (what the bill is made of); the
#     conflicts, and of their catch-ups those that read the stream (reads)
#     and those that took the refused write's events as all they missed
#     (guessed; docs/dynamodb-layout.md).
#
#   bench/hot_streams.sh            (from the project root; make bench runs it)
#   BENCH_HOT_DEPOSITS=2000         deposits of the hot-stream runs
#   BENCH_HOT_WRITER_DEPOSITS=400   deposits of each many-writers process
#   BENCH_HOT_TURNS=3               hot-stream turns on DynamoDB Local (one at a time
#                                   and batched alternating; medians: the machine is shared)
#   BENCH_HOT_SQLITE_TURNS=7        the same on the embedded store (a run there takes
#                                   a tenth of a second: more turns, a steadier median)
#   BENCH_HOT_CEILING_ITEMS=1000    items of each row of DynamoDB Local's own ceiling
#                                   (bench/dynamodb_local_ceiling.py, after the turns)
#
# Every run gets tables of its own (a new table prefix, `tide init`) in a
# DynamoDB Local started for it (see fresh_dynamodb), or a new SQLite file. Capacity units are as DynamoDB Local reports them
# (ReturnConsumedCapacity = TOTAL); AWS bills a transactional write at
# twice the units of a plain one (docs/dynamodb-layout.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPOSITS=${BENCH_HOT_DEPOSITS:-2000}
WRITER_DEPOSITS=${BENCH_HOT_WRITER_DEPOSITS:-400}
TURNS=${BENCH_HOT_TURNS:-3}
SQLITE_TURNS=${BENCH_HOT_SQLITE_TURNS:-7}
CEILING_ITEMS=${BENCH_HOT_CEILING_ITEMS:-1000}
TIDE=$ROOT/build/tide
export AWS_ACCESS_KEY_ID=tidebench AWS_SECRET_ACCESS_KEY=tidebenchsecret
unset AWS_SESSION_TOKEN AWS_PROFILE LD_PRELOAD
note() { echo "bench: $*" >&2; }
[ -x "$TIDE" ] || { note "build/tide is missing: run make"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-hot.XXXXXX")
cleanup() {
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A DynamoDB Local of its own for every DynamoDB run: on a table with a
# stream, each item it writes costs it more CPU as the stream records of
# its whole life pile up (bench/dynamodb_local_ceiling.py), so a run in a
# server that wrote before is slower for that alone.
fresh_dynamodb() {
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true
  tools/servers.sh start "$tmp/servers" --dynamodb-only >/dev/null
  # shellcheck disable=SC1091
  . "$tmp/servers/env"
  E=$TIDE_TEST_DYNAMODB_ENDPOINT
  # its JIT warmed first (a cold JVM made the first seconds of a run
  # several times slower), on tables without a stream
  python3 bench/dynamodb_local_ceiling.py "$E" "$(cat "$tmp/servers/dynamodb-local.pid")" 2000 --warm-only
}

config() { # store -> path of a tide.yaml on a fresh store (called in $(...): the count is kept in a file)
  local n
  n=$(($(cat "$tmp/configs" 2>/dev/null || echo 0) + 1))
  echo "$n" >"$tmp/configs"
  local cfg="$tmp/c$n.yaml"
  if [ "$1" = dynamodb ]; then
    printf 'store: dynamodb\ndynamodb:\n  endpoint: %s\n  region: us-east-1\n  table_prefix: hot%d_\naggregates: %s/aggregates\n' \
      "$E" "$n" "$ROOT" >"$cfg"
  else
    printf 'store: sqlite\nsqlite:\n  path: %s/s%d.db\naggregates: %s/aggregates\n' "$tmp" "$n" "$ROOT" >"$cfg"
  fi
  "$TIDE" init --config "$cfg" >/dev/null
  echo "$cfg"
}

deposits() { # count accounts -> NDJSON (the Opens first)
  awk -v n="$1" -v a="$2" 'BEGIN {
    for (j = 1; j <= n; j++)
      printf "{\"aggregate\":\"account\",\"id\":\"h%d\",\"command\":{\"type\":\"Deposit\",\"amount\":1}}\n", j % a + 1
  }'
}
open_accounts() { # cfg accounts
  awk -v a="$2" 'BEGIN { for (i = 1; i <= a; i++)
    printf "{\"aggregate\":\"account\",\"id\":\"h%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o\"}}\n", i }' |
    "$TIDE" batch --config "$1" >/dev/null
}

# stat FILE KEY: a number from the --stats line in FILE (KEY: a dotted path)
cat >"$tmp/stat.lua" <<'LUA'
local cjson = require "cjson"
local line
for l in io.lines(arg[1]) do if l:find('"stats"', 1, true) then line = l end end
local v = line and cjson.decode(line).stats
for k in arg[2]:gmatch("[^.]+") do v = type(v) == "table" and v[k] or nil end
io.write(tostring(v or 0))
LUA
stat() { luajit "$tmp/stat.lua" "$1" "$2"; }

check_all_ok() { # stats file, expected commands
  local ok
  ok=$(stat "$1" outcomes.ok)
  [ "$ok" = "$2" ] || { note "only $ok of $2 commands succeeded ($1)"; cat "$1" >&2; exit 1; }
}

echo "Hot stream: $DEPOSITS deposits on one account, tide batch (commands waiting on the stream share a write)"
echo "against the same deposits one at a time (--concurrency 1: one write per round trip); $TURNS turns on DynamoDB Local, $SQLITE_TURNS on the embedded store,"
echo "one at a time and batched in turns (batched first in even turns), each run on tables of its own"
echo "(on DynamoDB, in a DynamoDB Local of its own);"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-10s %4s %-14s %10s %8s %8s %9s %11s %11s
' store turn mode "commands/s" seconds writes "req/cmd" "RCU/cmd" "WCU/cmd"
deposits "$DEPOSITS" 1 >"$tmp/hot.ndjson"
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
for store in dynamodb sqlite; do
  ratios="" floors="" batcheds=""
  turns=$TURNS
  [ "$store" = sqlite ] && turns=$SQLITE_TURNS
  for ((turn = 1; turn <= turns; turn++)); do
    declare -A rate=()
    modes="floor batched"
    [ $((turn % 2)) = 0 ] && modes="batched floor"
    for mode in $modes; do
      [ "$store" = dynamodb ] && fresh_dynamodb
      cfg=$(config "$store")
      open_accounts "$cfg" 1
      args=()
      [ "$mode" = floor ] && args=(--concurrency 1)
      "$TIDE" batch --config "$cfg" --stats "${args[@]}" <"$tmp/hot.ndjson" >/dev/null 2>"$tmp/stats"
      check_all_ok "$tmp/stats" "$DEPOSITS"
      rate[$mode]=$(stat "$tmp/stats" commands_per_second)
      printf '  %-10s %4d %-14s %10.0f %8.2f %8s %9.3f %11.3f %11.3f\n' "$store" "$turn" \
        "$([ "$mode" = floor ] && echo "one at a time" || echo "batched")" "${rate[$mode]}" \
        "$(stat "$tmp/stats" seconds)" "$(stat "$tmp/stats" writes)" \
        "$(stat "$tmp/stats" dynamodb.requests_per_command)" "$(stat "$tmp/stats" dynamodb.read_units_per_command)" \
        "$(stat "$tmp/stats" dynamodb.write_units_per_command)"
    done
    ratios="$ratios $(awk -v b="${rate[batched]}" -v f="${rate[floor]}" 'BEGIN { printf "%.2f", b / f }')"
    floors="$floors ${rate[floor]}" batcheds="$batcheds ${rate[batched]}"
    unset rate
  done
  awk -v r="$(echo "$ratios" | median)" -v f="$(echo "$floors" | median)" -v b="$(echo "$batcheds" | median)" \
    -v s="$store" -v all="$ratios" \
    'BEGIN { printf "  %s: batched = %.1f x the one-at-a-time floor (median of the turns%s; medians %.0f vs %.0f commands/s; target: at least 3 x)\n", s, r, all, b, f }'
  if [ "$store" = dynamodb ]; then
    # What DynamoDB Local itself writes at best, in a server as fresh as
    # the runs', with an independent client
    fresh_dynamodb
    python3 bench/dynamodb_local_ceiling.py "$E" "$(cat "$tmp/servers/dynamodb-local.pid")" "$CEILING_ITEMS" \
      | tee "$tmp/ceiling" | grep -v '^CEILING' | sed 's/^/  /'
    read -r no_stream with_stream < <(sed -n 's/^CEILING no_stream=\([0-9]*\) with_stream=\([0-9]*\)/\1 \2/p' "$tmp/ceiling")
    awk -v f="$(echo "$floors" | median)" -v ns="$no_stream" -v ws="$with_stream" 'BEGIN {
      printf "  3 x the floor is %.0f events/s; DynamoDB Local writes at most %.0f items/s on a table with a stream\n", 3 * f, ws
      printf "  (as tide init makes the events table) and %.0f without: %s\n", ns,
        (3 * f > ws ? "the target is past what DynamoDB Local itself can write here" : "within its reach") }'
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "Many writers: 4 writer processes x $WRITER_DEPOSITS deposits on the same 8 accounts, against 1 process"
echo "doing the same $((4 * WRITER_DEPOSITS)) deposits (DynamoDB Local)"
printf '  %-12s %9s %10s %10s %7s %8s %9s %11s %11s\n' writers commands conflicts "catch-ups" reads guessed "req/cmd" \
  "RCU/cmd" "WCU/cmd"
deposits "$WRITER_DEPOSITS" 8 >"$tmp/w.ndjson"
for _ in 1 2 3 4; do cat "$tmp/w.ndjson"; done >"$tmp/w4.ndjson"
declare -A per=()
for writers in 1 4; do
  fresh_dynamodb
  cfg=$(config dynamodb)
  open_accounts "$cfg" 8
  if [ "$writers" = 1 ]; then
    "$TIDE" batch --config "$cfg" --stats <"$tmp/w4.ndjson" >/dev/null 2>"$tmp/s1"
    files=("$tmp/s1")
  else
    files=()
    for p in 1 2 3 4; do
      "$TIDE" batch --config "$cfg" --stats <"$tmp/w.ndjson" >/dev/null 2>"$tmp/s4.$p" &
      files+=("$tmp/s4.$p")
    done
    wait
  fi
  cmds=0 conflicts=0 catchups=0 reads=0 guessed=0 req=0 rcu=0 wcu=0
  for f in "${files[@]}"; do
    c=$(stat "$f" commands)
    check_all_ok "$f" "$c"
    cmds=$((cmds + c))
    conflicts=$((conflicts + $(stat "$f" conflicts)))
    catchups=$((catchups + $(stat "$f" catch_ups)))
    reads=$((reads + $(stat "$f" catch_up_reads)))
    guessed=$((guessed + $(stat "$f" guessed_catch_ups)))
    req=$(awk -v a="$req" -v b="$(stat "$f" dynamodb.requests_total)" 'BEGIN { print a + b }')
    rcu=$(awk -v a="$rcu" -v b="$(stat "$f" dynamodb.read_units)" 'BEGIN { print a + b }')
    wcu=$(awk -v a="$wcu" -v b="$(stat "$f" dynamodb.write_units)" 'BEGIN { print a + b }')
  done
  per[$writers]=$(awk -v r="$req" -v c="$cmds" 'BEGIN { print r / c }')
  printf '  %-12s %9d %10d %10d %7d %8d %9.3f %11.3f %11.3f\n' "$writers process$([ "$writers" = 1 ] || echo es)" \
    "$cmds" "$conflicts" "$catchups" "$reads" "$guessed" "${per[$writers]}" \
    "$(awk -v u="$rcu" -v c="$cmds" 'BEGIN { print u / c }')" "$(awk -v u="$wcu" -v c="$cmds" 'BEGIN { print u / c }')"
done
awk -v a="${per[4]}" -v b="${per[1]}" \
  'BEGIN { printf "  requests per command, 4 writers / 1: %.2f x (target: at most 1.5 x)\n", a / b }'
