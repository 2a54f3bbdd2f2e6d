#!/usr/bin/env bash
# kafka-local.sh — a real single-node Apache Kafka broker (KRaft, broker+controller in one JVM,
# transactions enabled) assembled from Maven Central jars. No Docker, no tarball download.
#
#   kafka-local.sh start    # idempotent: fetch jars once, format storage once, start, wait until ready
#   kafka-local.sh stop     # SIGTERM, wait for a clean shutdown
#   kafka-local.sh status   # exit 0 and print the bootstrap address if running and answering
#
# Environment (all optional):
#   OUTFLOW_LOCAL_CACHE download cache shared by the local stack (default: <repo>/deploy/local/.cache);
#                       jars go to $OUTFLOW_LOCAL_CACHE/kafka/kafka-<ver>/libs, maven's repository to
#                       $OUTFLOW_LOCAL_CACHE/m2
#   OUTFLOW_LOCAL_RUN   runtime root; this broker uses $OUTFLOW_LOCAL_RUN/kafka for server.properties,
#                       data/, broker.log, broker.pid (default: <repo>/deploy/local/.run)
#   KAFKA_VERSION       kafka_2.13 version from Maven Central (default 4.4.0)
#   KAFKA_HOST          listen host (default 127.0.0.1)
#   KAFKA_PORT          client listener port (default 29092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default 29093)
#   KAFKA_HEAP          JVM heap, used for -Xmx and -Xms (default 512m; 256m works, 128m OOMs at startup)
#   KAFKA_START_TIMEOUT seconds to wait for readiness (default 90)
#   KAFKA_WARMUP        1 (default) = before reporting ready, also run one transactional
#                       init (creates __transaction_state) and a group-coordinator lookup
#                       (creates __consumer_offsets), so the first test does not pay for it
#   JAVA                java binary (default: java on PATH; needs Java >= 17)
#   MVN                 maven binary (default: mvn)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_LOCAL_CACHE="$(realpath -m "${OUTFLOW_LOCAL_CACHE:-$SCRIPT_DIR/../.cache}")/kafka"
KAFKA_LOCAL_M2="$(realpath -m "${OUTFLOW_LOCAL_CACHE:-$SCRIPT_DIR/../.cache}")/m2"
KAFKA_LOCAL_DIR="$(realpath -m "${OUTFLOW_LOCAL_RUN:-$SCRIPT_DIR/../.run}")/kafka"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-29092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-29093}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_WARMUP="${KAFKA_WARMUP:-1}"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"

LIBS="$KAFKA_LOCAL_CACHE/kafka-$KAFKA_VERSION/libs"
PROBE_DIR="$KAFKA_LOCAL_CACHE/kafka-$KAFKA_VERSION/probe"
PROPS="$KAFKA_LOCAL_DIR/server.properties"
DATA="$KAFKA_LOCAL_DIR/data"
LOG="$KAFKA_LOCAL_DIR/broker.log"
PIDFILE="$KAFKA_LOCAL_DIR/broker.pid"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"

