#!/bin/sh
# Fetches the npm-packaged test servers into .deps/ (ignored by git):
#   .deps/dynamodb-local/   AWS DynamoDB Local (from amplify-dynamodb-simulator)
#   .deps/node_modules/     dynalite, the fault server's and the benchmarks' packages
set -eu
cd "$(dirname "$0")/.."
mkdir -p .deps

if [ ! -f .deps/dynamodb-local/DynamoDBLocal.jar ]; then
  echo "deps: fetching DynamoDB Local (npm amplify-dynamodb-simulator@2.9.30)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent amplify-dynamodb-simulator@2.9.30 >/dev/null && tar xzf ./*.tgz)
  rm -rf .deps/dynamodb-local
  mv "$tmp/package/emulator" .deps/dynamodb-local
  rm -rf "$tmp"
fi

# Versions pinned in tools/package.json; npm ci is skipped when nothing changed.
if [ ! -f .deps/node_modules/.tide-stamp ] || [ tools/package.json -nt .deps/node_modules/.tide-stamp ]; then
  echo "deps: installing npm packages from tools/package.json"
  cp tools/package.json .deps/package.json
  (cd .deps && npm install --silent --no-audit --no-fund --omit=optional >/dev/null)
  touch .deps/node_modules/.tide-stamp
fi
