#!/usr/bin/env bash
# mongo-local.sh start|stop|status|wipe|kill|pid — a MongoDB-wire-compatible server with multi-document
# transactions and change streams (SecantusDB on WiredTiger, single-node replica set "secantus").
#
# On `start`/`status` the ONLY thing on stdout is the connection URI; logs go to stderr.
#   MONGO_IMPL=rs (default): secantus-mdb from crates.io (Rust); built once (~4.5 min) into the cache
#   MONGO_IMPL=py          : SecantusDB from PyPI (Python, single-core bound; installs in ~15 s)
# --sync-on-commit is always passed: without it a kill -9 loses acknowledged commits.
#
# Environment (all optional):
#   OUTFLOW_LOCAL_CACHE  download/build cache (default: <repo>/deploy/local/.cache)
#   OUTFLOW_LOCAL_RUN    pid files, logs, data (default: <repo>/deploy/local/.run)
#   MONGO_HOST / MONGO_PORT  listen address (default 127.0.0.1:28017)
#   MONGO_EXTRA_ARGS     appended to the server command line
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$(realpath -m "${OUTFLOW_LOCAL_CACHE:-$SCRIPT_DIR/../.cache}")"
RUN="$(realpath -m "${OUTFLOW_LOCAL_RUN:-$SCRIPT_DIR/../.run}")/mongo"
IMPL="${MONGO_IMPL:-rs}"
HOST="${MONGO_HOST:-127.0.0.1}"
PORT="${MONGO_PORT:-28017}"
RS_VERSION=0.5.3-beta.196   # name the version: a bare `cargo install secantus-mdb` picks an empty 0.0.0
PY_VERSION=0.7.0b3
VENV="$CACHE/mongo/venv"
RS_BIN="$CACHE/mongo/secantus-$RS_VERSION/bin/secantusd-rs"
PIDFILE="$RUN/server.pid"
LOG="$RUN/server.log"
URI="mongodb://$HOST:$PORT/?replicaSet=secantus"

log() { echo "mongo-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# A real round trip: `hello` must answer with the replica-set name (transactions need one).
ping_ok() {
  "$VENV/bin/python" - "$HOST" "$PORT" <<'PY' 2>/dev/null
import sys, pymongo
c = pymongo.MongoClient(host=sys.argv[1], port=int(sys.argv[2]), directConnection=True,
                        serverSelectionTimeoutMS=500)
assert c.admin.command("hello").get("setName")
PY
}

install() {
  mkdir -p "$CACHE/mongo"
  if ! "$VENV/bin/python" -c 'import pymongo' 2>/dev/null; then
    log "creating the readiness-probe venv (pymongo)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'pymongo==4.20.1'
  fi
  if [ "$IMPL" = py ] && [ ! -x "$VENV/bin/secantusd-py" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      "SecantusDB==$PY_VERSION" 'shapely==2.2.0' 's2sphere==0.2.5' \
      'python-dateutil==4.0.0' 'numpy==2.4.6' 'dnspython==2.9.2'
  fi
  if [ "$IMPL" = rs ] && [ ! -x "$RS_BIN" ]; then
    log "building secantus-mdb $RS_VERSION once (~4.5 min on 2 cores) into $CACHE/mongo"
    local root="$CACHE/mongo/secantus-$RS_VERSION"
    cargo install "secantus-mdb@$RS_VERSION" --root "$root" --ignore-rust-version --locked -q \
      || cargo install "secantus-mdb@$RS_VERSION" --root "$root" --ignore-rust-version -q \
      || die "cargo install secantus-mdb@$RS_VERSION failed"
  fi
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--port $PORT" || return 1
  echo "$pid"
}

start() {
  local pid
  install
  if pid="$(running_pid)"; then
    ping_ok && { log "already running (pid $pid)"; echo "$URI"; return 0; }
    die "pid $pid alive but not answering on $HOST:$PORT; see $LOG"
  fi
  port_busy && die "port $HOST:$PORT already in use by another process"
  mkdir -p "$RUN"
  local bin storage
  case "$IMPL" in
    rs) bin="$RS_BIN"; storage="$RUN/data"; mkdir -p "$storage" ;;
    py) bin="$VENV/bin/secantusd-py"; storage=":memory:" ;;
    *) die "MONGO_IMPL must be rs or py" ;;
  esac
  # shellcheck disable=SC2086
  # setsid may fork: the process writes its own pid, then execs the server
  rm -f "$PIDFILE"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "$bin" --host "$HOST" --port "$PORT" --storage-path "$storage" --log-level WARNING \
    --sync-on-commit ${MONGO_EXTRA_ARGS:-} >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 100); do [ -s "$PIDFILE" ] && break; sleep 0.05; done
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; die "server exited during startup"; }
    if ping_ok; then log "ready (pid $pid, $IMPL, data $storage)"; echo "$URI"; return 0; fi
    sleep 0.2
  done
  tail -n 30 "$LOG" >&2
  die "server not answering after 30 s"
}

stop() {
  local pid i
  if ! pid="$(running_pid)"; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored SIGTERM for 30 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$PIDFILE"
  log "stopped (pid $pid)"
}

# For fault tests: SIGKILL, as a crash would; `start` brings the server back on the same data.
crash() {
  local pid
  if ! pid="$(running_pid)"; then log "not running"; return 0; fi
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$PIDFILE"
  log "killed (pid $pid)"
}

status() {
  local pid
  if ! pid="$(running_pid)"; then log "stopped"; return 3; fi
  ping_ok || { log "pid $pid alive but not answering"; return 1; }
  echo "$URI"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  wipe) stop; rm -rf "$RUN/data"; log "data removed" ;;
  kill) crash ;;
  pid) running_pid ;;
  *) echo "usage: $0 start|stop|status|wipe|kill|pid" >&2; exit 2 ;;
esac
