#!/bin/bash
# Instructions per command of `tide batch`, by part (by hand, not in
# `make bench`): valgrind's callgrind counts instructions, which do not
# depend on the machine's load, so two versions compare on a busy machine
# where CPU times do not.
#
#   bench/command_instructions.sh [sqlite|dynamodb]   (from the project root; after make)
#   BENCH_INS_SMALL / BENCH_INS_LARGE   deposits of the two runs (sqlite: 1000 / 5000
#                                       over 100 accounts; dynamodb: 640 / 3200 over 64)
#   BENCH_INS_ACCOUNTS=N               accounts the deposits go round (default 100 on sqlite,
#                                       64 on dynamodb); 1 is the hot stream: every command
#                                       queues on one stream's lane and is decided in batches
#                                       (--concurrency stays at the default window, 256)
#   BENCH_INS_WRITER=true|false         sqlite: sqlite.writer_thread (unset: the default, on
#                                       with two CPUs or more; the writer thread is counted
#                                       apart, "other threads")
#
# The marginal count per command is (large run - small run) / (LARGE - SMALL):
# start-up, the JIT's warm-up and the first load of each stream cancel out.
# LuaJIT's shared library has no symbols, so the runs use build/tide-prof:
# the same objects linked with LuaJIT's static library (libluajit-5.1.a,
# which has them); then the collector, the table code, the interpreter and
# the JIT compiler are told apart. Parts: by function name (see PARTS
# below); "traces" is the JIT's compiled code (no symbols at all).
# On DynamoDB (a DynamoDB Local of its own, tools/servers.sh), the runs use
# --concurrency = accounts, so each deposit is one PutItem whatever the
# server's timing (requests per command printed, from --stats).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STORE=${1:-sqlite}
command -v valgrind >/dev/null || { echo "bench: valgrind is missing (tools/deps.sh bench)" >&2; exit 1; }
[ -x build/tide ] || { echo "bench: run make first" >&2; exit 1; }
case $STORE in
  sqlite) SMALL=${BENCH_INS_SMALL:-1000} LARGE=${BENCH_INS_LARGE:-5000} ACCOUNTS=${BENCH_INS_ACCOUNTS:-100} ;;
  dynamodb) SMALL=${BENCH_INS_SMALL:-640} LARGE=${BENCH_INS_LARGE:-3200} ACCOUNTS=${BENCH_INS_ACCOUNTS:-64} ;;
  *) echo "usage: bench/command_instructions.sh [sqlite|dynamodb]" >&2; exit 2 ;;
