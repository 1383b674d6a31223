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
cp -r "$here/projections" "$work/projections"
cd "$work"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || echo "(exit status $?)"; }

echo "tide: the bank example, in $work"
echo "(embedded store: ./tide.db, aggregates: ./aggregates, projections: ./projections)"
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
echo
echo "# Projections turn the events into read models. Catch two of them up on the"
echo "# embedded store's feed (every event, in order), then read their items:"
step "$TIDE" project balances --until-caught-up
step "$TIDE" project owners --until-caught-up
step "$TIDE" read balances alice
step "$TIDE" read owners Alice
echo
echo "# One more command, and the read model moves once the projection catches up:"
step "$TIDE" exec account alice '{"type":"Deposit","amount":12}'
step "$TIDE" project balances --until-caught-up
step "$TIDE" read balances alice
step "$TIDE" status
cat <<TXT

What to try next (from $work):
  - keep every projection current as a daemon: \`$TIDE run\` in one terminal
    (JSON logs on stderr, SIGTERM to stop), commands in another, \`tide read\` to watch;
  - edit aggregates/account.lua (say, a daily withdrawal limit) or projections/balances.lua
    while \`tide run\` or \`tide batch\` runs: the change is loaded without a restart;
  - rebuild a read model from the events: \`$TIDE replay balances\`;
  - run against DynamoDB Local: see examples/README.md (examples/dynamodb-local.yaml);
  - read the aggregate and projection contracts in README.md and write your own.
TXT