log() { echo "kafka-local: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

java_major() {
  "$JAVA" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# ---------------------------------------------------------------- jars (once per version)
ensure_jars() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  command -v "$MVN" >/dev/null || die "maven ($MVN) not found; apt-get install maven"
  [[ -f "$SCRIPT_DIR/pom.xml" ]] || die "pom.xml not found next to $0"
  log "fetching kafka_2.13:$KAFKA_VERSION jars from Maven Central into $LIBS"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp" "$KAFKA_LOCAL_CACHE"
  local t0=$SECONDS
  "$MVN" -B -q -Dstyle.color=never -f "$SCRIPT_DIR/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      -Dmaven.repo.local="$KAFKA_LOCAL_M2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$KAFKA_LOCAL_CACHE/mvn-$KAFKA_VERSION.log" 2>&1 \
      || { rm -rf "$tmp"; die "maven dependency download failed:
$(tail -n 30 "$KAFKA_LOCAL_CACHE/mvn-$KAFKA_VERSION.log")"; }
  ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after download"; }
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"; touch "$LIBS/.complete"
  log "jars ready in $((SECONDS - t0))s ($(du -sh "$LIBS" | cut -f1), $(ls "$LIBS"/*.jar | wc -l) jars)"
}

# Readiness probe: a real AdminClient round trip (DescribeCluster + ListTopics), optionally
# followed by a transactional InitProducerId and a FindCoordinator(GROUP) as warm-up.
ensure_probe() {
  if [[ -f "$PROBE_DIR/KafkaLocalProbe.class" ]]; then return 0; fi
  mkdir -p "$PROBE_DIR"
  cat > "$PROBE_DIR/KafkaLocalProbe.java" <<'JAVA'
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaLocalProbe {
  public static void main(String[] a) throws Exception {
    String bootstrap = a[0];
    long deadline = System.currentTimeMillis() + Long.parseLong(a[1]) * 1000L;
    boolean warmup = a.length > 2 && a[2].equals("1");
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    p.put("request.timeout.ms", "3000");
    p.put("default.api.timeout.ms", "4000");
    p.put("reconnect.backoff.ms", "50");
    p.put("reconnect.backoff.max.ms", "250");
    p.put("socket.connection.setup.timeout.ms", "1000");
    p.put("socket.connection.setup.timeout.max.ms", "1000");
    Exception last = null;
    try (Admin admin = Admin.create(p)) {
      while (true) {
        try {
          DescribeClusterResult r = admin.describeCluster();
          Collection<Node> nodes = r.nodes().get(4, TimeUnit.SECONDS);
          String cluster = r.clusterId().get(4, TimeUnit.SECONDS);
          Set<String> topics = admin.listTopics(new ListTopicsOptions().listInternal(true))
              .names().get(4, TimeUnit.SECONDS);
          if (!nodes.isEmpty()) {
            System.out.println("ready cluster.id=" + cluster + " brokers=" + nodes.size() + " topics=" + topics.size());
            break;
          }
        } catch (Exception e) { last = e; }
        if (System.currentTimeMillis() > deadline) {
          System.err.println("not ready: " + last);
          System.exit(1);
        }
        Thread.sleep(100);
      }
      if (!warmup) return;
      long t0 = System.currentTimeMillis();
      // creates + loads __consumer_offsets
      admin.listConsumerGroupOffsets("kafka-local-warmup").partitionsToOffsetAndMetadata()
          .get(Math.max(1000, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
      Properties pp = new Properties();
      pp.put("bootstrap.servers", bootstrap);
      pp.put("transactional.id", "kafka-local-warmup");
      pp.put("max.block.ms", String.valueOf(Math.max(1000, deadline - System.currentTimeMillis())));
      try (KafkaProducer<byte[], byte[]> prod =
               new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
        prod.initTransactions();  // creates + loads __transaction_state
      }
      System.out.println("warm-up (group + transaction coordinators) " + (System.currentTimeMillis() - t0) + " ms");
    }
  }
}
JAVA
  if command -v javac >/dev/null; then
    javac -nowarn -cp "$LIBS/*" -d "$PROBE_DIR" "$PROBE_DIR/KafkaLocalProbe.java" \
      || die "javac of the readiness probe failed"
  fi
}

run_probe() {  # $1 = timeout seconds, $2 = warmup 0|1
  local cp="$LIBS/*"
  if [[ -f "$PROBE_DIR/KafkaLocalProbe.class" ]]; then
    "$JAVA" -Xmx64m -XX:TieredStopAtLevel=1 -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
      -cp "$PROBE_DIR:$cp" KafkaLocalProbe "$BOOTSTRAP" "$1" "$2"
  else  # JRE without javac: single-file source launcher
    "$JAVA" -Xmx64m -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
      -cp "$cp" "$PROBE_DIR/KafkaLocalProbe.java" "$BOOTSTRAP" "$1" "$2"
  fi
}

# ---------------------------------------------------------------- config + storage (once)
write_props() {
  mkdir -p "$KAFKA_LOCAL_DIR"
  cat > "$PROPS.tmp" <<EOF
# generated by kafka-local.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.state.log.num.partitions=4
offsets.topic.num.partitions=4
EOF
  mv "$PROPS.tmp" "$PROPS"
}

ensure_storage() {
  if [[ -f "$DATA/meta.properties" ]]; then return 0; fi
  local cid
  cid="$("$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | head -c 22)"
  [[ ${#cid} -eq 22 ]] || die "could not generate a cluster id"
  log "formatting $DATA (cluster.id=$cid)"
  "$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cid" -c "$PROPS" >>"$LOG" 2>&1 \
    || die "storage format failed, see $LOG"
}

# ---------------------------------------------------------------- process helpers
broker_pid() {  # prints the pid if our broker is alive
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  # guard against pid reuse: must be a kafka.Kafka JVM started with our properties file
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $PROPS" || return 1
  echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null; }

cmd_start() {
  local pid
  if pid="$(broker_pid)"; then
    if run_probe 10 0 >/dev/null 2>&1; then
      log "already running (pid $pid)"; echo "$BOOTSTRAP"; return 0
    fi
    die "pid $pid is alive but not answering on $BOOTSTRAP; see $LOG (try: $0 stop)"
  fi
  local major; major="$(java_major)"
  [[ -n "$major" && "$major" -ge 17 ]] || die "Java >= 17 required (found: ${major:-none}); set JAVA="
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_in_use "$p" && die "port $KAFKA_HOST:$p already in use by another process"
  done
  ensure_jars
  ensure_probe
  write_props
  ensure_storage
  local t0; t0=$(date +%s%N)
  # setsid: own session/process group, so the broker outlives the calling shell/job. setsid may
  # fork (when the caller leads its process group), so the process writes its own pid, then execs.
  rm -f "$PIDFILE"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "$JAVA" -Xmx"$KAFKA_HEAP" -Xms"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      -Dorg.slf4j.simpleLogger.showDateTime=true \
      -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
      -cp "$LIBS/*" kafka.Kafka "$PROPS" >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 100); do [ -s "$PIDFILE" ] && break; sleep 0.05; done
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  log "started pid $pid (heap $KAFKA_HEAP), log: $LOG; waiting for a real Kafka request to succeed"
  if ! out="$(run_probe "$KAFKA_START_TIMEOUT" "$KAFKA_WARMUP" 2>&1)"; then
    log "$out"
    kill -0 "$pid" 2>/dev/null || die "broker exited during startup; tail of $LOG:
$(tail -n 30 "$LOG")"
    die "broker not ready after ${KAFKA_START_TIMEOUT}s (still running as pid $pid); see $LOG"
  fi
  kill -0 "$pid" 2>/dev/null || die "broker exited; see $LOG"
  log "$out"
  local ds=$(( ($(date +%s%N) - t0) / 100000000 ))
  log "ready after $((ds / 10)).$((ds % 10))s"
  echo "$BOOTSTRAP"
}

cmd_stop() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PIDFILE"; log "not running"; return 0
  fi
  log "stopping pid $pid (SIGTERM)"
  kill -TERM "$pid"
  local i
  for ((i = 0; i < 600; i++)); do  # up to 60s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after 60s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$PIDFILE"
  log "stopped after $((i / 10)).$((i % 10))s"
}

cmd_status() {
  local pid
  if ! pid="$(broker_pid)"; then log "stopped"; return 3; fi
  if out="$(run_probe 5 0 2>&1)"; then
    log "running pid=$pid ${out}"; echo "$BOOTSTRAP"
  else
    log "running pid=$pid but NOT answering on $BOOTSTRAP: $out"; return 1
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  wipe) cmd_stop; rm -rf "$DATA"; log "data removed" ;;
  *) echo "usage: $0 start|stop|status|restart|wipe" >&2; exit 2 ;;
esac
