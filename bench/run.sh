#!/bin/bash
# tide benchmarks (make bench). Prints figures with their units and
# conditions; a figure that misses its target is reported, not failed:
# these are measurements, not tests. See bench/README.md.
#
#   bench/run.sh
#
# Environment (all optional):
#   BENCH_N=2000            measured requests per window (per client and cell)
#   BENCH_ROUNDS=6          measured windows per cell and client; the median is reported
#   BENCH_TURNS=3           processes per cell and client, taken in turn (tide,
#                           SDK, tide, ...), each measuring BENCH_ROUNDS/BENCH_TURNS windows
#   BENCH_WARMUP=3000       warm-up requests per cell, not counted
#   BENCH_CONCURRENCY="1 64"
#   BENCH_OPS="PutItem GetItem"
#   BENCH_SIGN_OPS=200000   iterations of each signing figure
#   (the whole-command sections read their own BENCH_CMD_*, BENCH_DDB_CMD_*,
#   BENCH_NGINX_CMD_* and BENCH_PROF_* knobs: see their scripts)
#
# Exit status: 0 when every figure was measured, 1 when something could not
# run (build, servers, a client erroring); a target not met is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

N=${BENCH_N:-2000}
ROUNDS=${BENCH_ROUNDS:-6}
TURNS=${BENCH_TURNS:-3}
[ "$TURNS" -ge 1 ] || TURNS=1
PER_TURN=$(( (ROUNDS + TURNS - 1) / TURNS ))
WARM=${BENCH_WARMUP:-3000}
CONCS=${BENCH_CONCURRENCY:-"1 64"}
OPS=${BENCH_OPS:-"PutItem GetItem"}
SIGN_OPS=${BENCH_SIGN_OPS:-200000}
export NODE_PATH="$ROOT/.deps/node_modules"
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true

status=0
note() { echo "bench: $*" >&2; }

if ! make >&2; then
  note "make failed: tide's figures cannot be measured"
  status=1
