#!/bin/bash
# The cost of metrics per command: `tide batch` of the same single-event
# deposits with metrics off (no --metrics: every recording call returns at
# once) and on (--metrics 127.0.0.1:0: commands, durations and, on
# DynamoDB, every request counted; a scraper reads /metrics every second
# during the run), on the embedded store and on DynamoDB Local, in one run.
#
#   bench/metrics_cost.sh                (from the project root; make bench runs it)
#   BENCH_MET_SMALL=5000 BENCH_MET_LARGE=30000   deposits of the small and large runs (embedded store)
#   BENCH_MET_DDB_SMALL=640 BENCH_MET_DDB_LARGE=3200   the same on DynamoDB Local
#   BENCH_MET_ACCOUNTS=64                accounts (one Open each, first)
#   BENCH_MET_TURNS=5                    turns; medians reported
#   BENCH_MET_STORES="sqlite dynamodb"  the stores measured
#
# Client CPU = user + sys of the tide process (GNU time). Marginal CPU per
# command = (CPU of the large run - CPU of the small run) / (LARGE -
# SMALL), per turn, so start-up is not counted; the medians over the turns,
# and the median of the turns' on/off ratios. Off and on take turns (off
# first in odd turns, on first in even ones), so that a noisy minute of the
# shared machine lands on both; on DynamoDB each turn has a fresh DynamoDB
# Local. Target: on within 3% of off. --concurrency is the number of
# accounts, so that no two commands of one stream are in flight together:
# each deposit is then exactly one write in both modes (with more in
# flight, how many commands share a write depends on the server's timing,
# and that moves the CPU per command by more than the metrics do); the
# requests per command of both modes are printed to show it. CPU times have GNU time's 10 ms
# resolution: the runs are long enough for it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMALL=${BENCH_MET_SMALL:-5000}
LARGE=${BENCH_MET_LARGE:-30000}
DSMALL=${BENCH_MET_DDB_SMALL:-640}
DLARGE=${BENCH_MET_DDB_LARGE:-3200}
ACCOUNTS=${BENCH_MET_ACCOUNTS:-64}
TURNS=${BENCH_MET_TURNS:-5}
STORES=${BENCH_MET_STORES:-"sqlite dynamodb"}
TIDE=$ROOT/build/tide
export AWS_ACCESS_KEY_ID=tidebench AWS_SECRET_ACCESS_KEY=tidebenchsecret
unset AWS_SESSION_TOKEN AWS_PROFILE
note() { echo "bench: $*" >&2; }
[ -x "$TIDE" ] || { note "build/tide is missing: run make"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-metrics.XXXXXX")
cleanup() {
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

commands() { # deposits -> NDJSON
  awk -v n="$1" -v a="$ACCOUNTS" 'BEGIN {
    for (i = 1; i <= a; i++)
      printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}\n", i, i
    for (j = 1; j <= n; j++)
      printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}\n", j % a + 1, j
  }'
}

# run STORE MODE SIZE TURN CFG: one measured tide batch; appends
# "store mode size turn cpu" to $tmp/times.
run() {
  local store=$1 mode=$2 size=$3 turn=$4 cfg=$5 in="$tmp/$1.$3.ndjson" out="$tmp/out.ndjson" args="--concurrency $ACCOUNTS --stats" scraper=""
  if [ "$mode" = on ]; then
    args="$args --metrics 127.0.0.1:0"
  fi
  /usr/bin/time -f '%U %S' -o "$tmp/time" "$TIDE" batch --config "$cfg" $args <"$in" >"$out" 2>"$tmp/err" &
  local pid=$!
  if [ "$mode" = on ]; then
    # scrape it while it runs: the port is in its "metrics listening" line
    ( port=""
      for _ in $(seq 1 200); do
        port=$(grep -o 'port=[0-9]*' "$tmp/err" 2>/dev/null | head -1 | cut -d= -f2 || true)
        [ -n "$port" ] && break
        sleep 0.02
      done
      n=0
      while kill -0 "$pid" 2>/dev/null; do
        curl -s -o /dev/null "http://127.0.0.1:$port/metrics" && n=$((n + 1))
        sleep 1
      done
      echo "$n" >>"$tmp/scrapes" ) &
    scraper=$!
  fi
  wait "$pid" || { note "$store $mode: tide batch failed: $(head -3 "$tmp/err")"; exit 1; }
  [ -n "$scraper" ] && wait "$scraper"
  local bad
  bad=$(grep -vc '^{"ok":true' "$out" || true)
  [ "$bad" = 0 ] || { note "$store $mode: $bad commands failed: $(grep -m1 -v '^{"ok":true' "$out")"; exit 1; }
  echo "$store $mode $size $turn $(awk '{ print $1 + $2 }' "$tmp/time")" >>"$tmp/times"
  local reqs
  reqs=$(grep -o '"requests_total":[0-9]*' "$tmp/err" | cut -d: -f2 || true)
  # (the embedded store makes no requests: a bare `[ -n ] &&` as the last
  # command returned 1 and set -e ended the script there)
  if [ -n "$reqs" ]; then echo "$store $mode $size $reqs" >>"$tmp/requests"; fi
}

sqlite_cfg() { # name -> a tide.yaml on a fresh SQLite file
  local cfg="$tmp/$1.yaml"
  rm -f "$tmp/$1.db"*
  printf 'store: sqlite\nsqlite:\n  path: %s/%s.db\naggregates: %s/aggregates\n' "$tmp" "$1" "$ROOT" >"$cfg"
  "$TIDE" init --config "$cfg" >/dev/null
  echo "$cfg"
}

