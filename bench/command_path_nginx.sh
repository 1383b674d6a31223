#!/bin/bash
# Whole commands in the nginx host on the embedded store: CPU of the nginx
# worker per `POST /aggregates/account/{id}`, next to `tide batch` running
# the same number of deposits over the same accounts.
#
#   bench/command_path_nginx.sh          (from the project root; make bench runs it)
#   BENCH_NGINX_CMD_ACCOUNTS=100         accounts, opened first
#   BENCH_NGINX_CMD_DURATION=10          seconds of wrk load measured
#   BENCH_NGINX_CMD_CONNECTIONS=16       wrk connections (one wrk thread)
#   BENCH_NGINX_CMD_SYNC=normal          sqlite.synchronous for both hosts
#   BENCH_NGINX_CMD_PERF=1               0: no perf profile of the worker
#   BENCH_NGINX_CMD_TOP=10               shared objects printed from the profiles
#
# nginx: the example site (tools/nginx.sh, worker_processes 1) on a tide.yaml
# of the embedded store; the accounts are opened through the site, then 2 s
# of wrk deposits warm the worker (JIT, the repository's cache); then the
# worker's utime + stime (/proc/PID/stat) are read before and after
# BENCH_NGINX_CMD_DURATION s of wrk (bench/wrk_deposit.lua: deposits of 1 to
# random accounts). Commands = events the store gained in that window
# (counted in SQLite, so the requests in flight when wrk stops count too).
# tide batch: the same number of deposits to random accounts of the same
# set, on copies of the store nginx left (the same accounts, opened), its
# whole-process CPU (GNU time); and a run of a fifth of them, for the
# marginal CPU per command without start-up and the first load of each
# stream (the worker's figure has neither: it was warm). Then, with perf
# installed, 4 s of `perf record -p WORKER` under the same load after the
# measured window, and a third tide batch run of the same commands under
# perf record: both by shared object, in us per command, side by side
# (where the difference goes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ACCOUNTS=${BENCH_NGINX_CMD_ACCOUNTS:-100}
DUR=${BENCH_NGINX_CMD_DURATION:-10}
CONNS=${BENCH_NGINX_CMD_CONNECTIONS:-16}
SYNC=${BENCH_NGINX_CMD_SYNC:-normal}
PERF=${BENCH_NGINX_CMD_PERF:-1}
TOP=${BENCH_NGINX_CMD_TOP:-10}
TIDE=$ROOT/build/tide
unset LD_PRELOAD
note() { echo "bench: $*" >&2; }

