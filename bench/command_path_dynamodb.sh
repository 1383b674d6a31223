#!/bin/bash
# Whole commands on DynamoDB Local, client CPU: `tide batch` with
# single-event deposits against the AWS SDK v3 in Node doing the same
# commands (bench/command_path_sdk.js).
#
#   bench/command_path_dynamodb.sh      (from the project root; make bench runs it)
#   BENCH_DDB_CMD_SMALL=640             deposits of the small run
#   BENCH_DDB_CMD_LARGE=3200            deposits of the large run
#   BENCH_DDB_CMD_ACCOUNTS=64           accounts (one Open each, first; the deposits round-robin)
#   BENCH_DDB_CMD_TURNS=3               turns, medians reported
#   BENCH_DDB_CMD_QUERY=1               the SDK also Querying the stream every command: the
#                                       issue's anchor, which the target is judged on (0: skip it,
#                                       saves about two minutes; the target line then uses the
#                                       SDK sending tide's requests)
#
# Each turn starts a DynamoDB Local of its own (tools/servers.sh
# --dynamodb-only) and stops it at the end: DynamoDB Local slows down with
# every stream record it holds. Every run gets tables of its own (a new
# table prefix, made by `tide init` from a tide.yaml), so no run sees
# another's events. Client CPU = user + sys of the client process (GNU
# time), start-up included; the marginal CPU per command = (CPU of the
# large run - CPU of the small run) / (LARGE - SMALL), per turn, so
# start-up and the first load of each stream are not counted (V8's
# optimizing of the SDK's paths, which goes on for a few thousand requests,
# partly is: that is the whole-batch cost a user pays); the median over the turns is
# reported. In each turn the clients run one after the other (tide small,
# tide large, SDK small, SDK large; the next turn SDK first), so that a
# noisy minute of the shared machine lands on both. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMALL=${BENCH_DDB_CMD_SMALL:-640}
LARGE=${BENCH_DDB_CMD_LARGE:-3200}
ACCOUNTS=${BENCH_DDB_CMD_ACCOUNTS:-64}
TURNS=${BENCH_DDB_CMD_TURNS:-3}
QUERY=${BENCH_DDB_CMD_QUERY:-1}
TIDE=$ROOT/build/tide
export NODE_PATH="$ROOT/.deps/node_modules"
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
export AWS_ACCESS_KEY_ID=tidebench AWS_SECRET_ACCESS_KEY=tidebenchsecret
unset AWS_SESSION_TOKEN AWS_PROFILE
note() { echo "bench: $*" >&2; }

[ -x "$TIDE" ] || { note "build/tide is missing: run make"; exit 1; }
[ "$LARGE" -gt "$SMALL" ] || { note "BENCH_DDB_CMD_LARGE must be above BENCH_DDB_CMD_SMALL"; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-ddbcmd.XXXXXX")
cleanup() {
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

commands() { # deposits -> NDJSON on stdout (bench/command_path.sh's shape)
  awk -v n="$1" -v a="$ACCOUNTS" 'BEGIN {
    for (i = 1; i <= a; i++)
      printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}\n", i, i
    for (j = 1; j <= n; j++)
      printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}\n", j % a + 1, j
  }'
}
commands "$SMALL" >"$tmp/small.ndjson"
commands "$LARGE" >"$tmp/large.ndjson"

tables() { # prefix -> path of a tide.yaml whose tables exist and are empty
  local cfg="$tmp/$1.yaml"
  printf 'store: dynamodb\ndynamodb:\n  endpoint: %s\n  region: us-east-1\n  table_prefix: %s\naggregates: %s/aggregates\n' \
    "$E" "$1" "$ROOT" >"$cfg"
  "$TIDE" init --config "$cfg" >/dev/null || { note "tide init failed for prefix $1"; exit 1; }
  echo "$cfg"
}