fi
have_tide=0
[ -x build/tide ] && have_tide=1
[ $have_tide = 1 ] || { note "build/tide is missing: tide's client-CPU figures are skipped"; status=1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench.XXXXXX")
cleanup() {
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results="$tmp/results.jsonl"
: >"$results"

# ---- client CPU per request ------------------------------------------------

if ! tools/servers.sh start "$tmp/servers" >&2; then
  note "could not start DynamoDB Local: client-CPU figures skipped"
  status=1
else
  # shellcheck disable=SC1091
  . "$tmp/servers/env"
  E=$TIDE_TEST_DYNAMODB_ENDPOINT
  TABLE="tide_bench_$$"

  tide_run() { build/tide script bench/client_cpu.lua "$@"; }
  sdk_run() { node bench/client_cpu_sdk.js "$@"; }

  # The table and the items GetItem reads; tide creates them when it can.
  if [ $have_tide = 1 ]; then
    tide_run "$E" "$TABLE" setup >>"$results" || { note "tide setup failed; trying the SDK"; sdk_run "$E" "$TABLE" setup >/dev/null || status=1; }
  else
    sdk_run "$E" "$TABLE" setup >/dev/null || status=1
  fi

  # Warm DynamoDB Local itself (its JIT compiles for the first few seconds,
  # and on a small machine that steals the client's cores): unmeasured.
  note "warming DynamoDB Local up"
  for op in $OPS; do
    if [ $have_tide = 1 ]; then
      tide_run "$E" "$TABLE" "$op" 64 100 8000 1 >/dev/null 2>&1 || true
    else
      sdk_run "$E" "$TABLE" "$op" 64 100 4000 1 >/dev/null 2>&1 || true
    fi
  done

  for op in $OPS; do
    for c in $CONCS; do
      note "$op, concurrency $c: $TURNS turns per client, each $WARM warm-up + $PER_TURN x $N measured requests"
      # The clients take turns, so that a noisy minute of the shared
      # machine lands on both rather than on one of them.
      for turn in $(seq 1 "$TURNS"); do
        if [ $have_tide = 1 ]; then
          tide_run "$E" "$TABLE" "$op" "$c" "$N" "$WARM" "$PER_TURN" >>"$results" || { note "tide $op c=$c failed"; status=1; }
          # The engine lets responses gather (gather_us, default 1 ms) only
          # with 16 or more requests in flight: the same cell without it.
          if [ "$c" -ge 16 ]; then
            BENCH_GATHER_US=0 tide_run "$E" "$TABLE" "$op" "$c" "$N" "$WARM" "$PER_TURN" >>"$results" \
              || { note "tide (gather_us=0) $op c=$c failed"; status=1; }
          fi
        fi
        sdk_run "$E" "$TABLE" "$op" "$c" "$N" "$WARM" "$PER_TURN" >>"$results" || { note "SDK $op c=$c failed"; status=1; }
      done
    done
  done
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true
fi

# ---- SigV4 signing -----------------------------------------------------------

sign_lua="$tmp/sign_lua.txt"
sign_js="$tmp/sign_js.txt"
: >"$sign_lua"
: >"$sign_js"
if [ -f bench/sigv4.lua ] && [ -f build/lua/tide/core.so ]; then
  note "signing: bench/sigv4.lua ($SIGN_OPS ops per figure)"
  LUA_PATH="$ROOT/lua/?.lua;;" LUA_CPATH="$ROOT/build/lua/?.so;;" luajit bench/sigv4.lua "$SIGN_OPS" >"$sign_lua" \
    || { note "bench/sigv4.lua failed"; status=1; }
else
  echo "(bench/sigv4.lua or build/lua/tide/core.so absent: skipped)" >"$sign_lua"
fi
if [ -f bench/sigv4_smithy.js ]; then
  note "signing: bench/sigv4_smithy.js"
  node bench/sigv4_smithy.js >"$sign_js" || { note "bench/sigv4_smithy.js failed"; status=1; }
else
  echo "(bench/sigv4_smithy.js absent: skipped)" >"$sign_js"
fi

# ---- report -----------------------------------------------------------------

cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
export BENCH_COND_CPU="$(nproc) cores, ${cpu_model:-unknown CPU}, $(uname -sr)"
export BENCH_COND_NODE="$(node --version)"
export BENCH_COND_LUAJIT="$(luajit -v 2>/dev/null | awk '{print $1, $2}')"
export N WARM ROUNDS TURNS PER_TURN

node - "$results" "$sign_lua" "$sign_js" <<'JS'
const fs = require("fs");
const [resultsFile, signLuaFile, signJsFile] = process.argv.slice(2);
const raw = fs.readFileSync(resultsFile, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
// One row per client and cell: the windows of all its turns, their median.
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN; };
const rows = [];
for (const r of raw) {
  const same = rows.find((x) => x.client === r.client && x.op === r.op && x.concurrency === r.concurrency);
  if (!same || r.op === "setup") { rows.push({ ...r, turns: [r] }); continue; }
  same.turns.push(r);
}
for (const r of rows) {
  if (r.op === "setup" || r.turns.length < 2) continue;
  r.cpu_us_per_req_rounds = r.turns.flatMap((t) => t.cpu_us_per_req_rounds || [t.cpu_us_per_req]);
  r.cpu_us_per_req = median(r.cpu_us_per_req_rounds);
  r.req_per_s = median(r.turns.map((t) => t.req_per_s));
  r.requests = r.turns[0].requests;
  r.errors = r.turns.reduce((n, t) => n + (t.errors || 0), 0);
}
const env = process.env;
const pad = (s, n) => String(s).padStart(n);
const fmt = (v, d = 1) => (v === undefined || v === null || Number.isNaN(v)) ? "-" : Number(v).toFixed(d);

const setup = rows.find((r) => r.op === "setup" && r.client === "tide");
const sdkAny = rows.find((r) => r.client === "aws-sdk-js-v3" && r.op === "PutItem");
console.log("");
console.log("== Client CPU per request: tide vs @aws-sdk/client-dynamodb v3 ==");
console.log("conditions: " + env.BENCH_COND_CPU + "; DynamoDB Local (in-memory, -sharedDb) on 127.0.0.1, same machine;");
console.log("  item: pk + 5 attributes incl. a 900-byte string" +
  (setup && setup.item_bytes ? ", " + setup.item_bytes + " bytes by DynamoDB's size rules" : ", ~1 KB") +
  (sdkAny ? "; PutItem body " + sdkAny.request_body_bytes + " bytes" : "") + ";");
console.log("  per cell and client: " + env.TURNS + " processes taken in turn with the other client's (tide, SDK, tide, ...), each " +
  env.WARM + " warm-up requests, then " + env.PER_TURN + " windows of " + env.N + " requests;");
console.log("  the median of all the windows is shown (every window below, in the order measured); keys cycle over 1000 items;");
console.log("  CPU = user+sys of the client process (getrusage / process.cpuUsage) over the measured requests only;");
console.log("  tide: build/tide script, " + env.BENCH_COND_LUAJIT + "; SDK " + (sdkAny ? sdkAny.sdk_version : "?") +
  " on Node " + env.BENCH_COND_NODE + ", DynamoDBClient, keep-alive http.Agent(maxSockets = concurrency).");
console.log("");
const hdr = ["op", "conc", "req/window", "tide us CPU/req", "SDK us CPU/req", "SDK/tide", "tide req/s", "SDK req/s",
             "tide gather_us=0: us CPU/req", "SDK/it", "req/s"];
const w = [8, 5, 11, 16, 15, 9, 11, 10, 29, 7, 7];
console.log(hdr.map((h, i) => i === 0 ? h.padEnd(w[i]) : pad(h, w[i])).join(" "));
const cells = [];
const ops = [...new Set(rows.filter((r) => r.op !== "setup").map((r) => r.op))];
for (const op of ops) {
  const concs = [...new Set(rows.filter((r) => r.op === op).map((r) => r.concurrency))].sort((a, b) => a - b);
  for (const c of concs) {
    const t = rows.find((r) => r.client === "tide" && r.op === op && r.concurrency === c);
    const s = rows.find((r) => r.client === "aws-sdk-js-v3" && r.op === op && r.concurrency === c);
    const g = rows.find((r) => r.client === "tide-nogather" && r.op === op && r.concurrency === c);
    const ratio = t && s ? s.cpu_us_per_req / t.cpu_us_per_req : undefined;
    const gratio = g && s ? s.cpu_us_per_req / g.cpu_us_per_req : undefined;
    cells.push({ op, c, t, s, ratio, g, gratio });
    const errs = [t && t.errors ? "tide errors: " + t.errors : "", s && s.errors ? "SDK errors: " + s.errors : ""].filter(Boolean).join(", ");
    console.log([op.padEnd(w[0]), pad(c, w[1]), pad((t || s).requests, w[2]),
      pad(fmt(t && t.cpu_us_per_req), w[3]), pad(fmt(s && s.cpu_us_per_req), w[4]),
      pad(ratio ? fmt(ratio, 1) + "x" : "-", w[5]),
      pad(fmt(t && t.req_per_s, 0), w[6]), pad(fmt(s && s.req_per_s, 0), w[7]),
      pad(g ? fmt(g.cpu_us_per_req) : "-", w[8]), pad(gratio ? fmt(gratio, 1) + "x" : "-", w[9]),
      pad(g ? fmt(g.req_per_s, 0) : "-", w[10])].join(" ") + (errs ? "  (" + errs + ")" : ""));
  }
}
if (!rows.some((r) => r.client === "tide" && r.op !== "setup")) console.log("(tide: not measured)");
console.log("  us CPU/req of every window, turns in order (tide | SDK):");
for (const x of cells) {
  const f = (r) => r && r.cpu_us_per_req_rounds ? r.cpu_us_per_req_rounds.join(" ") : "-";
  console.log("    " + (x.op + " c=" + x.c).padEnd(14) + f(x.t) + " | " + f(x.s) + (x.g ? " | gather_us=0: " + f(x.g) : ""));
}
console.log("  tide's engine lets responses gather for up to gather_us (default 1000 us) when 16 or more requests are");
console.log("  in flight and none is ready (fewer wake-ups, up to 1 ms more latency); gather_us=0 turns that off.");
console.log("  req/s is bounded by DynamoDB Local sharing the same cores; the CPU columns are the client's own.");

// Signing: lines "<name>: <us> us/op (...)".
const parse = (file) => {
  const text = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  const figs = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^(.*?):\s*([0-9.]+)\s*(us|µs)\/op/);
    if (m) figs.push({ name: m[1].trim(), us: Number(m[2]) });
  }
  return { text, figs };
};
const sl = parse(signLuaFile), sj = parse(signJsFile);
console.log("");
console.log("== SigV4 signing of a 1 KB DynamoDB request (CPU time per signature) ==");
for (const l of sl.text.trim().split("\n")) console.log("  " + l);
for (const l of sj.text.trim().split("\n")) console.log("  " + l);
const sign = sl.figs.find((f) => /sign/i.test(f.name) && !/sha/i.test(f.name));
const floor = sl.figs.find((f) => /sha256/i.test(f.name));
const smithy = sj.figs.find((f) => /smithy|sign/i.test(f.name)) || sj.figs[0];

