#!/bin/bash
# The nginx host under load: wrk at 64 connections on the deposit route
# (POST /aggregates/account/{id}) of the example site against DynamoDB
# Local, then the same number of Deposit commands through `tide batch` in
# the tide process. Checks that nothing failed and no deposit was lost: the
# balances, read back through GET /aggregates/account/{id}, must add up to
# the deposits acknowledged with 200 (plus at most one per connection: the
# requests in flight when wrk closes its connections, which nginx completes
# without anyone reading the answer).
#
#   bench/nginx_wrk.sh
#
# Environment (all optional):
#   BENCH_WRK_DURATION=10       measured seconds
#   BENCH_WRK_WARMUP=3          warm-up seconds (DynamoDB Local's JIT), not measured
#   BENCH_WRK_CONNECTIONS=64    wrk connections (and tide batch --concurrency)
#   BENCH_WRK_THREADS=2         wrk threads
#   BENCH_WRK_ACCOUNTS=1000     accounts the deposits are spread over
#   BENCH_WRK_WORKERS="1 auto"  nginx worker_processes settings, one full run each (with
#                               more than one: requests/s and p99 side by side at the end)
#   BENCH_WRK_TURNS=1           runs of every setting, in turns (the settings' order
#                               reversed in even turns); with more than one, the verdict
#                               compares each setting's median requests/s
# Each run starts its own DynamoDB Local (tools/servers.sh) and stops it
# after: a second set of tables with streams in the same DynamoDB Local
# made every write of the next run many times slower (both hosts alike).
# Fresh servers differ too: the same 1-worker run on 4 hot accounts took
# DynamoDB Local 0.70 ms of CPU a request in one server and 1.39 ms in
# the next, which is why the worker counts are compared over turns.
# Exit status: 0 when every run completed with no error and no lost deposit.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${BENCH_WRK_DURATION:-10}
WARM=${BENCH_WRK_WARMUP:-3}
CONNS=${BENCH_WRK_CONNECTIONS:-64}
THREADS=${BENCH_WRK_THREADS:-2}
ACCOUNTS=${BENCH_WRK_ACCOUNTS:-1000}
TURNS=${BENCH_WRK_TURNS:-1}
unset LD_PRELOAD
note() { echo "nginx bench: $*" >&2; }

command -v wrk >/dev/null || { note "wrk is not installed (Debian package wrk): skipped"; exit 1; }
command -v nginx >/dev/null || { note "nginx is not installed (nginx-light, libnginx-mod-http-lua): skipped"; exit 1; }
[ -x build/tide ] || { note "build/tide is missing: run make"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-nginx-bench.XXXXXX")
cleanup() {
  for d in "$tmp"/site-*; do [ -d "$d" ] && tools/nginx.sh stop "$d" >/dev/null 2>&1; done
  for d in "$tmp"/servers-*; do [ -d "$d" ] && tools/servers.sh stop "$d" >/dev/null 2>&1; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-tidebench} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-tidebench}
cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
nginx_version=$(nginx -v 2>&1 | sed 's/.*nginx\///')

# Sum of the balances and how many were read, through the site (curl reuses one connection).
sum_balances() { # url
  local i urls=()
  for ((i = 1; i <= ACCOUNTS; i++)); do urls+=("$1/aggregates/account/acc-$i"); done
  curl -sS "${urls[@]}" | grep -o '"balance":[0-9]*' | awk -F: '{ s += $2; n++ } END { printf "%d %d\n", s, n }'
}

# Waits until the balances stop changing (the requests in flight when wrk
# closed its connections finish in nginx; with p99 over a second a fixed
# pause was too short and counted the warm-up's last deposits in the run),
# then prints them as sum_balances does.
settled_balances() { # url
  local prev cur i
  prev=$(sum_balances "$1")
  for ((i = 0; i < 40; i++)); do
    sleep 0.5
    cur=$(sum_balances "$1")
    [ "$cur" = "$prev" ] && break
    prev=$cur
  done
  echo "$cur"
}

