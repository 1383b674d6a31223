#!/bin/sh
# examples/bank.sh: the bank example end to end on the embedded store, with
# nothing to configure. `make run` runs it; run it yourself from anywhere.
#   TIDE=path/to/tide examples/bank.sh [WORKDIR]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
TIDE=${TIDE:-$here/build/tide}
work=${1:-$here/build/example}
rm -rf "$work"
mkdir -p "$work"
cp -r "$here/aggregates" "$work/aggregates"
cd "$work"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || echo "(exit status $?)"; }

echo "tide: the bank example, in $work (embedded store: ./tide.db, aggregates: ./aggregates)"
step "$TIDE" exec account alice '{"type":"Open","owner":"Alice"}'
step "$TIDE" exec account bob '{"type":"Open","owner":"Bob"}'
step "$TIDE" exec account alice '{"type":"Deposit","amount":100}'
step "$TIDE" exec account alice '{"type":"Withdraw","amount":30}'
echo
echo "# An overdraft is rejected by the domain (exit status 3), and nothing is written:"
step "$TIDE" exec account alice '{"type":"Withdraw","amount":500}'
echo
echo "# A command sent twice with the same id is applied once:"
step "$TIDE" exec account bob '{"type":"Deposit","amount":25,"id":"deposit-0001"}'
step "$TIDE" exec account bob '{"type":"Deposit","amount":25,"id":"deposit-0001"}'
echo
echo "# Many commands at once, one result line each, in input order:"
printf '%s\n' \
  '{"aggregate":"account","id":"carol","command":{"type":"Open","owner":"Carol"}}' \
  '{"aggregate":"account","id":"carol","command":{"type":"Deposit","amount":40}}' \
  '{"aggregate":"account","id":"bob","command":{"type":"Withdraw","amount":5}}' \
  > commands.ndjson
printf '\n\033[1m$ tide batch < commands.ndjson\033[0m\n'
"$TIDE" batch < commands.ndjson || true
step "$TIDE" events account alice
step "$TIDE" state account alice
step "$TIDE" state account bob
cat <<TXT

What to try next:
  - edit $work/aggregates/account.lua (say, a daily withdrawal limit) and run the commands again;
  - run against DynamoDB Local: see examples/README.md (examples/dynamodb-local.yaml);
  - read the aggregate contract in README.md and write an aggregate of your own.
TXT
