#!/usr/bin/env bash
# registry-local.sh start|stop|status|wipe|pid
#
# Runs a real Apicurio Registry (3.x, Quarkus fast-jar distribution published on Maven Central as
# io.apicurio:apicurio-registry-app:<version>:tar.gz:all) on loopback, with in-memory H2 storage.
# It speaks the Confluent Schema Registry REST API under /apis/ccompat/v7.
#
# On `start` and `status` the ONLY thing printed on stdout is the base URL for Confluent-compatible
# clients (e.g. http://127.0.0.1:28081/apis/ccompat/v7); everything else goes to stderr, so
#   URL=$(./registry-local.sh start)
# works.
#
# Environment (all optional):
#   OUTFLOW_LOCAL_CACHE  download cache shared by the local stack (default: <repo>/deploy/local/.cache);
#                        the unpacked dist goes to $OUTFLOW_LOCAL_CACHE/registry, maven's repo to .../m2
#   OUTFLOW_LOCAL_RUN    runtime root; PID file and log in $OUTFLOW_LOCAL_RUN/registry
#   REGISTRY_HOST        bind address                        default: 127.0.0.1
#   REGISTRY_PORT        HTTP port                           default: 28081
#   REGISTRY_MGMT_PORT   Quarkus management (health/metrics) port, bound to REGISTRY_HOST
#                        default: 28082 (Quarkus' own default is 0.0.0.0:9000)
#   APICURIO_VERSION     default: 3.3.3 when a Java >= 21 is found, else 2.6.13.Final (Java 17)
#   REGISTRY_JAVA        java binary to use (default: first Java >= 21 found; see find_java)
#   REGISTRY_XMX         max heap                            default: 256m
#   REGISTRY_JAVA_OPTS   extra JVM / -D options appended to the command line
#   REGISTRY_START_TIMEOUT seconds to wait for the API       default: 180
#   MVN                  maven binary                        default: mvn
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="$(realpath -m "${OUTFLOW_LOCAL_CACHE:-$SCRIPT_DIR/../.cache}")"
CACHE_DIR="$CACHE_ROOT/registry"
RUN_DIR="$(realpath -m "${OUTFLOW_LOCAL_RUN:-$SCRIPT_DIR/../.run}")/registry"
HOST="${REGISTRY_HOST:-127.0.0.1}"
PORT="${REGISTRY_PORT:-28081}"
MGMT_PORT="${REGISTRY_MGMT_PORT:-28082}"
# Pick the registry by the Java found: 3.x needs Java 21+, 2.6.x runs on Java 17.
any_java21() {
  local c v
  for c in ${REGISTRY_JAVA:-} ${JAVA_HOME:+$JAVA_HOME/bin/java} /usr/lib/jvm/*/bin/java $(command -v java 2>/dev/null); do
    [ -x "$c" ] || continue
    v="$("$c" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = \([0-9][0-9]*\).*/\1/p' | head -1)"
    [ -n "$v" ] && [ "$v" -ge 21 ] && return 0
  done
  return 1
}
if [ -z "${APICURIO_VERSION:-}" ]; then
  if any_java21; then APICURIO_VERSION=3.3.3; else APICURIO_VERSION=2.6.13.Final; fi
fi
VERSION="$APICURIO_VERSION"
XMX="${REGISTRY_XMX:-256m}"
START_TIMEOUT="${REGISTRY_START_TIMEOUT:-180}"
MVN="${MVN:-mvn}"

DIST_DIR="$CACHE_DIR/apicurio-registry-$VERSION"
PID_FILE="$RUN_DIR/registry.pid"
LOG_FILE="$RUN_DIR/registry.log"
BASE_URL="http://$HOST:$PORT/apis/ccompat/v7"

log() { echo "registry-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

java_major() { # prints the feature version of a java binary, or nothing
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9][0-9]*\).*/\1/p' | head -1
}