# DynamoDB requests of the site by operation, and the commands forwarded to
# a stream's turn holder, from its /metrics (all workers): "writes reads forwarded"
ddb_requests() { # url
  curl -sS "$1/metrics" | awk '
    /^tide_dynamodb_requests_total/ && /operation="(PutItem|TransactWriteItems)"/ { w += $NF }
    /^tide_dynamodb_requests_total/ && /operation="(Query|GetItem)"/ { r += $NF }
    /^tide_forwarded_commands_total/ { f += $NF }
    END { printf "%d %d %d\n", w, r, f }'
}

# CPU seconds (user + system) of a process and all its descendants, from
# /proc: nginx's master and workers, or DynamoDB Local's java under npm.
tree_cpu() { # pid
  local tick
  tick=$(getconf CLK_TCK)
  # cat, not awk on the files: a process that exits between the glob and
  # the read would end mawk's run
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" -v tick="$tick" '
    {
      pid = $1; line = $0; sub(/^[0-9]+ \(.*\) /, "", line); split(line, f, " ")
      parent[pid] = f[2]; cpu[pid] = f[12] + f[13]
    }
    END {
      for (p in cpu) {
        q = p
        for (d = 0; d < 64 && q != "" && q != 0 && q != root; d++) q = parent[q]
        if (q == root) s += cpu[p]
      }
      printf "%.2f\n", s / tick
    }'
}

run_wrk() { # url seconds
  wrk -t"$THREADS" -c"$CONNS" -d"${2}s" --timeout 10s --latency -s bench/wrk_deposit.lua "$1" -- "$ACCOUNTS" 1 acc- \
    2>"$tmp/wrk.err"
}

run_one() { # worker_processes turn
  local rc run="$1-$2"
  tools/servers.sh start "$tmp/servers-$run" >&2 || { note "could not start DynamoDB Local"; return 1; }
  (
    # shellcheck disable=SC1090
    . "$tmp/servers-$run/env"
    measure "$1" "$run"
  )
  rc=$?
  tools/servers.sh stop "$tmp/servers-$run" >/dev/null 2>&1
  return $rc
}

measure() { # worker_processes run
  local w=$1 run=$2 cfg="$tmp/tide-$2.yaml" site="$tmp/site-$2" url workers base n final res ok t0 t1 batch_rc batch_ok after_batch out
  cat >"$cfg" <<YAML
store: dynamodb
dynamodb:
  endpoint: $TIDE_TEST_DYNAMODB_ENDPOINT
  region: us-east-1
  table_prefix: wrk$$_${run//-/_}_
aggregates: $ROOT/aggregates
projections: $ROOT/projections
YAML
  url=$(TIDE_NGINX_WORKERS=$w tools/nginx.sh start "$site" "$cfg") || { note "the nginx site did not start"; return 1; }
  workers=$(grep -c 'start worker process [0-9]' "$site/logs/error.log")

  # accounts, opened through tide batch (not measured)
  awk -v n="$ACCOUNTS" 'BEGIN { for (i = 1; i <= n; i++)
    printf "{\"aggregate\":\"account\",\"id\":\"acc-%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}\n", i, i }' \
    | build/tide batch --config "$cfg" --concurrency 64 >"$tmp/open.out" \
    || { note "opening $ACCOUNTS accounts failed: $(grep -m1 '"ok":false' "$tmp/open.out")"; return 1; }

  note "workers=$w: warm-up, ${WARM} s of deposits (not measured)"
  run_wrk "$url" "$WARM" >/dev/null
  read -r base n < <(settled_balances "$url")
  [ "$n" = "$ACCOUNTS" ] || { note "read $n of $ACCOUNTS balances before the run"; return 1; }

  note "workers=$w: wrk -t$THREADS -c$CONNS -d${DUR}s on POST /aggregates/account/{id}"
  ddb0=$(ddb_requests "$url")
  local ngx_pid ddb_pid cpu0 cpu1
  ngx_pid=$(cat "$site/logs/nginx.pid")
  ddb_pid=$(cat "$tmp/servers-$run/dynamodb-local.pid")
  cpu0="$(tree_cpu "$ngx_pid") $(tree_cpu "$ddb_pid")"
  out=$(run_wrk "$url" "$DUR")
  cpu1="$(tree_cpu "$ngx_pid") $(tree_cpu "$ddb_pid")"
  ddb1=$(ddb_requests "$url")
  res=$(grep '^WRK_RESULT ' <<<"$out" | sed 's/^WRK_RESULT //')
  [ -n "$res" ] || { note "wrk printed no result: $out $(cat "$tmp/wrk.err")"; return 1; }
  read -r final n < <(settled_balances "$url")  # requests in flight when wrk closed its connections finish
  [ "$n" = "$ACCOUNTS" ] || { note "read $n of $ACCOUNTS balances after the run"; return 1; }
  ok=$(node -pe 'JSON.parse(process.argv[1]).ok' "$res")

  # the same number of deposits through tide batch, in the tide process
  awk -v n="$ok" -v a="$ACCOUNTS" 'BEGIN { srand(); for (i = 1; i <= n; i++)
    printf "{\"aggregate\":\"account\",\"id\":\"acc-%d\",\"command\":{\"type\":\"Deposit\",\"amount\":1}}\n", 1 + int(rand() * a) }' \
    >"$tmp/deposits.ndjson"
  note "workers=$w: tide batch --concurrency $CONNS, $ok deposits"
  t0=$(date +%s.%N)
  build/tide batch --config "$cfg" --concurrency "$CONNS" <"$tmp/deposits.ndjson" >"$tmp/batch.out"
  batch_rc=$?
  t1=$(date +%s.%N)
  batch_ok=$(grep -c '^{"ok":true' "$tmp/batch.out")
  read -r after_batch _ < <(sum_balances "$url")
  tools/nginx.sh stop "$site" >/dev/null 2>&1

  BENCH_RPS_FILE="$tmp/rps" BENCH_WORKERS="$w" BENCH_COND="$(nproc) cores, ${cpu_model:-unknown CPU}; nginx $nginx_version, worker_processes $w ($workers), DynamoDB Local (in-memory) on 127.0.0.1 on the same cores" \
  node - "$res" "$base" "$final" "$after_batch" "$ok" "$batch_ok" "$batch_rc" "$t0" "$t1" \
         "$ACCOUNTS" "$THREADS" "$CONNS" "$WARM" "$DUR" "$ddb0" "$ddb1" "$cpu0" "$cpu1" <<'JS'