console.log("");
console.log("== Targets ==");
const measured = cells.filter((x) => x.ratio);
if (measured.length === 0) {
  console.log("client CPU <= 1/10 of the AWS SDK's: NOT MEASURED (no tide figures)");
} else {
  for (const x of measured) {
    const ok = x.t.cpu_us_per_req * 10 <= x.s.cpu_us_per_req;
    console.log(`client CPU ${x.op} c=${x.c}: tide ${fmt(x.t.cpu_us_per_req)} us vs SDK ${fmt(x.s.cpu_us_per_req)} us = 1/${fmt(x.ratio)} of the SDK's (target <= 1/10): ${ok ? "met" : "NOT MET"}`);
    if (x.gratio) {
      const gok = x.g.cpu_us_per_req * 10 <= x.s.cpu_us_per_req;
      console.log(`  same cell with gather_us=0: tide ${fmt(x.g.cpu_us_per_req)} us = 1/${fmt(x.gratio)} of the SDK's: ${gok ? "met" : "NOT MET"}`);
    }
  }
  const missing = cells.length - measured.length;
  if (missing) console.log(`client CPU: ${missing} cell(s) not measured`);
}
if (sign && floor) {
  const r = sign.us / floor.us;
  console.log(`signing vs SHA-256 floor: ${fmt(sign.us, 3)} us vs ${fmt(floor.us, 3)} us = ${fmt(r, 2)}x (target <= 2x): ${r <= 2 ? "met" : "NOT MET"}`);
} else {
  console.log("signing vs SHA-256 floor: NOT MEASURED");
}
if (sign && smithy) {
  const r = smithy.us / sign.us;
  console.log(`signing vs @smithy/signature-v4: ${fmt(sign.us, 3)} us vs ${fmt(smithy.us, 3)} us = ${fmt(r, 2)}x faster (target >= 10x): ${r >= 10 ? "met" : "NOT MET"}`);
} else {
  console.log("signing vs @smithy/signature-v4: NOT MEASURED");
}
JS

