#!/bin/sh
# `make run`: the bank example on the embedded store (examples/bank.sh).
set -eu
cd "$(dirname "$0")/.."
exec examples/bank.sh
