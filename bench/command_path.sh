#!/bin/bash
# Whole commands on the embedded store, end to end: `tide batch` with
# single-event deposits against raw SQLite inserting the very same rows.
#
#   bench/command_path.sh            (from the project root; make bench runs it)
#   BENCH_CMD_N=20000                deposits per run (plus one Open per account)
#   BENCH_CMD_ACCOUNTS=100           accounts the deposits are spread over
#   BENCH_CMD_SYNC=normal            sqlite.synchronous for both sides
#   BENCH_CMD_TURNS=3                turns of tide next to raw SQLite (the ratio: their median)
#
# tide: a fresh folder with the example aggregates and a tide.yaml on the
# embedded store; `build/tide batch < commands.ndjson > results.ndjson`,
# wall and CPU time of the process (GNU time). Marginal CPU per command: the
# difference between the full run and a run of a fifth of the deposits,
# divided by the difference in commands, so start-up is not counted.
# Twice: with the default group commit (on two CPUs or more, a writer
# thread of its own runs the group's transaction) and with
# sqlite.writer_thread: false (the Lua thread runs it).
# Raw SQLite: the events table tide wrote is copied, row for row, into a
# new database with the same schema, WAL and synchronous setting, by the
# sqlite3 shell in transactions of 100 INSERTs (the SQL text is prepared
# before the clock starts), in the order of the commands that made them
# (the results' lines: input order), each row's position left to SQLite, as
# a program inserting each command's event as it comes would. Target: tide
# at least half of that rate. Next to it, for comparison only, the same rows
# in tide's stored order (position): there, consecutive rows are a stream's
# commands that shared a write, and 100 of them touch fewer pages of the
# (stream, version) index than 100 rows of 100 streams do.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_CMD_N:-20000}
ACCOUNTS=${BENCH_CMD_ACCOUNTS:-100}
SYNC=${BENCH_CMD_SYNC:-normal}
TURNS=${BENCH_CMD_TURNS:-3}
TIDE=$PWD/build/tide
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-cmd.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