ddb_cfg() { # prefix -> a tide.yaml whose tables exist and are empty
  local cfg="$tmp/$1.yaml"
  printf 'store: dynamodb\ndynamodb:\n  endpoint: %s\n  region: us-east-1\n  table_prefix: %s\naggregates: %s/aggregates\n' \
    "$E" "$1" "$ROOT" >"$cfg"
  "$TIDE" init --config "$cfg" >/dev/null || { note "tide init failed for prefix $1"; exit 1; }
  echo "$cfg"
}

: >"$tmp/times"
: >"$tmp/scrapes"
: >"$tmp/requests"
commands "$SMALL" >"$tmp/sqlite.small.ndjson"
commands "$LARGE" >"$tmp/sqlite.large.ndjson"
commands "$DSMALL" >"$tmp/dynamodb.small.ndjson"
commands "$DLARGE" >"$tmp/dynamodb.large.ndjson"

for turn in $(seq 1 "$TURNS"); do
  case " $STORES " in *" sqlite "*) ;; *) break ;; esac
  order="off on"
  [ $((turn % 2)) = 0 ] && order="on off"
  note "metrics cost, embedded store, turn $turn of $TURNS: $order"
  for mode in $order; do
    run sqlite "$mode" small "$turn" "$(sqlite_cfg "s${turn}${mode}small")"
    run sqlite "$mode" large "$turn" "$(sqlite_cfg "s${turn}${mode}large")"
  done
done

if [[ " $STORES " == *" dynamodb "* ]]; then
  for turn in $(seq 1 "$TURNS"); do
    # DynamoDB Local slows down with every stream record it holds, and the
    # client's CPU per command with it: a fresh one per turn, warmed up
    # (its JIT) without measuring, then off and on in the turn's order.
    tools/servers.sh start "$tmp/servers" --dynamodb-only >&2 || { note "could not start DynamoDB Local"; exit 1; }
    # shellcheck disable=SC1091
    . "$tmp/servers/env"
    E=$TIDE_TEST_DYNAMODB_ENDPOINT
    "$TIDE" batch --config "$(ddb_cfg "w${turn}_")" <"$tmp/dynamodb.small.ndjson" >/dev/null
    order="off on"
    [ $((turn % 2)) = 0 ] && order="on off"
    note "metrics cost, DynamoDB Local, turn $turn of $TURNS: $order"
    for mode in $order; do
      run dynamodb "$mode" small "$turn" "$(ddb_cfg "m${turn}${mode}s_")"
      run dynamodb "$mode" large "$turn" "$(ddb_cfg "m${turn}${mode}l_")"
    done
    tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1
  done
fi

cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
echo "conditions: $(nproc) cores, ${cpu_model:-unknown CPU}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  (a machine shared with other jobs: the figures move with its load); single-event deposits over $ACCOUNTS accounts;"
echo "  'on' = --metrics 127.0.0.1:0 and a scrape of /metrics every second ($(awk '{ s += $1 } END { print s + 0 }' "$tmp/scrapes") scrapes answered in all)"
awk -v turns="$TURNS" -v S="$SMALL" -v L="$LARGE" -v DS="$DSMALL" -v DL="$DLARGE" '
  { cpu[$1, $2, $3, $4] = $5; seen[$1] = 1 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function marginal(st, mode, t, small, large) {
    return (cpu[st, mode, "large", t] - cpu[st, mode, "small", t]) * 1e6 / (large - small)
  }
  END {
    printf "%-16s %24s %24s %22s\n", "store", "off: CPU us/command", "on: CPU us/command", "on vs off (median of turns)"
    split("sqlite dynamodb", stores, " ")
    for (k = 1; k <= 2; k++) {
      st = stores[k]
      if (!seen[st]) continue
      small = st == "sqlite" ? S : DS; large = st == "sqlite" ? L : DL
      n = 0
      for (t = 1; t <= turns; t++) {
        if (!((st, "on", "large", t) in cpu && (st, "off", "large", t) in cpu)) continue
        n++
        off[n] = marginal(st, "off", t, small, large); on[n] = marginal(st, "on", t, small, large)
        ratio[n] = (on[n] / off[n] - 1) * 100
      }
      d = median(ratio, n)
      printf "%-16s %24.1f %24.1f %21.1f%%  %s\n", st == "sqlite" ? "embedded store" : "DynamoDB Local",
        median(off, n), median(on, n), d, (d <= 3 ? "(target: within 3%: met)" : "(target: within 3%: NOT MET)")
    }
  }' "$tmp/times"
if [ -s "$tmp/requests" ]; then
  echo "DynamoDB requests per command (large runs, all turns): $(awk -v L="$DLARGE" -v A="$ACCOUNTS" '
    $1 == "dynamodb" && $3 == "large" { r[$2] += $4; n[$2]++ }
    END { printf "off %.3f, on %.3f", r["off"] / n["off"] / (L + A), r["on"] / n["on"] / (L + A) }' "$tmp/requests")"
fi
echo "the recording calls on their own (bench/metrics_calls.lua; a command adds one metrics.command and two"
echo "  clock reads, each DynamoDB request one metrics.dynamodb_result):"
"$TIDE" script bench/metrics_calls.lua | sed 's/^/  /'
