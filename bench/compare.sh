#!/bin/bash
# Before/after in one run: tide's own figures from two builds of tide, taken
# in turn (base, this tree, base, this tree, ...) so that a noisy minute of
# a shared machine lands on both. For a refactoring that must not make
# anything slower.
#
#   bench/compare.sh BASE_TREE [ROUNDS]
#
# BASE_TREE is another checkout of tide, built (`make` there), e.g. a
# `git worktree add ../base <commit>`. ROUNDS (default 3): turns per figure;
# the median of each side is printed. Figures: signing (bench/sigv4.lua),
# the codec (bench/decode.lua), embedded appends (bench/sqlite_append.lua),
# embedded projections (bench/projection_sqlite.lua) and whole commands on
# the embedded store (tide batch, bench/command_path.sh's workload). Needs no
# server.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$(cd "${1:?usage: bench/compare.sh BASE_TREE [ROUNDS]}" && pwd)
ROUNDS=${2:-3}
NEW=$PWD
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-compare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
[ -x "$BASE/build/tide" ] || { echo "compare: $BASE/build/tide is missing: run make there" >&2; exit 1; }
make -s >&2

# Each probe: TREE -> lines "name<TAB>value<TAB>unit" on stdout.
probe_sigv4() {
  (cd "$1" && LUA_PATH="$1/lua/?.lua;$1/lua/?/init.lua;;" LUA_CPATH="$1/build/lua/?.so;;" \
    luajit bench/sigv4.lua 100000 2>/dev/null) \
    | awk -F ': ' '/^sigv4.sign .*us\/op/ { split($2, f, " "); print $1 "\t" f[1] "\tus/op" }'
}
probe_decode() {
  (cd "$1" && LUA_PATH="$1/lua/?.lua;$1/lua/?/init.lua;;" LUA_CPATH="$1/build/lua/?.so;;" \
    luajit bench/decode.lua 3 2>/dev/null) \
    | awk '/ us / { i = index($0, " us "); head = substr($0, 1, i - 1); n = split(head, w, " ");
                   name = head; sub(/ +[0-9.]+$/, "", name); print name "\t" w[n] "\tus" }'
}
probe_sqlite_append() {
  (cd "$1" && BENCH_SQLITE_SYNC=normal BENCH_SQLITE_DIR="$tmp" build/tide script bench/sqlite_append.lua 20000 1 256 2>/dev/null) \
    | awk '/appends\/s/ { print $1 " " $2 " " $3 "\t" $5 "\tappends/s" }'
}
probe_projection() {
  (cd "$1" && build/tide script bench/projection_sqlite.lua 20000 500 500 2>/dev/null) \
    | awk '/events\/s/ { print "projection " $1 "\t" $4 "\tevents/s" }'
}
probe_batch() { # whole commands: CPU per command of tide batch, 10100 single-event commands
  local dir="$tmp/batch.$RANDOM"
  mkdir -p "$dir"
  cp -r "$1/aggregates" "$dir/aggregates"
  printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\naggregates: %s/aggregates\n' "$dir" "$dir" > "$dir/tide.yaml"
  luajit -e '
    local out = {}
    for i = 1, 100 do out[#out + 1] = ("{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o\"}}"):format(i) end
    for j = 1, 10000 do out[#out + 1] = ("{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":1}}"):format(j % 100 + 1) end
    io.write(table.concat(out, "\n"), "\n")' > "$dir/in.ndjson"
  (cd "$dir" && /usr/bin/time -f '%U %S' -o time "$1/build/tide" batch < in.ndjson > /dev/null)
  awk '{ printf "tide batch CPU per command\t%.1f\tus\n", ($1 + $2) * 1e6 / 10100 }' "$dir/time"
  rm -rf "$dir"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "compare: round $r of $ROUNDS" >&2
  for side in base new; do
    tree=$BASE; [ $side = new ] && tree=$NEW
    for p in sigv4 decode sqlite_append projection batch; do
      "probe_$p" "$tree" | sed "s/^/$side\t/" >> "$tmp/all.tsv" || echo "compare: probe $p failed on $side" >&2
    done
  done
done

echo "before/after, $ROUNDS turns each, medians: base = $BASE ($(git -C "$BASE" rev-parse --short HEAD 2>/dev/null || echo ?)), new = this tree ($(git rev-parse --short HEAD))"
printf '%-58s %12s %12s %8s  %s\n' figure base new new/base unit
awk -F '\t' '
  { key = $2; unit[key] = $4; n[key, $1]++; v[key, $1, n[key, $1]] = $3; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
  function median(key, side,   m, i, j, t, a) {
    m = n[key, side]; if (m == 0) return ""
    for (i = 1; i <= m; i++) a[i] = v[key, side, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return a[int((m + 1) / 2)]
  }
  END {
    for (i = 1; i <= k; i++) {
      key = order[i]; b = median(key, "base"); w = median(key, "new")
      printf "%-58s %12s %12s %8s  %s\n", substr(key, 1, 58), b, w, (b > 0 && w != "") ? sprintf("%.2f", w / b) : "-", unit[key]
    }
  }' "$tmp/all.tsv"