commands() { # deposits -> NDJSON on stdout
  CMD_N=$1 CMD_ACCOUNTS=$ACCOUNTS luajit -e '
    local n, accounts = tonumber(os.getenv("CMD_N")), tonumber(os.getenv("CMD_ACCOUNTS"))
    local out = {}
    for i = 1, accounts do
      out[#out + 1] = ("{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}"):format(i, i)
    end
    for j = 1, n do
      out[#out + 1] = ("{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}")
        :format(j % accounts + 1, j)
    end
    io.write(table.concat(out, "\n"), "\n")'
}

run_tide() { # deposits, folder [, writer_thread] -> "wall user sys"
  local dir=$2
  mkdir -p "$dir"
  cp -r aggregates "$dir/aggregates"
  local writer=""
  [ -n "${3:-}" ] && writer="  writer_thread: $3"$'\n'
  printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\n  synchronous: %s\n%saggregates: %s/aggregates\n' \
    "$dir" "$SYNC" "$writer" "$dir" > "$dir/tide.yaml"
  commands "$1" > "$dir/commands.ndjson"
  (cd "$dir" && "$TIDE" init > /dev/null)
  (cd "$dir" && /usr/bin/time -f '%e %U %S' -o "$dir/time" "$TIDE" batch < commands.ndjson > results.ndjson)
  local bad
  bad=$(grep -vc '^{"ok":true' "$dir/results.ndjson" || true)
  [ "$bad" = 0 ] || { echo "bench: $bad commands failed in $dir" >&2; exit 1; }
  cat "$dir/time"
}

small=$((N / 5))
read -r t_wall t_user t_sys < <(run_tide "$N" "$tmp/full")
read -r s_wall s_user s_sys < <(run_tide "$small" "$tmp/small")
# the same with sqlite.writer_thread: false (the Lua thread runs each group)
read -r w_wall w_user w_sys < <(run_tide "$N" "$tmp/wfull" false)
read -r ws_wall ws_user ws_sys < <(run_tide "$small" "$tmp/wsmall" false)

rows=$(sqlite3 "$tmp/full/tide.db" 'SELECT count(*) FROM events')
# the commands' order: line n of the results names the stream and version
# of its event
sed -n 's/^{"ok":true,"stream":"\([^"]*\)","version":\([0-9]*\),.*/\1|\2/p' "$tmp/full/results.ndjson" \
  | awk '{ print NR "|" $0 }' > "$tmp/order.txt"
raw_sql() { # SELECT of the rows in their order -> transactions of 100 INSERTs on stdout
  echo "PRAGMA journal_mode=WAL;"
  echo "PRAGMA synchronous=${SYNC^^};"
  sqlite3 "$tmp/full/tide.db" '.schema events'
  sqlite3 -cmd 'CREATE TEMP TABLE ord (n INTEGER PRIMARY KEY, stream TEXT, version INTEGER)' \
    -cmd ".separator |" -cmd ".import $tmp/order.txt ord" -cmd '.mode insert events' "$tmp/full/tide.db" "$1" \
    | awk 'NR % 100 == 1 { print "BEGIN;" } { print } NR % 100 == 0 { print "COMMIT;" } END { if (NR % 100 != 0) print "COMMIT;" }'
}
raw_sql 'SELECT NULL, e.stream, e.version, e.type, e.data, e.meta FROM ord o JOIN events e ON e.stream = o.stream AND e.version = o.version ORDER BY o.n' > "$tmp/raw.sql"
raw_sql 'SELECT * FROM events ORDER BY position' > "$tmp/raw_stored.sql"
[ "$(grep -c '^INSERT' "$tmp/raw.sql")" = "$rows" ] || { echo "bench: the results do not name every stored row" >&2; exit 1; }
run_raw() { # database [sql] -> "wall user sys"
  /usr/bin/time -f '%e %U %S' -o "$tmp/raw.time" sqlite3 "$1" < "${2:-$tmp/raw.sql}" > /dev/null
  cat "$tmp/raw.time"
}
read -r r_wall r_user r_sys < <(run_raw "$tmp/raw.db")
read -r o_wall _ < <(run_raw "$tmp/raw_stored.db" "$tmp/raw_stored.sql")

# Turns: a run of a second or less moves by a third between identical runs
# on this kind of VM, so the ratio is the median of TURNS turns, each a
# tide run (the default, then writer_thread: false) next to a raw SQLite run.
tide_rates="$(awk -v n=$((N + ACCOUNTS)) -v w="$t_wall" 'BEGIN { print n / w }')"
lua_path_rates="$(awk -v n=$((N + ACCOUNTS)) -v w="$w_wall" 'BEGIN { print n / w }')"
raw_rates="$(awk -v n="$rows" -v w="$r_wall" 'BEGIN { print n / w }')"
stored_rates="$(awk -v n="$rows" -v w="$o_wall" 'BEGIN { print n / w }')"
for ((turn = 2; turn <= TURNS; turn++)); do
  read -r tw _ < <(run_tide "$N" "$tmp/full$turn")
  read -r rw _ < <(run_raw "$tmp/raw$turn.db")
  read -r ow _ < <(run_raw "$tmp/raw_stored$turn.db" "$tmp/raw_stored.sql")
  stored_rates="$stored_rates $(awk -v n="$rows" -v w="$ow" 'BEGIN { print n / w }')"
  read -r fw _ < <(run_tide "$N" "$tmp/wfull$turn" false)
  tide_rates="$tide_rates $(awk -v n=$((N + ACCOUNTS)) -v w="$tw" 'BEGIN { print n / w }')"
  lua_path_rates="$lua_path_rates $(awk -v n=$((N + ACCOUNTS)) -v w="$fw" 'BEGIN { print n / w }')"
  raw_rates="$raw_rates $(awk -v n="$rows" -v w="$rw" 'BEGIN { print n / w }')"
done

total=$((N + ACCOUNTS))
awk -v total="$total" -v smallt="$((small + ACCOUNTS))" -v tu="$t_user" -v ts="$t_sys" \
    -v su="$s_user" -v ss="$s_sys" -v rows="$rows" -v ru="$r_user" -v rs="$r_sys" \
    -v sync="$SYNC" -v accounts="$ACCOUNTS" -v wu="$w_user" -v wsys="$w_sys" \
    -v wsu="$ws_user" -v wss="$ws_sys" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" -v cores="$(nproc)" \
    -v tr="$tide_rates" -v lr="$lua_path_rates" -v rr="$raw_rates" -v sr="$stored_rates" -v turns="$TURNS" '
function median(list, a, n, i, j, t) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
BEGIN {
  nt = split(tr, t, " "); split(lr, w, " "); split(rr, r, " ")
  ratios = ""; lratios = ""
  for (i = 1; i <= nt; i++) {
    ratios = ratios sprintf(" %.2f", t[i] / r[i]); lratios = lratios sprintf(" %.2f", w[i] / r[i])
  }
  printf "conditions: %d single-event commands (%d Opens, then deposits over %d accounts), synchronous=%s, WAL, one process;\n", total, accounts, accounts, sync
  printf "  %d turns (tide, raw SQLite in the commands'"'"' order and in tide'"'"'s stored order, tide with writer_thread: false), rates are medians;\n", turns
  printf "  load average %s on %d cores (CPU us include the writer thread'"'"'s; from the first turn)\n", load, cores
  printf "%-44s %10s %14s %18s\n", "", "per second", "CPU us/command", "marginal us/cmd"
  printf "%-44s %10.0f %14.1f %18.1f\n", "tide batch (whole commands, default)", median(tr), (tu + ts) * 1e6 / total, ((tu + ts) - (su + ss)) * 1e6 / (total - smallt)
  printf "%-44s %10.0f %14.1f %18.1f\n", "tide batch, sqlite.writer_thread: false", median(lr), (wu + wsys) * 1e6 / total, ((wu + wsys) - (wsu + wss)) * 1e6 / (total - smallt)
  printf "%-44s %10.0f %14.1f %18s\n", "raw SQLite (same rows, transactions of 100)", median(rr), (ru + rs) * 1e6 / rows, "-"
  printf "%-44s %10.0f %14s %18s\n", "  the same rows in tide'"'"'s stored order", median(sr), "-", "-"
  ratio = median(ratios)
  printf "target: tide batch >= 0.5 x raw SQLite: %.2f x (%s; median of the turns:%s); with writer_thread: false %.2f x (%s)\n", ratio, (ratio >= 0.5 ? "met" : "NOT MET"), ratios, median(lratios), lratios
}'
