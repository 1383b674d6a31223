#!/bin/bash
# What the user-code budget and sandbox cost per command, and tide batch's
# line reading: `tide batch` of single-event deposits on the embedded store
# with lua.handler_budget_ms at its default (1000: handlers interpreted,
# a count hook armed around each call) and at 0 (off: handlers compiled by
# the JIT, nothing armed), taken in turn; then one huge line.
#
#   bench/user_code.sh              (from the project root; make bench runs it)
#   BENCH_UC_N=20000                deposits per run (plus one Open per account)
#   BENCH_UC_TURNS=3                runs per setting, taken in turn; the medians are reported
#   BENCH_UC_LINE_MB="10 40"        sizes of the huge lines (MB)
#
# CPU per command is marginal: the difference between a run of N deposits
# and one of N/5, over the difference in commands (start-up not counted).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_UC_N:-20000}
TURNS=${BENCH_UC_TURNS:-3}
LINE_MB=${BENCH_UC_LINE_MB:-"10 40"}
TIDE=$PWD/build/tide
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-uc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

commands() { # deposits -> NDJSON
  CMD_N=$1 luajit -e '
    local n = tonumber(os.getenv("CMD_N"))
    local out = {}
    for i = 1, 100 do
      out[#out + 1] = ("{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}"):format(i, i)
    end
    for j = 1, n do
      out[#out + 1] = ("{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}"):format(j % 100 + 1, j)
    end
    io.write(table.concat(out, "\n"), "\n")'
}
commands "$N" > "$tmp/full.ndjson"
commands "$((N / 5))" > "$tmp/small.ndjson"

cpu() { # budget_ms, input -> user+sys seconds
  local dir
  dir=$(mktemp -d "$tmp/run.XXXXXX")
  cp -r aggregates "$dir/aggregates"
  printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\naggregates: %s/aggregates\nlua:\n  handler_budget_ms: %s\n' \
    "$dir" "$dir" "$1" > "$dir/tide.yaml"
  (cd "$dir" && "$TIDE" init > /dev/null)
  (cd "$dir" && /usr/bin/time -f '%U %S' -o "$dir/time" "$TIDE" batch < "$2" > results.ndjson)
  if grep -qv '^{"ok":true' "$dir/results.ndjson"; then echo "bench: a command failed in $dir" >&2; exit 1; fi
  awk '{ print $1 + $2 }' "$dir/time"
  rm -rf "$dir"
}

on=() off=()
for _ in $(seq "$TURNS"); do
  for b in 1000 0; do
    f=$(cpu "$b" "$tmp/full.ndjson")
    s=$(cpu "$b" "$tmp/small.ndjson")
    us=$(awk -v f="$f" -v s="$s" -v n="$((N - N / 5))" 'BEGIN { printf "%.2f", (f - s) * 1e6 / n }')
    if [ "$b" = 0 ]; then off+=("$us"); else on+=("$us"); fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
m_on=$(median "${on[@]}")
m_off=$(median "${off[@]}")
echo "conditions: $N single-event deposits over 100 accounts, embedded store, one process, $TURNS runs per setting in turn; a machine shared with other work"
printf '%-58s %16s\n' "" "CPU us/command"
printf '%-58s %16s\n' "budget on (1000 ms): handlers interpreted, hook armed" "$m_on"
printf '%-58s %16s\n' "budget off (0): handlers compiled, nothing armed" "$m_off"
awk -v a="$m_on" -v b="$m_off" 'BEGIN { printf "%-58s %16.2f (%+.1f%%)\n", "cost of the budget per command", a - b, (a - b) * 100 / b }'

echo ""
echo "tide batch, one huge line (commands.max_line_bytes raised to 64 MiB; the command is refused as too large after it is read):"
dir="$tmp/line"
mkdir -p "$dir"
cp -r aggregates "$dir/aggregates"
printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\naggregates: %s/aggregates\ncommands:\n  max_line_bytes: 64MiB\n' "$dir" "$dir" > "$dir/tide.yaml"
(cd "$dir" && "$TIDE" init > /dev/null)
for mb in $LINE_MB; do
  MB=$mb luajit -e 'io.write("{\"aggregate\":\"account\",\"id\":\"x\",\"command\":{\"type\":\"Open\",\"owner\":\"",
    ("x"):rep(tonumber(os.getenv("MB")) * 1048576), "\"}}\n")' > "$dir/line.ndjson"
  (cd "$dir" && /usr/bin/time -f '%e' -o "$dir/time" "$TIDE" batch < line.ndjson > /dev/null) || true
  printf '  %3s MB line: %6.2f s wall\n' "$mb" "$(tail -1 "$dir/time")"
done