# ---- embedded store ---------------------------------------------------------
echo ""
echo "== Embedded store (SQLite): appends per second, one event per append =="
echo "conditions: bench/sqlite_append.lua, database in ${TMPDIR:-/tmp}, WAL; 1 coroutine vs 256 (group commit)"
if ! build/tide script bench/sqlite_append.lua "${BENCH_SQLITE_N:-20000}" 1 256; then
  note "bench/sqlite_append.lua failed"
  status=1
fi

# One section: a title, then a script whose failure is noted, not fatal.
section() { # title, script
  echo ""
  echo "== $1 =="
  "$2" || { note "$2 failed"; status=1; }
}
section "Whole commands on the embedded store: tide batch vs raw SQLite" bench/command_path.sh
section "Whole commands on DynamoDB Local, client CPU: tide batch vs @aws-sdk/client-dynamodb" bench/command_path_dynamodb.sh
section "Whole commands in the nginx host (embedded store): worker CPU per POST vs tide batch" bench/command_path_nginx.sh
section "Where a command's CPU goes: tide batch on the embedded store, profiled" bench/command_profile.sh
section "Hot streams: one account batched vs one at a time; 4 writer processes vs 1" bench/hot_streams.sh
section "User code: the budget's cost per command (lua.handler_budget_ms on vs off), tide batch's huge lines" bench/user_code.sh
section "The cost of metrics per command: tide batch with metrics off and on (scraped)" bench/metrics_cost.sh
section "Kafka sinks: events published per second and CPU per event, tide project vs kcat -P (the librdkafka floor)" bench/kafka_sink.sh

echo ""
echo "== Projections from the embedded feed: events per second =="
build/tide script bench/projection_sqlite.lua "${BENCH_PROJ_EVENTS:-20000}" 500 500 || { note "bench/projection_sqlite.lua failed"; status=1; }

