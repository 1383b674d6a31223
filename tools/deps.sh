#!/bin/sh
# Installs what tide needs to build, run and test, when it is missing.
# Usage: tools/deps.sh [build|test|bench]   (test adds the servers the suite
# starts; bench adds the tools only benchmarks use)
set -eu
cd "$(dirname "$0")/.."

BUILD_PKGS="gcc make pkg-config libluajit2-5.1-dev luajit2 libcurl4-openssl-dev \
libssl-dev nettle-dev libyaml-dev libyajl-dev libjsmn-dev libsqlite3-dev libmicrohttpd-dev librdkafka-dev lua-cjson lua-expat"
TEST_PKGS="lua-busted openjdk-17-jre-headless nodejs npm nginx-light \
libnginx-mod-http-lua lua-resty-core libclang-rt-14-dev wrk curl sqlite3 procps python3 openssl time prometheus \
python3-botocore kcat"
BENCH_PKGS="valgrind"

want="$BUILD_PKGS"
case "${1:-build}" in
  test) want="$want $TEST_PKGS" ;;
  bench) want="$want $TEST_PKGS $BENCH_PKGS" ;;
esac

# Some machines carry Node.js from another packaging (nodesource's nodejs
# ships npm itself): a working command is as good as Debian's package.
satisfied_by_command() {
  case "$1" in
    nodejs) command -v node >/dev/null 2>&1 ;;
    npm) command -v npm >/dev/null 2>&1 ;;
    openjdk-17-jre-headless) command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -q 'version "\(1[7-9]\|2[0-9]\)' ;;
    *) return 1 ;;
  esac
}

missing=""
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in
    *" installed") ;;
    *) satisfied_by_command "$p" || missing="$missing $p" ;;
  esac
done

if [ -n "$missing" ]; then
  echo "deps: installing Debian packages:$missing"
  if [ "$(id -u)" = 0 ]; then SUDO=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"
  else
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: run as root or with passwordless sudo, or install them yourself:" >&2
    echo "      apt-get install$missing" >&2
    exit 1
  fi
  # A fresh machine has no package lists yet; refresh them when absent or a day old.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    $SUDO apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing; }
fi

if [ "${1:-build}" != build ]; then
  tools/fetch-npm.sh
fi