find_java() {
  local need=21 c v
  local candidates=()
  case "$VERSION" in 2.*) need=17 ;; esac
  if [ -n "${REGISTRY_JAVA:-}" ]; then # explicit choice: use it or fail
    v="$(java_major "$REGISTRY_JAVA" || true)"
    [ -n "$v" ] && [ "$v" -ge "$need" ] || die "REGISTRY_JAVA=$REGISTRY_JAVA is not a Java >= $need"
    echo "$REGISTRY_JAVA"; return 0
  fi
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME/bin/java")
  case "$VERSION" in
    2.*) # 2.6.x is Quarkus 3.15: the default Java 17 is fine
         command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)") ;;
    *)   candidates+=(/usr/lib/jvm/temurin-25-jdk-amd64/bin/java) ;;
  esac
  for c in /usr/lib/jvm/*/bin/java; do candidates+=("$c"); done
  command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
  for c in "${candidates[@]}"; do
    [ -x "$c" ] || continue
    v="$(java_major "$c")"
    if [ -n "$v" ] && [ "$v" -ge "$need" ]; then echo "$c"; return 0; fi
  done
  die "no Java >= $need found for Apicurio $VERSION; set REGISTRY_JAVA (or APICURIO_VERSION=2.6.13.Final, which runs on Java 17)"
}

api_ok() { # a real API call, not just an open port
  curl -fsS -m 5 -o /dev/null "$BASE_URL/subjects" 2>/dev/null
}

running_pid() { # prints the PID if our server process is alive
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # guard against PID reuse: it must be our quarkus-run.jar
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -E "quarkus-run\.jar|-runner\.jar" || return 1
  echo "$pid"
}

launcher_in() { # 3.x: fast-jar quarkus-run.jar; 2.x: legacy-jar <name>-runner.jar + lib/
  local j
  for j in "$1/quarkus-run.jar" "$1"/*-runner.jar; do
    [ -f "$j" ] && { echo "$j"; return 0; }
  done
  return 1
}

fetch() {
  if [ -f "$DIST_DIR/.complete" ] && launcher_in "$DIST_DIR" >/dev/null; then return 0; fi
  command -v "$MVN" >/dev/null 2>&1 || die "maven ($MVN) not found"
  log "fetching io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all from Maven Central into $CACHE_DIR ..."
  mkdir -p "$CACHE_DIR"
  local tmp="$DIST_DIR.tmp.$$" t0 t1
  rm -rf "$tmp"
  t0=$(date +%s)
  "$MVN" -B -q -f "$SCRIPT_DIR/pom.xml" \
    -Dmaven.repo.local="$CACHE_ROOT/m2" \
    -Dapicurio.version="$VERSION" \
    -Dunpack.dir="$tmp" \
    dependency:unpack >"$CACHE_DIR/fetch.log" 2>&1 ||
    { cat "$CACHE_DIR/fetch.log" >&2; rm -rf "$tmp"; die "maven download failed (see above)"; }
  launcher_in "$tmp" >/dev/null || { rm -rf "$tmp"; die "unexpected archive layout (no quarkus-run.jar / *-runner.jar)"; }
  rm -rf "$DIST_DIR"
  mv "$tmp" "$DIST_DIR"
  touch "$DIST_DIR/.complete"
  t1=$(date +%s)
  log "fetched in $((t1 - t0)) s ($(du -sh "$DIST_DIR" | cut -f1) unpacked)"
}

port_busy() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

start() {
  local pid
  if pid="$(running_pid)"; then
    if api_ok; then log "already running (pid $pid)"; echo "$BASE_URL"; return 0; fi
    log "pid $pid alive but API not answering yet; waiting"
  else
    rm -f "$PID_FILE"
    port_busy "$PORT" && die "port $HOST:$PORT is already in use by another process"
    port_busy "$MGMT_PORT" && die "management port $HOST:$MGMT_PORT is already in use by another process"
    local java launcher
    java="$(find_java)"
    fetch
    launcher="$(launcher_in "$DIST_DIR")"
    mkdir -p "$RUN_DIR"
    rm -f "$PID_FILE"
    log "starting Apicurio Registry $VERSION with $java (-Xmx$XMX); log: $LOG_FILE"
    # shellcheck disable=SC2086
    (
      cd "$RUN_DIR"
      # setsid may fork: the process writes its own pid, then execs the JVM
      exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" nohup "$java" "-Xmx$XMX" \
        -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$PORT" \
        -Dquarkus.management.host="$HOST" -Dquarkus.management.port="$MGMT_PORT" \
        -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
        -Dquarkus.http.access-log.enabled=false \
        ${REGISTRY_JAVA_OPTS:-} \
        -jar "$launcher" >"$LOG_FILE" 2>&1 </dev/null
    ) &
    for _ in $(seq 1 100); do [ -s "$PID_FILE" ] && break; sleep 0.05; done
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  fi
  local t0 now; t0=$(date +%s)
  while :; do
    if api_ok; then
      now=$(date +%s)
      log "ready after ~$((now - t0)) s (pid $pid)"
      echo "$BASE_URL"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      tail -n 40 "$LOG_FILE" >&2 || true
      die "server exited during startup"
    fi
    now=$(date +%s)
    if [ $((now - t0)) -ge "$START_TIMEOUT" ]; then
      tail -n 40 "$LOG_FILE" >&2 || true
      stop
      die "API did not answer within $START_TIMEOUT s"
    fi
    sleep 0.25
  done
}

stop() {
  local pid i
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop after 30 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if api_ok; then log "running (pid $pid, Apicurio $VERSION)"; echo "$BASE_URL"; return 0; fi
    log "process $pid alive but API not answering"
    return 2
  fi
  log "stopped"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  wipe) stop ;;  # in-memory storage: stopping forgets everything
  pid) running_pid ;;  # for fault tests: SIGSTOP/SIGCONT make the registry unresponsive and back
  *) echo "usage: $0 start|stop|status|wipe|pid" >&2; exit 64 ;;
esac
