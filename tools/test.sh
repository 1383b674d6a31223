#!/bin/bash
# Runs tide's whole busted suite twice: against the plain build and against
# the AddressSanitizer + UBSan build (with LeakSanitizer), with DynamoDB
# Local and dynalite started on loopback for each run and stopped after it.
# The two runs go at the same time (TIDE_TEST_SERIAL=1: one after the other).
# Ends with one line: "N passed, N failed".
#
#   tools/test.sh               both runs
#   tools/test.sh --asan-only   the sanitizer run only
#   tools/test.sh --plain-only  the plain run only
#   BUSTED_ARGS="spec/unit"     restrict to some specs (passed to busted)
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
jobs=$(nproc 2>/dev/null || echo 2)

# The suite must leave the work tree as it found it: what git reports now
# is compared with what it reports after the run.
tree_state() { git status --porcelain --untracked-files=all 2>/dev/null; git diff HEAD 2>/dev/null | md5sum | sed 's/ .*/ (hash of git diff HEAD)/'; }
tree_before=$(tree_state)

make -s -j"$jobs" all || { echo "0 passed, 1 failed"; exit 1; }
if [ "$mode" != --plain-only ]; then
  make -s -j"$jobs" SAN=1 all || { echo "0 passed, 1 failed"; exit 1; }
fi

state=$(mktemp -d /tmp/tide-test.XXXXXX)
cleanup() {
  for d in "$state"/servers-*; do [ -d "$d" ] && tools/servers.sh stop "$d" >/dev/null 2>&1; done
  rm -rf "$state"
}
trap cleanup EXIT

# Fresh servers for each run: DynamoDB Local slows down with every stream
# record it holds, so the sanitizer run must not inherit the plain run's.
start_servers() { # dir
  tools/servers.sh stop "$1" 2>/dev/null
  rm -rf "$1"
  tools/servers.sh start "$1" || return 1
  # shellcheck disable=SC1091
  . "$1/env"
}

# run_suite LABEL ENV...: one busted run against servers of its own; its
# output goes to $state/LABEL.log (and to stdout unless QUIET=1), its counts
# to $state/LABEL.result as "passed failed status".
run_suite() {
  local label=$1; shift
  local log="$state/$label.log" result="$state/$label.result"
  echo "0 1 1" >"$result"
  start_servers "$state/servers-$label" >"$log" 2>&1 || { cat "$log"; return; }
  if [ "${QUIET:-0}" = 1 ]; then
    env "$@" busted --lua=luajit -o utfTerminal ${BUSTED_ARGS:-} >>"$log" 2>&1
  else
    echo "== $label"
    env "$@" busted --lua=luajit -o utfTerminal ${BUSTED_ARGS:-} 2>&1 | tee -a "$log"
  fi
  local rc=${PIPESTATUS[0]} st=0
  tools/servers.sh stop "$state/servers-$label" >/dev/null 2>&1
  # busted: "N successes / N failures / N errors / N pending : T seconds"
  local line s f e
  line=$(grep -aE '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -1)
  s=$(grep -oE '[0-9]+ success' <<<"$line" | grep -oE '[0-9]+')
  f=$(grep -oE '[0-9]+ failure' <<<"$line" | grep -oE '[0-9]+')
  e=$(grep -oE '[0-9]+ error' <<<"$line" | grep -oE '[0-9]+')
  if [ -z "$line" ]; then s=0 f=0 e=1; fi
  f=$((f + e))
  # A sanitizer report or a crash can end busted without its summary or
  # with a non-zero code even when every test passed: count it as a failure.
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  [ "$rc" -ne 0 ] && st=1
  if grep -aqE '^(==[0-9]+==ERROR|SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer)|runtime error:' "$log"; then
    echo "tide test: sanitizer report in the $label run" >&2
    st=1
  fi
  echo "$s $f $st" >"$result"
}

asan_env() {
  echo TIDE_BUILD=build-asan LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    LSAN_OPTIONS=suppressions=$PWD/spec/fixtures/lsan.supp:print_suppressions=0
}

case "$mode" in
--plain-only) run_suite plain TIDE_BUILD=build ;;
--asan-only) run_suite asan $(asan_env) ;;
*)
  if [ "${TIDE_TEST_SERIAL:-0}" = 1 ]; then
    run_suite plain TIDE_BUILD=build
    run_suite asan $(asan_env)
  else
    # Both runs at once: most of a run is waiting (processes starting,
    # leases expiring, credentials rotating, servers answering), so on two
    # cores the pair takes little more than the longer one. The plain run
    # prints as it goes; the sanitizer run's output follows it.
    echo "== plain and asan at once (TIDE_TEST_SERIAL=1: one after the other)"
    QUIET=1 run_suite asan $(asan_env) &
    asan_pid=$!
    run_suite plain TIDE_BUILD=build
    wait "$asan_pid"
    echo "== asan"
    cat "$state/asan.log"
  fi
  ;;
esac

passed=0 failed=0 status=0
for r in "$state"/*.result; do
  read -r s f st <"$r"
  passed=$((passed + s)); failed=$((failed + f)); [ "$st" -ne 0 ] && status=1
done

tree_after=$(tree_state)
if [ "$tree_before" != "$tree_after" ]; then
  echo "tide test: the run changed the work tree (git status --porcelain):" >&2
  diff <(echo "$tree_before") <(echo "$tree_after") | sed -n 's/^> /  /p' >&2
  failed=$((failed + 1))
fi

[ "$failed" -gt 0 ] && status=1
echo "$passed passed, $failed failed"
exit $status