# run CLIENT SIZE TURN: one measured process on fresh tables; appends
# "client size turn wall user sys" to $tmp/times.
run() {
  local client=$1 size=$2 turn=$3 prefix="t${3}_${1}_${2}_" cfg in out bad lines
  cfg=$(tables "$prefix")
  in="$tmp/$size.ndjson"
  out="$tmp/out.ndjson"
  case $client in
    tide) /usr/bin/time -f '%e %U %S' -o "$tmp/time" "$TIDE" batch --config "$cfg" <"$in" >"$out" ;;
    sdk) /usr/bin/time -f '%e %U %S' -o "$tmp/time" node bench/command_path_sdk.js "$E" "$prefix" cached <"$in" >"$out" 2>>"$tmp/sdk.log" ;;
    sdk-query) /usr/bin/time -f '%e %U %S' -o "$tmp/time" node bench/command_path_sdk.js "$E" "$prefix" query <"$in" >"$out" 2>>"$tmp/sdk.log" ;;
  esac || { note "$client ($size deposits) failed: $(grep -m1 '"ok":false' "$out" || tail -3 "$tmp/sdk.log")"; exit 1; }
  lines=$(wc -l <"$out")
  bad=$(grep -vc '^{"ok":true' "$out" || true)
  [ "$bad" = 0 ] && [ "$lines" = "$(wc -l <"$in")" ] \
    || { note "$client ($size deposits): $bad of $lines results not ok: $(grep -m1 -v '^{"ok":true' "$out")"; exit 1; }
  echo "$client $size $turn $(cat "$tmp/time")" >>"$tmp/times"
}

ddb_start() { # a fresh DynamoDB Local; sets E
  tools/servers.sh start "$tmp/servers" --dynamodb-only >&2 || { note "could not start DynamoDB Local"; exit 1; }
  # shellcheck disable=SC1091
  . "$tmp/servers/env"
  E=$TIDE_TEST_DYNAMODB_ENDPOINT
}

: >"$tmp/times"
for turn in $(seq 1 "$TURNS"); do
  # DynamoDB Local slows down with every stream record it holds (any table),
  # and the clients' CPU with it: a new one per turn, and the clients in
  # the opposite order every other turn (tide, SDK; SDK, tide; ...).
  ddb_start
  # Warm-up (not measured): DynamoDB Local's JIT compiles for its first
  # seconds and takes the cores from the clients. tide runs through
  # bench/batch_requests.lua here, which counts the requests it sends.
  note "DynamoDB commands, turn $turn of $TURNS: warm-up (not measured)"
  cfg=$(tables "t${turn}_warm_")
  "$TIDE" script bench/batch_requests.lua --config "$cfg" <"$tmp/small.ndjson" >"$tmp/warm.out" 2>>"$tmp/tide_requests.log" \
    || { note "warm-up tide batch failed: $(tail -3 "$tmp/tide_requests.log")"; exit 1; }
  order="tide sdk"
  [ $((turn % 2)) = 0 ] && order="sdk tide"
  [ "$QUERY" = 1 ] && order="$order sdk-query"
  note "DynamoDB commands, turn $turn of $TURNS: $order, $SMALL then $LARGE deposits each"
  for client in $order; do
    run "$client" small "$turn"
    run "$client" large "$turn"
  done
  tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1
done

cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
BENCH_COND="$(nproc) cores, ${cpu_model:-unknown CPU}; load average $(cut -d' ' -f1-3 /proc/loadavg); node $(node --version), @aws-sdk/client-dynamodb $(node -p 'require("@aws-sdk/client-dynamodb/package.json").version')" \
node - "$tmp/times" "$tmp/tide_requests.log" "$tmp/sdk.log" "$SMALL" "$LARGE" "$ACCOUNTS" "$TURNS" <<'JS'
const fs = require("fs");
const [timesFile, tideReqFile, sdkLogFile, small, large, accounts, turns] = process.argv.slice(2);
const S = Number(small), L = Number(large), A = Number(accounts);
const rows = fs.readFileSync(timesFile, "utf8").trim().split("\n").map((l) => {
  const [client, size, turn, wall, user, sys] = l.split(" ");
  return { client, size, turn: Number(turn), wall: Number(wall), cpu: Number(user) + Number(sys) };
});
const median = (a) => { const s = [...a].sort((x, y) => x - y); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const fig = {};
for (const client of [...new Set(rows.map((r) => r.client))]) {
  const marg = [], whole = [], rate = [];
  for (let t = 1; t <= Number(turns); t++) {
    const s = rows.find((r) => r.client === client && r.turn === t && r.size === "small");
    const l = rows.find((r) => r.client === client && r.turn === t && r.size === "large");
    if (!s || !l) continue;
    marg.push((l.cpu - s.cpu) * 1e6 / (L - S));
    whole.push(l.cpu * 1e6 / (L + A));
    rate.push((L + A) / l.wall);
  }
  fig[client] = { marg: median(marg), margs: marg, whole: median(whole), rate: median(rate) };
}
// Requests: tide's counted in each turn's warm-up run (small), the SDK's
// printed by each of its runs (small, large, in turn order).
const lines = (f) => fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)) : [];
const perCommand = (sm, lg) => {
  if (!sm) return "?";
  if (!lg) return Object.keys(sm.requests).sort().map((op) => `${op} ${sm.requests[op]}`).join(" + ") + ` for ${S + A} commands`;
  const ops = [...new Set([...Object.keys(sm.requests), ...Object.keys(lg.requests)])].sort();
  const total = (r) => ops.map((op) => `${op} ${r.requests[op] || 0}`).join(" + ");
  return `${total(sm)} at ${S} deposits, ${total(lg)} at ${L}; per extra command: ` +
    ops.map((op) => `${op} ${(((lg.requests[op] || 0) - (sm.requests[op] || 0)) / (L - S)).toFixed(2)}`).join(", ");
};
const tr = lines(tideReqFile).filter((r) => r.client === "tide");
const sr = lines(sdkLogFile);
const sdkc = sr.filter((r) => r.mode === "cached"), sdkq = sr.filter((r) => r.mode === "query");
const f1 = (v) => v.toFixed(1);
console.log(`conditions: ${process.env.BENCH_COND};`);
console.log(`  DynamoDB Local (in-memory) of its own on 127.0.0.1, same cores; ${A} Opens, then deposits round-robin over the ${A} accounts;`);
console.log(`  ${turns} turns, each on a new DynamoDB Local warmed by one unmeasured tide run: tide ${S}, tide ${L}, SDK ${S}, SDK ${L}` +
  ` (SDK first every other turn)${fig["sdk-query"] ? ", then SDK-Query " + S + ", " + L : ""}; every run on new tables;`);
console.log(`  CPU = user+sys of the whole client process (GNU time); marginal = (CPU at ${L} - CPU at ${S}) / ${L - S}, median over the turns`);
console.log(`requests, tide:      ${perCommand(tr[0])}`);
console.log(`requests, SDK:       ${perCommand(sdkc[0], sdkc[1])}`);
if (sdkq.length) console.log(`requests, SDK-Query: ${perCommand(sdkq[0], sdkq[1])}`);
const pad = (s, n) => String(s).padStart(n);
console.log(`${"".padEnd(46)} ${pad("marginal us CPU/cmd", 20)} ${pad("whole-run us/cmd", 17)} ${pad("cmd/s", 7)}  turns (marginal)`);
const label = { tide: "tide batch", sdk: "SDK v3, same requests as tide", "sdk-query": "SDK v3, Query + fold + PutItem every command" };
for (const c of ["tide", "sdk", "sdk-query"]) {
  const x = fig[c];
  if (!x) continue;
  console.log(`${label[c].padEnd(46)} ${pad(f1(x.marg), 20)} ${pad(f1(x.whole), 17)} ${pad(x.rate.toFixed(0), 7)}  ${x.margs.map(f1).join(" ")}`);
}
const t = fig.tide, s = fig.sdk, q = fig["sdk-query"];
const perTurn = (x) => x.margs.map((v, i) => (v / t.margs[i]).toFixed(1)).join(" ");
// The target (issue 13) is judged against the SDK doing Query + fold +
// PutItem every command; the SDK sending tide's own requests (a cache the
// SDK does not have) is the stricter comparison, printed next to it.
console.log(`SDK with tide's requests / tide: 1/${(s.marg / t.marg).toFixed(1)} (per turn ${perTurn(s)})`);
const a = q || s;
if (q) console.log(`SDK Query-every-command / tide: 1/${(q.marg / t.marg).toFixed(1)} (per turn ${perTurn(q)})`);
console.log(`target: tide <= 1/10 of the SDK ${q ? "doing Query + fold + PutItem every command" : "sending tide's requests (BENCH_DDB_CMD_QUERY=0)"}: ` +
  `tide ${f1(t.marg)} us vs SDK ${f1(a.marg)} us per command = 1/${(a.marg / t.marg).toFixed(1)} (${t.marg * 10 <= a.marg ? "met" : "NOT MET"})`);
JS