const [res, base, fin, afterBatch, ok, batchOk, batchRc, t0, t1, accounts, threads, conns, warm, dur, ddb0, ddb1, cpu0, cpu1] = process.argv.slice(2);
const r = JSON.parse(res);
const applied = Number(fin) - Number(base);
const inflight = applied - r.ok;
const errs = Object.values(r.errors).reduce((a, b) => a + b, 0);
const secs = Number(t1) - Number(t0);
const batchApplied = Number(afterBatch) - Number(fin);
console.log("");
console.log("== nginx host: deposits through the example site (wrk) vs tide batch (tide process) ==");
console.log("conditions: " + process.env.BENCH_COND + ";");
console.log(`  ${accounts} accounts opened first; each request/command deposits 1 into a random account;`);
console.log(`  wrk: ${threads} threads, ${conns} connections, ${warm} s warm-up then ${dur} s measured, keep-alive, 10 s timeout;`);
console.log(`  tide batch: the same number of commands, --concurrency ${conns}, one process, timed start to end.`);
console.log("nginx + wrk:  " + r.rps.toFixed(0) + " requests/s, latency p50 " + r.p50_ms.toFixed(1) + " ms, p99 " +
  r.p99_ms.toFixed(1) + " ms, max " + r.max_ms.toFixed(1) + " ms (" + r.requests + " requests in " + r.duration_s.toFixed(1) + " s)");
console.log("  responses: " + r.ok + " x 200, " + r.non_2xx + " other; socket errors: " + errs + " " + JSON.stringify(r.errors));
console.log("  balances read back through GET /aggregates: +" + applied + " = " + r.ok + " acknowledged" +
  (inflight ? " + " + inflight + " in flight when wrk closed its connections (completed by nginx, never read)" : ""));
const [w0, r0, f0] = ddb0.split(" ").map(Number), [w1, r1, f1] = ddb1.split(" ").map(Number);
const wpc = (w1 - w0) / Math.max(1, r.requests);
console.log("  DynamoDB requests per request: " + wpc.toFixed(3) + " writes (PutItem, TransactWriteItems), " +
  ((r1 - r0) / Math.max(1, r.requests)).toFixed(3) + " reads (Query, GetItem); commands forwarded to the worker " +
  "holding their stream's turn: " + (100 * (f1 - f0) / Math.max(1, r.requests)).toFixed(0) + "%");
