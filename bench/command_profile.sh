#!/bin/bash
# Where a command's CPU goes: `tide batch` with single-event deposits on the
# embedded store (bench/command_path.sh's commands), profiled twice:
#
#   1. LuaJIT's profiler (jit.p, through bench/profile_batch.lua), sampling
#      every millisecond of CPU: by VM state (interpreted Lua, JIT-compiled
#      code, C functions called from Lua, garbage collector, JIT compiler),
#      then by Lua function (module:function, each sample charged to the
#      innermost Lua function, C calls included); and jit.v's log of the
#      traces LuaJIT aborted, counted by reason (why code stays interpreted);
#   2. perf (perf record, perf report --sort dso): by shared object, i.e.
#      LuaJIT's VM (libluajit: interpreter, GC, fast functions, the JIT
#      compiler), the JIT's traces (anonymous memory: perf names them
#      "[unknown]" or "[JIT] tid N"), SQLite, libc, the kernel, tide's own C.
#
#   bench/command_profile.sh         (from the project root; make bench runs it)
#   BENCH_PROF_N=20000               deposits (plus one Open per account)
#   BENCH_PROF_ACCOUNTS=100          accounts
#   BENCH_PROF_TOP=12                entries printed per profile
#
# Each profile is its own run on a fresh store; the profilers' own cost
# (a signal per sample) is small next to a command's ~100 us.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${BENCH_PROF_N:-20000}
ACCOUNTS=${BENCH_PROF_ACCOUNTS:-100}
TOP=${BENCH_PROF_TOP:-12}
TIDE=$ROOT/build/tide
note() { echo "bench: $*" >&2; }
[ -x "$TIDE" ] || { note "build/tide is missing: run make"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-prof.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

awk -v n="$N" -v a="$ACCOUNTS" 'BEGIN {
  for (i = 1; i <= a; i++)
    printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}\n", i, i
  for (j = 1; j <= n; j++)
    printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}\n", j % a + 1, j
}' >"$tmp/commands.ndjson"

store() { # name -> tide.yaml of a fresh embedded store
  mkdir -p "$tmp/$1"
  printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\n  synchronous: normal\naggregates: %s/aggregates\n' \
    "$tmp/$1" "$ROOT" >"$tmp/$1/tide.yaml"
  "$TIDE" init --config "$tmp/$1/tide.yaml" >/dev/null
  echo "$tmp/$1/tide.yaml"
}
check() { # results file
  local bad
  bad=$(grep -vc '^{"ok":true' "$1" || true)
  [ "$bad" = 0 ] || { note "$bad commands failed: $(grep -m1 -v '^{"ok":true' "$1")"; exit 1; }
}

total=$((N + ACCOUNTS))
echo "conditions: tide batch, $total single-event commands ($ACCOUNTS Opens, then $N deposits over $ACCOUNTS accounts),"
echo "  embedded store (synchronous=normal, WAL); load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"

for mode in v F; do
  cfg=$(store "jitp-$mode")
  "$TIDE" script bench/profile_batch.lua "p=${mode}i1m1" "$tmp/jitp-$mode.txt" --config "$cfg" \
    <"$tmp/commands.ndjson" >"$tmp/jitp-$mode.out"
  check "$tmp/jitp-$mode.out"
  case $mode in
    v) echo "jit.p by VM state (share of the process's CPU samples, 1 ms interval):" ;;
    F) echo "jit.p by Lua function (innermost Lua frame; C functions count in their caller), top $TOP:" ;;
  esac
  grep -v '^$' "$tmp/jitp-$mode.txt" | grep -v '^  ' | sed -n "1,${TOP}p" | sed 's/^/  /'
done

# Why code runs interpreted: the traces LuaJIT gave up on, by reason.
cfg=$(store jitv)
"$TIDE" script bench/profile_batch.lua v "$tmp/jitv.txt" --config "$cfg" <"$tmp/commands.ndjson" >"$tmp/jitv.out"
check "$tmp/jitv.out"
echo "jit.v: $(grep -c '^\[TRACE *[0-9]' "$tmp/jitv.txt" || true) traces compiled, $(grep -c '^\[TRACE ---' "$tmp/jitv.txt" || true) aborted; aborts by reason and place, top $TOP:"
sed -n 's/^\[TRACE --- .* -- \(.*\)\]$/\1/p' "$tmp/jitv.txt" | sort | uniq -c | sort -rn | sed -n "1,${TOP}p" | sed 's/^/  /'

if command -v perf >/dev/null; then
  cfg=$(store perf)
  if perf record -q -F 2000 -o "$tmp/perf.data" -- "$TIDE" batch --config "$cfg" \
       <"$tmp/commands.ndjson" >"$tmp/perf.out" 2>"$tmp/perf.err"; then
    check "$tmp/perf.out"
    echo "perf by shared object (samples of tide batch, its threads and the kernel on its behalf), top $TOP:"
    perf report -i "$tmp/perf.data" --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | sed -n "1,${TOP}p" \
      | sed 's/^/  /'
    # LuaJIT's library has no symbols here (no debug package): the symbols of the others.
    echo "perf by symbol outside libluajit, top $TOP:"
    perf report -i "$tmp/perf.data" --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' \
      | grep -v 'libluajit' | sed -n "1,${TOP}p" | sed -e 's/^/  /' -e 's/  *- *- *$//'
  else
    echo "perf record failed (perf_event_paranoid $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null)): $(tail -1 "$tmp/perf.err")"
  fi
else
  echo "(perf is not installed: the split by shared object is skipped)"
fi
