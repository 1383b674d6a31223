#!/bin/sh
# `make run`: runs the example of what tide does today.
set -eu
cd "$(dirname "$0")/.."
exec build/tide script examples/tour.lua "$@"