esac
# --concurrency = accounts (one command in flight per stream); on one
# account (the hot stream) the default window, 256, so that commands wait on
# the stream's lane and are decided in batches
CONCURRENCY=$ACCOUNTS
[ "$ACCOUNTS" -gt 1 ] || CONCURRENCY=256
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-ins.XXXXXX")
cleanup() { tools/servers.sh stop "$tmp/servers" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

# build/tide-prof: build/tide's objects with LuaJIT linked statically
objs=$(ls build/obj/runtime/cli/*.o build/obj/runtime/engine/*.o build/obj/runtime/sqlite/*.o build/obj/runtime/core/*.o)
lj=$(pkg-config --variable=libdir luajit)/libluajit-5.1.a
[ -f "$lj" ] || { echo "bench: $lj is missing (libluajit2-5.1-dev)" >&2; exit 1; }
libs=$(pkg-config --libs libcurl yajl yaml-0.1 sqlite3 openssl nettle libmicrohttpd rdkafka)
# shellcheck disable=SC2086
cc -O2 -Wl,-E -o build/tide-prof $objs -Wl,--whole-archive "$lj" -Wl,--no-whole-archive $libs -lm -ldl -lpthread

if [ "$STORE" = dynamodb ]; then
  tools/servers.sh start "$tmp/servers" --dynamodb-only >/dev/null
  # shellcheck disable=SC1091
  . "$tmp/servers/env"
  export AWS_ACCESS_KEY_ID=tidebench AWS_SECRET_ACCESS_KEY=tidebenchsecret
  unset AWS_SESSION_TOKEN AWS_PROFILE
fi

run() { # deposits -> callgrind output in $tmp/$1
  local n=$1 d=$tmp/$1
  mkdir -p "$d"
  awk -v n="$n" -v a="$ACCOUNTS" 'BEGIN {
    for (i = 1; i <= a; i++)
      printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Open\",\"owner\":\"o%d\"}}\n", i, i
    for (j = 1; j <= n; j++)
      printf "{\"aggregate\":\"account\",\"id\":\"a%d\",\"command\":{\"type\":\"Deposit\",\"amount\":%d}}\n", j % a + 1, j
  }' >"$d/commands.ndjson"
  if [ "$STORE" = sqlite ]; then
    local writer=""
    [ -n "${BENCH_INS_WRITER:-}" ] && writer="  writer_thread: $BENCH_INS_WRITER"$'\n'
    printf 'store: sqlite\nsqlite:\n  path: %s/tide.db\n  synchronous: normal\n%saggregates: %s/aggregates\n' \
      "$d" "$writer" "$ROOT" >"$d/tide.yaml"
  else
    printf 'store: dynamodb\ndynamodb:\n  endpoint: %s\n  region: us-east-1\n  table_prefix: ins%s_\naggregates: %s/aggregates\n' \
      "$TIDE_TEST_DYNAMODB_ENDPOINT" "$n" "$ROOT" >"$d/tide.yaml"
  fi
  build/tide init --config "$d/tide.yaml" >/dev/null
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$d/cg.out" build/tide-prof batch --stats \
    --concurrency "$CONCURRENCY" --config "$d/tide.yaml" <"$d/commands.ndjson" >"$d/results.ndjson" 2>"$d/log"
  local bad
  bad=$(grep -vc '^{"ok":true' "$d/results.ndjson" || true)
  [ "$bad" = 0 ] || { echo "bench: $bad commands failed: $(grep -m1 -v '^{"ok":true' "$d/results.ndjson")" >&2; exit 1; }
  # one file per thread: cg.out-01 is the main (Lua) thread, the others
  # the embedded store's writer thread and libraries' threads
  callgrind_annotate --auto=no --threshold=100 "$d/cg.out-01" >"$d/functions.txt"
  : >"$d/other.txt"
  for f in "$d"/cg.out-*; do
    [ "$f" = "$d/cg.out-01" ] || callgrind_annotate --auto=no --threshold=100 "$f" >>"$d/other.txt"
  done
}
run "$SMALL"
run "$LARGE"

echo "conditions: tide batch --concurrency $CONCURRENCY, $STORE store, $ACCOUNTS Opens then deposits over $ACCOUNTS accounts;"
echo "  valgrind callgrind, build/tide-prof (LuaJIT linked statically); marginal = ($LARGE-deposit run - $SMALL-deposit run) / $((LARGE - SMALL))"
if [ "$STORE" = dynamodb ]; then
  echo "  requests per command (--stats): $(grep -o '"requests_per_command":[0-9.]*' "$tmp/$LARGE/log" | cut -d: -f2)"
fi
python3 - "$tmp/$SMALL/functions.txt" "$tmp/$LARGE/functions.txt" "$((LARGE - SMALL))" \
  "$tmp/$SMALL/other.txt" "$tmp/$LARGE/other.txt" <<'EOF'
import re, sys
# part: a pattern of the function (or object) names it takes, first match wins
PARTS = [
    ("JIT-compiled traces", r"\?\?\?:0x0000000\w+ \[\?\?\?\]"),
    ("garbage collector and allocator", r"(gc_|lj_gc|lj_alloc|lj_mem|_free \[|propagatemark|atomic|sweep)"),
    ("Lua tables (new keys, rehash)", r"(lj_tab|rehashtab|hashkey|newtab|countint|numusehash|numusearray|bestasize)"),
    ("JIT compiler and trace exits", r"(lj_record|rec_|lj_asm|asm_|lj_opt|lj_ir|lj_snap|snap_|lj_trace|trace_|lj_mcode|lj_crecord|crec_|lj_ffrecord|recff|fold|emit_|ra_|lj_cont|split|narrow|sink|loop_|lj_vm_exit|lj_vm_record|lj_vm_hot)"),
    ("debug hooks (handler budget)", r"(hook|lj_dispatch)"),
    ("Lua strings", r"(lj_str|lj_buf|lj_strfmt|lj_meta_cat|lj_strscan)"),
    ("Lua patterns", r"(match|classend|str_find_aux)"),
    ("interpreter and builtins", r"(lj_BC_|lj_vm_|lj_ff_|lj_fff|lj_cf_|lj_lib|lj_ccall|lj_cconv|lj_cdata|lj_carith|lj_clib|lj_ctype|lj_func|lj_state|lj_err|lj_debug|lj_obj|lj_udata|lj_parse|lj_lex|lj_bc|lj_meta)"),
    ("SQLite", r"sqlite"),
    ("libcurl", r"curl"),
    ("SigV4 (SHA-256, HMAC)", r"(sigv4|nettle|sha256|hmac)"),
    ("JSON decode (yajl, lua-cjson)", r"(yajl|cjson|input_check|ffi_input|lua_input|fpconv|strtod)"),
    ("json_encode (tide C)", r"(lua_json|ddb_json_writer)"),
    ("tide's codec (DynamoDB JSON, guards)", r"(ddb_|lua_decode|lua_encode|lua_codec|json_arena|lua_buffer)"),
    ("Lua C API", r"(lua_|luaL_|index2adr)"),
    ("OpenSSL", r"(crypto|ssl)"),
    ("tide C, other", r"/runtime/"),
    ("libc", r"(libc|ld-linux)"),
]
def load(path):
    d = {}
    for line in open(path):
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            d[m.group(2)] = d.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return d
a, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
oa, ob = load(sys.argv[4]), load(sys.argv[5])
main_total = (sum(b.values()) - sum(a.values())) / n
for k, v in oa.items(): a[k] = a.get(k, 0) + v
for k, v in ob.items(): b[k] = b.get(k, 0) + v
tot = {}
for k in set(a) | set(b):
    v = (b.get(k, 0) - a.get(k, 0)) / n
    part = next((p for p, rx in PARTS if re.search(rx, k)), "other (mostly traces)")
    tot[part] = tot.get(part, 0) + v
s = sum(tot.values())
print("%-36s %12s %6s" % ("part", "instr/cmd", "share"))
for k, v in sorted(tot.items(), key=lambda x: -x[1]):
    if abs(v) >= 50:
        print("%-36s %12.0f %5.1f%%" % (k, v, 100 * v / s))
print("%-36s %12.0f" % ("total", s))
print("%-36s %12.0f" % ("  of which the main (Lua) thread", main_total))
print("%-36s %12.0f" % ("  of which other threads (the writer)", s - main_total))
EOF
