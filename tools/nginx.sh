#!/bin/bash
# Starts and stops nginx on loopback with tide's example site
# (examples/nginx/) against a tide.yaml.
#
#   tools/nginx.sh start DIR [CONFIG]   renders DIR/conf/nginx.conf, runs `tide init`,
#                                       starts nginx with prefix DIR, waits until
#                                       /health answers, prints the URL (also in DIR/url)
#   tools/nginx.sh reload DIR           renders again from the same CONFIG and runs
#                                       `nginx -s reload` (new workers load the modules
#                                       again; old workers finish their requests)
#   tools/nginx.sh stop DIR             graceful stop (`nginx -s quit`), then waits
#
# CONFIG defaults to DIR/tide.yaml, written when missing for the embedded
# store (DIR/tide.db) and the example aggregates. Environment (optional):
#   TIDE_NGINX_PORT      port on 127.0.0.1 (default: a free one)
#   TIDE_NGINX_WORKERS   worker_processes (default: auto)
#   TIDE_NGINX_MAX_BODY  client_max_body_size (default: 1m)
#   TIDE_NGINX_ACCESS_LOG  access_log target (default: off)
#   TIDE_NGINX_INIT=0    skip `tide init` (tables or schema made elsewhere)
#   TIDE_NGINX_BIN       the nginx binary (default: nginx; e.g. openresty)
#   TIDE_NGINX_MODULES   folder of Debian's dynamic modules (default:
#                        /usr/share/nginx/modules; absent = built in, as in OpenResty)
# nginx loads build/lua/tide/*.so (the plain build) and lua/ of this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
cmd=${1:?usage: nginx.sh start|reload|stop DIR [CONFIG]}
dir=${2:?usage: nginx.sh start|reload|stop DIR [CONFIG]}
unset LD_PRELOAD  # nginx and the plain build never run under the sanitizer runtime
unset NGINX       # nginx would take it for inherited sockets
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

nginx_cmd() { "${TIDE_NGINX_BIN:-nginx}" -p "$dir" -c conf/nginx.conf -e "$dir/logs/error.log" "$@"; }

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

render() { # config port
  mkdir -p "$dir/conf" "$dir/logs" "$dir/tmp"
  # As root, nginx's workers would run as nobody and could not write the
  # store: run them as the owner of the config's folder instead.
  local user=""
  [ "$(id -u)" = 0 ] && user=${TIDE_NGINX_USER:-$(stat -c %U "$(dirname "$1")")}
  TIDE_NGINX_USER=$user TIDE_NGINX_CONFIG=$1 TIDE_NGINX_LISTEN="127.0.0.1:$2" TIDE_NGINX_PREFIX="$dir" TIDE_NGINX_ROOT="$ROOT" \
  TIDE_NGINX_TEMPLATE="$ROOT/examples/nginx/nginx.conf" TIDE_NGINX_OUT="$dir/conf/nginx.conf.new" \
  LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/build/lua/?.so;;" \
    luajit -e 'os.exit(require("tide.http.conf").main())'
}

running() { [ -f "$dir/logs/nginx.pid" ] && kill -0 "$(cat "$dir/logs/nginx.pid")" 2>/dev/null; }

case "$cmd" in
start)
  [ -x build/tide ] && [ -f build/lua/tide/core.so ] || { echo "nginx.sh: build tide first (make)" >&2; exit 1; }
  if running; then echo "nginx.sh: nginx already runs with prefix $dir (pid $(cat "$dir/logs/nginx.pid"))" >&2; exit 1; fi
  config=${3:-$dir/tide.yaml}
  if [ ! -f "$config" ]; then
    if [ -n "${3:-}" ]; then echo "nginx.sh: $config: no such file" >&2; exit 2; fi
    cat >"$config" <<YAML
# written by tools/nginx.sh: the embedded store next to this file
store: sqlite
sqlite:
  path: ./tide.db
aggregates: $ROOT/aggregates
projections: $ROOT/projections
YAML
  fi
  config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
  port=${TIDE_NGINX_PORT:-$(free_port)}
  echo "$config" >"$dir/config"
  echo "$port" >"$dir/port"
  render "$config" "$port" >"$dir/store" || exit 2
  mv "$dir/conf/nginx.conf.new" "$dir/conf/nginx.conf"
  # the tables (DynamoDB) or the schema (SQLite), if missing
  if [ "${TIDE_NGINX_INIT:-1}" != 0 ] && ! out=$(build/tide init --config "$config" 2>&1); then
    echo "nginx.sh: tide init failed: $out" >&2
    exit 1
  fi
  nginx_cmd -t -q || { echo "nginx.sh: the rendered $dir/conf/nginx.conf is refused (above)" >&2; exit 1; }
  nginx_cmd
  url="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null "$url/health" 2>/dev/null; then
      echo "$url" >"$dir/url"
      echo "$url"
      exit 0
    fi
    sleep 0.1
  done
  echo "nginx.sh: $url/health did not answer 200 within 10 s: $(curl -sS "$url/health" 2>&1)" >&2
  echo "nginx.sh: $dir/logs/error.log:" >&2
  tail -20 "$dir/logs/error.log" >&2 || true
  nginx_cmd -s stop 2>/dev/null || true
  exit 1
  ;;
reload)
  running || { echo "nginx.sh: no nginx runs with prefix $dir" >&2; exit 1; }
  render "$(cat "$dir/config")" "$(cat "$dir/port")" >"$dir/store" || exit 2
  mv "$dir/conf/nginx.conf.new" "$dir/conf/nginx.conf"
  nginx_cmd -s reload
  ;;
stop)
  running || exit 0
  pid=$(cat "$dir/logs/nginx.pid")
  nginx_cmd -s quit 2>/dev/null || kill -QUIT "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  echo "nginx.sh: nginx (pid $pid) did not finish within 10 s: stopping it now" >&2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  ;;
*) echo "usage: nginx.sh start|reload|stop DIR [CONFIG]" >&2; exit 2 ;;
esac