const [n0, d0] = cpu0.split(" ").map(Number), [n1, d1] = cpu1.split(" ").map(Number);
const ngxCpu = 1e3 * (n1 - n0) / Math.max(1, r.requests), ddbCpu = 1e3 * (d1 - d0) / Math.max(1, r.requests);
console.log("  CPU per request (user + system, /proc): nginx (all workers) " + ngxCpu.toFixed(3) + " ms, DynamoDB Local " +
  ddbCpu.toFixed(3) + " ms; of the window's " + (Number(dur) * require("os").cpus().length).toFixed(0) + " CPU-seconds: nginx " +
  (n1 - n0).toFixed(1) + ", DynamoDB Local " + (d1 - d0).toFixed(1));
console.log("tide batch:   " + (Number(batchOk) / secs).toFixed(0) + " commands/s (" + batchOk + " of " + ok + " ok in " +
  secs.toFixed(2) + " s); balances +" + batchApplied);
const fail = [];
if (r.non_2xx || errs) fail.push("wrk saw errors");
if (inflight < 0) fail.push((-inflight) + " acknowledged deposits are missing from the balances");
if (inflight > Number(conns)) fail.push(inflight + " more deposits applied than acknowledged + in flight");
if (Number(batchRc) !== 0 || Number(batchOk) !== Number(ok)) fail.push("tide batch: " + (Number(ok) - Number(batchOk)) + " commands failed");
if (batchApplied !== Number(batchOk)) fail.push("tide batch: balances moved by " + batchApplied + ", not " + batchOk);
console.log(fail.length ? "RESULT: FAILED: " + fail.join("; ") : "RESULT: no errors, no lost deposits");
require("fs").appendFileSync(process.env.BENCH_RPS_FILE, `${process.env.BENCH_WORKERS} ${r.rps.toFixed(0)} ${r.p99_ms.toFixed(1)} ${wpc.toFixed(3)} ${ngxCpu.toFixed(3)} ${ddbCpu.toFixed(3)}\n`);
process.exit(fail.length ? 1 : 0);
JS
}

status=0
read -ra settings <<<"${BENCH_WRK_WORKERS:-1 auto}"
for ((turn = 1; turn <= TURNS; turn++)); do
  order=("${settings[@]}")
  if ((turn % 2 == 0)); then
    order=()
    for ((i = ${#settings[@]} - 1; i >= 0; i--)); do order+=("${settings[i]}"); done
  fi
  for w in "${order[@]}"; do
    [ "$TURNS" -gt 1 ] && note "turn $turn of $TURNS: workers=$w"
    run_one "$w" "$turn" || status=1
  done
done
if [ "${#settings[@]}" -gt 1 ] && [ -s "$tmp/rps" ]; then
  echo ""
  echo "workers, requests/s, p99 ms, DynamoDB writes/request, CPU ms/request of nginx and of DynamoDB Local (every run):"
  echo "  $(awk '{ printf "%s%s: %s/s p99 %s ms %s w/req, CPU nginx %s ms ddb %s ms", (NR > 1 ? "; " : ""), $1, $2, $3, $4, $5, $6 }' "$tmp/rps")"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  # each setting's median over its turns, in the order of BENCH_WRK_WORKERS
  awk -v settings="${settings[*]}" -v turns="$TURNS" '
    function median(list, a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { rps[$1] = rps[$1] " " $2; p99[$1] = p99[$1] " " $3; ddb[$1] = ddb[$1] " " $6 }
    END {
      n = split(settings, s, " ")
      if (turns > 1) printf "medians over %d turns:", turns
      for (i = 1; i <= n; i++) {
        m = median(rps[s[i]])
        if (turns > 1) printf "%s %s: %.0f/s p99 %.1f ms ddb %.3f ms", (i > 1 ? ";" : ""), s[i], m, median(p99[s[i]]), median(ddb[s[i]])
        if (i > 1 && m < prev) bad = 1
        prev = m
      }
      if (turns > 1) printf "\n"
      print "more workers never serve fewer requests/s" (turns > 1 ? " (medians)" : "") ": " (bad ? "NOT MET" : "met")
    }' "$tmp/rps"
fi
exit $status