# ---- projections from DynamoDB Streams: tide vs a Node SDK consumer -----------
echo ""
echo "== Projection balances from DynamoDB Streams: tide vs @aws-sdk/client-dynamodb-streams =="
echo "conditions: a fresh DynamoDB Local of its own on 127.0.0.1; ${BENCH_STREAM_EVENTS:-20000} events over 500 accounts;"
echo "  both consumers read the same stream from TRIM_HORIZON (GetRecords Limit 1000), read items with"
echo "  BatchGetItem and write them with BatchWriteItem; client CPU = user+sys of the consumer process / records;"
echo "  the Node consumer runs twice: 'checkpointed' does tide's writes too (positions per stream, then the"
echo "  shard's checkpoint, each batch; meta decoded), 'minimal' keeps only the items (no checkpoint at all)"
sdir=$(mktemp -d)
STREAM_EVENTS=${BENCH_STREAM_EVENTS:-20000}
STREAM_PASSES=${BENCH_STREAM_PASSES:-3}
if tools/servers.sh start "$sdir" --dynamodb-only >/dev/null; then
  . "$sdir/env"
  E=$TIDE_TEST_DYNAMODB_ENDPOINT
  json_field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"; }
  if write_line=$(build/tide script bench/projection_streams.lua write "$E" "$STREAM_EVENTS" 500 | grep '^{'); then
    prefix=$(printf '%s' "$write_line" | json_field prefix)
    events_table=$(printf '%s' "$write_line" | json_field events_table)
    written=$(printf '%s' "$write_line" | json_field events)
    echo "  events written: $written in $(printf '%s' "$write_line" | json_field seconds) s; then $STREAM_PASSES passes of each"
    echo "  consumer over the whole stream, taken in turn (tide, Node checkpointed, tide, ...), medians compared"
    tide_lines="" sdk_lines=""
    for pass in $(seq 1 "$STREAM_PASSES"); do
      out=$(build/tide script bench/projection_streams.lua consume "$E" "$prefix" "$written" 1000) \
        || { note "bench/projection_streams.lua consume failed"; status=1; }
      printf '%s\n' "$out" | grep -v '^{' | sed "s/^/  pass $pass: /"
      tide_lines="$tide_lines$(printf '%s\n' "$out" | grep '^{')"$'\n'
      line=$(NODE_NO_WARNINGS=1 node bench/projection_streams_sdk.js "$E" "$events_table" "bench_sdk_c$pass" "$written" checkpointed) \
        || { note "bench/projection_streams_sdk.js (checkpointed) failed"; status=1; }
      echo "  pass $pass: $line"
      sdk_lines="$sdk_lines$line"$'\n'
    done
    sdk_min_line=$(NODE_NO_WARNINGS=1 node bench/projection_streams_sdk.js "$E" "$events_table" bench_sdk_minimal "$written" minimal) \
      || { note "bench/projection_streams_sdk.js (minimal) failed"; status=1; }
    echo "  once: $sdk_min_line"
    node -e '
      const rows = (s) => s.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
      const med = (a) => { const s = [...a].sort((x, y) => x - y); return s.length ? s[(s.length - 1) >> 1] : NaN; };
      const t = rows(process.argv[1]), s = rows(process.argv[2]), m = rows(process.argv[3])[0];
      const tc = med(t.map((r) => r.client_cpu_us_per_record)), sc = med(s.map((r) => r.cpu_us_per_record));
      const trps = med(t.map((r) => r.records_per_s)), srps = med(s.map((r) => r.records_per_s));
      console.log(`tide: ${trps.toFixed(0)} records/s, ${tc.toFixed(1)} us CPU/record (passes: ` +
        t.map((r) => r.client_cpu_us_per_record.toFixed(1)).join(" ") + `); SDK checkpointed: ${srps.toFixed(0)} records/s, ` +
        `${sc.toFixed(1)} us CPU/record (passes: ` + s.map((r) => r.cpu_us_per_record.toFixed(1)).join(" ") + `)` +
        (m ? `; SDK minimal: ${m.records_per_s.toFixed(0)} records/s, ${m.cpu_us_per_record.toFixed(1)} us CPU/record` : ""));
      console.log(`tide uses 1/${(sc / tc).toFixed(1)} of the CPU per record of the SDK consumer doing the same writes ` +
        `(target <= 1/10): ${tc * 10 <= sc ? "met" : "NOT MET"}` +
        (m ? `; 1/${(m.cpu_us_per_record / tc).toFixed(1)} of the minimal one` : ""));
    ' "$tide_lines" "$sdk_lines" "$sdk_min_line" || true
  else
    note "bench/projection_streams.lua write failed"; status=1
  fi
  tools/servers.sh stop "$sdir"
else
  note "could not start DynamoDB Local for the Streams bench"; status=1
fi
rm -rf "$sdir"

section "DynamoDB Streams at scale: tide run workers on 64 virtual shards (the Streams stand-in)" bench/streams_fleet.sh
bench/nginx_wrk.sh || { note "bench/nginx_wrk.sh failed"; status=1; }
hot_nginx() { BENCH_WRK_ACCOUNTS=4 BENCH_WRK_WORKERS="1 2 4" BENCH_WRK_TURNS=${BENCH_WRK_TURNS:-3} bench/nginx_wrk.sh; }
section "nginx with 1, 2 and 4 workers on 4 hot accounts (wrk, DynamoDB Local)" hot_nginx
echo ""; echo "== Hot reload: file write -> first command served by the new version =="; build/tide script bench/reload_latency.lua "${BENCH_RELOADS:-50}" || { note "bench/reload_latency.lua failed"; status=1; }
exit $status