command -v wrk >/dev/null || { note "wrk is not installed (Debian package wrk): skipped"; exit 1; }
command -v nginx >/dev/null || { note "nginx is not installed (nginx-light, libnginx-mod-http-lua): skipped"; exit 1; }
[ -x "$TIDE" ] || { note "build/tide is missing: run make"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-ngxcmd.XXXXXX")
cleanup() {
  tools/nginx.sh stop "$tmp/site" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

store_yaml() { # folder -> tide.yaml of the embedded store in that folder
  mkdir -p "$1"
  printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\n  synchronous: %s\naggregates: %s/aggregates\n' \
    "$1" "$SYNC" "$ROOT" >"$1/tide.yaml"
  echo "$1/tide.yaml"
}
events() { sqlite3 "$1" 'SELECT count(*) FROM events'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime of a process, in clock ticks

cfg=$(store_yaml "$tmp/nginx")
url=$(TIDE_NGINX_WORKERS=1 tools/nginx.sh start "$tmp/site" "$cfg") || { note "the nginx site did not start"; exit 1; }
worker=$(curl -sS "$url/health" | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).worker')
[ -r "/proc/$worker/stat" ] || { note "cannot read the nginx worker's /proc/$worker/stat"; exit 1; }

open_args=()
for ((i = 1; i <= ACCOUNTS; i++)); do
  [ "$i" = 1 ] || open_args+=(--next)
  open_args+=(-sS -w '\n' -H 'Content-Type: application/json' -d "{\"type\":\"Open\",\"owner\":\"o$i\"}" "$url/aggregates/account/acc-$i")
done
curl "${open_args[@]}" >"$tmp/open.out"
opened=$(grep -c '"ok":true' "$tmp/open.out" || true)
[ "$opened" = "$ACCOUNTS" ] || { note "opened $opened of $ACCOUNTS accounts: $(grep -m1 -v '"ok":true' "$tmp/open.out")"; exit 1; }

run_wrk() { # seconds
  wrk -t1 -c"$CONNS" -d"${1}s" --timeout 10s -s bench/wrk_deposit.lua "$url" -- "$ACCOUNTS" 1 acc- 2>"$tmp/wrk.err"
}
note "nginx commands: 2 s warm-up, then ${DUR} s of wrk -c$CONNS on POST /aggregates/account/{id} (worker $worker)"
run_wrk 2 >/dev/null
sleep 0.5
e0=$(events "$tmp/nginx/tide.db")
c0=$(ticks "$worker")
res=$(run_wrk "$DUR" | sed -n 's/^WRK_RESULT //p')
sleep 0.5 # requests in flight when wrk closed its connections finish in the worker
c1=$(ticks "$worker")
e1=$(events "$tmp/nginx/tide.db")
[ -n "$res" ] || { note "wrk printed no result: $(cat "$tmp/wrk.err")"; exit 1; }
# Where the worker's CPU goes: perf on the worker under the same load.
perf_dso() { # perf.data -> "share dso" lines
  perf report -i "$1" --sort dso --stdio 2>/dev/null | awk '/^ *[0-9.]+%/ { sub("%", "", $1); print $1, $2 }'
}
have_perf=0
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
  run_wrk 5 >/dev/null &
  wrk_pid=$!
  sleep 0.5
  if perf record -q -F 2000 -p "$worker" -o "$tmp/ngx.perf" -- sleep 4 2>"$tmp/perf.err"; then
    perf_dso "$tmp/ngx.perf" >"$tmp/ngx.dso"
    have_perf=1
  else
    note "perf record failed: $(tail -1 "$tmp/perf.err")"
  fi
  wait "$wrk_pid" || true
fi
tools/nginx.sh stop "$tmp/site" >/dev/null
n=$((e1 - e0))
non2xx=$(node -pe 'JSON.parse(process.argv[1]).non_2xx' "$res")
rps=$(node -pe 'JSON.parse(process.argv[1]).rps.toFixed(0)' "$res")
[ "$non2xx" = 0 ] || { note "wrk saw $non2xx non-2xx responses: $(cat "$tmp/wrk.err")"; exit 1; }

deposits() { # count -> NDJSON
  awk -v n="$1" -v a="$ACCOUNTS" 'BEGIN { srand(7); for (i = 1; i <= n; i++)
    printf "{\"aggregate\":\"account\",\"id\":\"acc-%d\",\"command\":{\"type\":\"Deposit\",\"amount\":1}}\n", 1 + int(rand() * a) }'
}
run_tide() { # count, folder [, perf.data] -> "wall user sys"
  local c
  c=$(store_yaml "$2")
  sqlite3 "$tmp/nginx/tide.db" ".backup '$2/tide.db'"
  deposits "$1" >"$2/commands.ndjson"
  ${3:+perf record -q -F 2000 -o "$3" --} /usr/bin/time -f '%e %U %S' -o "$2/time" \
    "$TIDE" batch --config "$c" <"$2/commands.ndjson" >"$2/results.ndjson"
  local bad
  bad=$(grep -vc '^{"ok":true' "$2/results.ndjson" || true)
  [ "$bad" = 0 ] || { note "tide batch: $bad commands failed in $2"; exit 1; }
  cat "$2/time"
}
fifth=$((n / 5))
note "nginx commands: tide batch, $n and $fifth deposits on copies of the same store"
read -r t_wall t_user t_sys < <(run_tide "$n" "$tmp/tide-full")
read -r s_wall s_user s_sys < <(run_tide "$fifth" "$tmp/tide-fifth")
if [ $have_perf = 1 ]; then
  read -r p_wall p_user p_sys < <(run_tide "$n" "$tmp/tide-perf" "$tmp/tide.perf")
  perf_dso "$tmp/tide.perf" >"$tmp/tide.dso"
fi

hz=$(getconf CLK_TCK)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
awk -v n="$n" -v fifth="$fifth" -v dt="$((c1 - c0))" -v hz="$hz" -v rps="$rps" -v dur="$DUR" -v conns="$CONNS" \
    -v tw="$t_wall" -v tu="$t_user" -v ts="$t_sys" -v su="$s_user" -v ss="$s_sys" -v sync="$SYNC" -v accounts="$ACCOUNTS" \
    -v cond="$(nproc) cores, ${cpu_model:-unknown CPU}; load average $(cut -d' ' -f1-3 /proc/loadavg); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')" 'BEGIN {
  ngx = dt / hz * 1e6 / n
  whole = (tu + ts) * 1e6 / n
  marg = ((tu + ts) - (su + ss)) * 1e6 / (n - fifth)
  printf "conditions: %s;\n", cond
  printf "  embedded store, synchronous=%s, WAL; %d accounts opened first; deposits of 1 to random accounts;\n", sync, accounts
  printf "  nginx: worker_processes 1, wrk -t1 -c%d for %d s after a 2 s warm-up, %d commands (events the store gained);\n", conns, dur, n
  printf "  worker CPU = utime+stime from /proc/PID/stat (%d ticks/s); tide batch: the same count, GNU time\n", hz
  printf "%-48s %12s %12s\n", "", "us CPU/cmd", "commands/s"
  printf "%-48s %12.1f %12.0f\n", "nginx worker, POST /aggregates/account/{id}", ngx, rps
  printf "%-48s %12.1f %12.0f\n", "tide batch, whole process", whole, n / tw
  printf "%-48s %12.1f %12s\n", "tide batch, marginal (" n " vs " fifth " commands)", marg, "-"
  printf "nginx worker - tide batch (marginal): %+.1f us per command (%.2fx)\n", ngx - marg, ngx / marg
}'
if [ $have_perf = 1 ]; then
  # Each side's perf shares times its own CPU per command (the worker's
  # measured figure; tide batch's whole-process one, as perf saw the whole run).
  node - "$tmp/ngx.dso" "$tmp/tide.dso" "$c0" "$c1" "$hz" "$n" "$t_user" "$t_sys" "$TOP" <<'JS'
const fs = require("fs");
const [ngxFile, tideFile, c0, c1, hz, n, tu, ts, top] = process.argv.slice(2);
const ngxUs = (Number(c1) - Number(c0)) / Number(hz) * 1e6 / Number(n), tideUs = (Number(tu) + Number(ts)) * 1e6 / Number(n);
const name = (d) => d.startsWith("[JIT]") ? "[JIT] (LuaJIT's traces)" : d;
const read = (f, us) => {
  const m = new Map();
  for (const l of fs.readFileSync(f, "utf8").trim().split("\n").filter(Boolean)) {
    const [share, dso] = l.split(" ");
    m.set(name(dso), (m.get(name(dso)) || 0) + Number(share) / 100 * us);
  }
  return m;
};
const a = read(ngxFile, ngxUs), b = read(tideFile, tideUs);
const rows = [...new Set([...a.keys(), ...b.keys()])].map((d) => [d, a.get(d) || 0, b.get(d) || 0])
  .sort((x, y) => Math.max(y[1], y[2]) - Math.max(x[1], x[2]));
console.log("where the difference goes: perf by shared object, in us per command (share x that side's CPU per command;");
console.log("  the worker: 4 s under the same load after the measured window; tide batch: a third run of the same commands)");
const pad = (s, w) => String(s).padStart(w);
console.log("  " + "".padEnd(28) + pad("nginx worker", 13) + pad("tide batch", 12) + pad("difference", 12));
for (const [d, x, y] of rows.slice(0, Number(top))) console.log("  " + d.padEnd(28) + pad(x.toFixed(1), 13) + pad(y.toFixed(1), 12) + pad((x - y >= 0 ? "+" : "") + (x - y).toFixed(1), 12));
const rest = rows.slice(Number(top));
if (rest.length) {
  const x = rest.reduce((s, r) => s + r[1], 0), y = rest.reduce((s, r) => s + r[2], 0);
  console.log("  " + "(the others)".padEnd(28) + pad(x.toFixed(1), 13) + pad(y.toFixed(1), 12) + pad((x - y >= 0 ? "+" : "") + (x - y).toFixed(1), 12));
}
JS
fi
