#!/usr/bin/env bash
# stack.sh up|down|status|wipe — the whole local stack outflow runs against, on loopback:
# Apache Kafka 4.x (KRaft, transactions), Apicurio Registry (Confluent-compatible API) and
# SecantusDB (MongoDB wire protocol, transactions, change streams, --sync-on-commit).
#
#   eval "$(deploy/local/stack.sh up)"   # starts what is not running, waits until each answers a real
#                                        # request, prints the OUTFLOW_* exports on stdout
#   deploy/local/stack.sh status         # prints the exports if all three answer, exit 1 otherwise
#   deploy/local/stack.sh down           # stops all three (data is kept)
#   deploy/local/stack.sh logs [N]       # the last N (20) lines of each server's log
#   deploy/local/stack.sh wipe           # stops all three and removes their data
#   deploy/local/stack.sh deps           # only installs the Debian packages the build needs
#
# Downloads and builds are cached in $OUTFLOW_LOCAL_CACHE (default deploy/local/.cache, git-ignored);
# logs, pids and data live in $OUTFLOW_LOCAL_RUN (default deploy/local/.run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OUTFLOW_LOCAL_CACHE="${OUTFLOW_LOCAL_CACHE:-$HERE/.cache}"
export OUTFLOW_LOCAL_RUN="${OUTFLOW_LOCAL_RUN:-$HERE/.run}"
SERVICES=(kafka registry mongo)

log() { echo "stack: $*" >&2; }

script_of() { echo "$HERE/$1/$1-local.sh"; }

# Debian packages the build and the servers need; installed only when missing.
ensure_packages() {
  local need=() p
  for p in cmake pkg-config libssl-dev openssl zlib1g-dev libcurl4-openssl-dev libsasl2-dev maven curl python3-venv g++ make; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${need[*]}"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${need[@]}" >&2
}

exports() {  # $1 kafka $2 registry $3 mongo
  echo "export OUTFLOW_KAFKA_BROKERS=$1"
  # the same broker's SASL_PLAINTEXT listener (SCRAM-SHA-256/512, PLAIN) and SSL listener with the
  # CA that signed its certificate (see kafka/kafka-local.sh)
  echo "export OUTFLOW_KAFKA_SASL_BROKERS=$("$(script_of kafka)" sasl-address)"
  echo "export OUTFLOW_KAFKA_TLS_BROKERS=$("$(script_of kafka)" tls-address)"
  echo "export OUTFLOW_KAFKA_TLS_CA=$("$(script_of kafka)" tls-ca)"
  echo "export OUTFLOW_REGISTRY_URL=$2"
  echo "export OUTFLOW_MONGO_URI='$3'"
}

# A port inside the kernel's ephemeral range can be taken by any client socket or any listener
# bound to port 0 (outflow's own test and chaos processes do that): a restarted server then finds
# its port in use. Say so before it happens.
warn_ephemeral_ports() {
  local lo hi p
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || return 0
  for p in "${KAFKA_PORT:-}" "${KAFKA_CONTROLLER_PORT:-}" "${KAFKA_SASL_PORT:-}" "${KAFKA_TLS_PORT:-}" \
      "${REGISTRY_PORT:-}" "${REGISTRY_MGMT_PORT:-}" "${MONGO_PORT:-}"; do
    if [ -n "$p" ] && [ "$p" -ge "$lo" ] && [ "$p" -le "$hi" ]; then
      log "warning: port $p is in the ephemeral range $lo-$hi: a restart may find it taken (pick ports below $lo)"
    fi
  done
  if [ -n "${KAFKA_PORT:-}" ] && [ -z "${KAFKA_SASL_PORT:-}" ] && [ $((KAFKA_PORT + 3)) -ge "$lo" ] \
      && [ "$KAFKA_PORT" -le "$hi" ]; then
    log "warning: Kafka's SASL/TLS ports ($((KAFKA_PORT + 2)), $((KAFKA_PORT + 3))) are in the ephemeral range $lo-$hi"
  fi
}

up() {
  ensure_packages
  warn_ephemeral_ports
  mkdir -p "$OUTFLOW_LOCAL_RUN"
  local t0=$SECONDS s pids=() failed=0
  for s in "${SERVICES[@]}"; do
    "$(script_of "$s")" start >"$OUTFLOW_LOCAL_RUN/$s.addr" 2>"$OUTFLOW_LOCAL_RUN/$s.start.log" &
    pids+=($!)
  done
  local i=0
  for s in "${SERVICES[@]}"; do
    if ! wait "${pids[$i]}"; then
      failed=1; log "$s failed to start:"; sed 's/^/  /' "$OUTFLOW_LOCAL_RUN/$s.start.log" >&2
    fi
    i=$((i + 1))
  done
  [ "$failed" = 0 ] || { log "not all services came up"; exit 1; }
  log "up in $((SECONDS - t0)) s"
  # a broker started by an older kafka-local.sh lacks the SASL/SSL listeners: say so
  grep -h "restart\` adds" "$OUTFLOW_LOCAL_RUN/kafka.start.log" >&2 || true
  exports "$(cat "$OUTFLOW_LOCAL_RUN/kafka.addr")" "$(cat "$OUTFLOW_LOCAL_RUN/registry.addr")" \
    "$(cat "$OUTFLOW_LOCAL_RUN/mongo.addr")"
}

status() {
  local s addr=() rc=0
  for s in "${SERVICES[@]}"; do
    if a="$("$(script_of "$s")" status 2>/dev/null)"; then addr+=("$a"); log "$s: up ($a)"
    else rc=1; addr+=(""); log "$s: DOWN"; fi
  done
  [ "$rc" = 0 ] && exports "${addr[@]}"
  return "$rc"
}

down() {
  local s
  for s in "${SERVICES[@]}"; do "$(script_of "$s")" stop || true; done
}

# The last lines of each server's log (for a failed CI run: what the servers said last).
logs() {
  local lines="${1:-20}" f
  for f in "$OUTFLOW_LOCAL_RUN"/kafka/broker.log "$OUTFLOW_LOCAL_RUN"/registry/registry.log \
      "$OUTFLOW_LOCAL_RUN"/mongo/server.log; do
    [ -f "$f" ] || continue
    echo "--- last $lines lines of $f"
    tail -n "$lines" "$f" | cut -c1-300
  done
}

wipe() {
  local s
  for s in "${SERVICES[@]}"; do "$(script_of "$s")" wipe 2>/dev/null || "$(script_of "$s")" stop || true; done
}

case "${1:-}" in
  deps) ensure_packages ;;
  up) up ;;
  down) down ;;
  status) status ;;
  wipe) wipe ;;
  logs) logs "${2:-20}" ;;
  *) echo "usage: $0 up|down|status|logs [lines]|wipe|deps" >&2; exit 2 ;;
esac
