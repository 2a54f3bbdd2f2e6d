#!/usr/bin/env bash
# kafka-local.sh — a real single-node Apache Kafka broker (KRaft, broker+controller in one JVM,
# transactions enabled) assembled from Maven Central jars. No Docker, no tarball download.
#
#   kafka-local.sh start    # idempotent: fetch jars once, format storage once, start, wait until ready
#   kafka-local.sh stop     # SIGTERM, wait for a clean shutdown
#   kafka-local.sh status   # exit 0 and print the bootstrap address if running and answering
#   kafka-local.sh sasl-address  # print the SASL_PLAINTEXT listener's address (host:port)
#   kafka-local.sh tls-address   # print the SSL (TLS) listener's address (host:port)
#   kafka-local.sh tls-ca        # print the path of the CA certificate (PEM) that signed the broker's
#
# Listeners: PLAINTEXT on KAFKA_PORT (the bootstrap start/status print; everything local uses it) and
# SASL_PLAINTEXT on KAFKA_SASL_PORT (default 29094) accepting SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN for
# one user, KAFKA_SASL_USER / KAFKA_SASL_PASSWORD (local defaults `outflow` / `outflow-local-secret`).
# The SCRAM credentials are (re)written on every start through the Admin API, so a data dir formatted
# before this listener existed works too; the readiness probe then logs in with all three mechanisms.
# Controller and inter-broker traffic stay PLAINTEXT. A client configuration for the SASL listener:
#   bootstrap.servers=127.0.0.1:29094 security.protocol=SASL_PLAINTEXT sasl.mechanism=SCRAM-SHA-256
#   sasl.username=outflow sasl.password=outflow-local-secret
# And SSL on KAFKA_TLS_PORT (default 29095): the broker's certificate (SAN 127.0.0.1, localhost and
# KAFKA_HOST) is signed by a CA made once for this run dir, $OUTFLOW_LOCAL_RUN/kafka/tls/ca.pem:
#   bootstrap.servers=127.0.0.1:29095 security.protocol=SSL ssl.ca.location=<that ca.pem>
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
#   KAFKA_SASL_PORT     SASL_PLAINTEXT listener port (default KAFKA_PORT + 2: 29094)
#   KAFKA_SASL_USER     the SASL user (default outflow)
#   KAFKA_SASL_PASSWORD its password (default outflow-local-secret; no `"` or `\`, for the JAAS line)
#   KAFKA_TLS_PORT      SSL listener port (default KAFKA_PORT + 3: 29095)
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
# the secured listeners follow KAFKA_PORT (29094/29095 by default), so a second stack on other
# ports never collides with the first
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_TLS_PORT="${KAFKA_TLS_PORT:-$((KAFKA_PORT + 3))}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-outflow}"
export KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-outflow-local-secret}"  # read by the probe
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_WARMUP="${KAFKA_WARMUP:-1}"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"

LIBS="$KAFKA_LOCAL_CACHE/kafka-$KAFKA_VERSION/libs"
PROBE_BASE="$KAFKA_LOCAL_CACHE/kafka-$KAFKA_VERSION/probe"
PROPS="$KAFKA_LOCAL_DIR/server.properties"
DATA="$KAFKA_LOCAL_DIR/data"
LOG="$KAFKA_LOCAL_DIR/broker.log"
PIDFILE="$KAFKA_LOCAL_DIR/broker.pid"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
SASL_BOOTSTRAP="$KAFKA_HOST:$KAFKA_SASL_PORT"
TLS_BOOTSTRAP="$KAFKA_HOST:$KAFKA_TLS_PORT"
TLS_DIR="$KAFKA_LOCAL_DIR/tls"

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

# Readiness probe: a real AdminClient round trip (DescribeCluster + ListTopics); then, when given the
# SASL listener, (re)writes the user's SCRAM credentials and logs in there with every mechanism;
# optionally a transactional InitProducerId and a FindCoordinator(GROUP) as warm-up.
#   KafkaLocalProbe <bootstrap> <timeout s> <warmup 0|1> [<sasl bootstrap> <user>]  (password: env)
probe_source() {
  cat <<'JAVA'
import java.util.*;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaLocalProbe {
  static Properties base(String bootstrap) {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    p.put("request.timeout.ms", "3000");
    p.put("default.api.timeout.ms", "4000");
    p.put("reconnect.backoff.ms", "50");
    p.put("reconnect.backoff.max.ms", "250");
    p.put("socket.connection.setup.timeout.ms", "1000");
    p.put("socket.connection.setup.timeout.max.ms", "1000");
    return p;
  }

  static long left(long deadline) { return Math.max(1000, deadline - System.currentTimeMillis()); }

  // SCRAM credentials live in the cluster metadata: upserting them on every start is idempotent and
  // also covers a data dir formatted before the SASL listener existed.
  static void sasl(Admin admin, String bootstrap, String user, String password, long deadline) throws Exception {
    for (ScramMechanism m : new ScramMechanism[] {ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512}) {
      // one request per mechanism: the broker refuses two alterations of one user in a request
      admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(user, new ScramCredentialInfo(m, 4096), password)))
          .all().get(left(deadline), TimeUnit.MILLISECONDS);
    }
    for (String mechanism : new String[] {"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"}) {
      Properties p = base(bootstrap);
      p.put("security.protocol", "SASL_PLAINTEXT");
      p.put("sasl.mechanism", mechanism);
      String module = mechanism.equals("PLAIN") ? "org.apache.kafka.common.security.plain.PlainLoginModule"
          : "org.apache.kafka.common.security.scram.ScramLoginModule";
      p.put("sasl.jaas.config", module + " required username=\"" + user + "\" password=\"" + password + "\";");
      Exception last = null;
      try (Admin a = Admin.create(p)) {
        while (true) {  // the credentials reach the broker's metadata cache shortly after the upsert
          try { a.describeCluster().nodes().get(4, TimeUnit.SECONDS); break; } catch (Exception e) { last = e; }
          if (System.currentTimeMillis() > deadline) {
            System.err.println("SASL " + mechanism + " login of `" + user + "` at " + bootstrap + " failed: " + last);
            System.exit(1);
          }
          Thread.sleep(200);
        }
      }
    }
    System.out.println("SASL_PLAINTEXT " + bootstrap + ": `" + user + "` logs in with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN");
  }

  public static void main(String[] a) throws Exception {
    String bootstrap = a[0];
    long deadline = System.currentTimeMillis() + Long.parseLong(a[1]) * 1000L;
    boolean warmup = a.length > 2 && a[2].equals("1");
    Properties p = base(bootstrap);
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
      if (a.length > 4) sasl(admin, a[3], a[4], System.getenv("KAFKA_SASL_PASSWORD"), deadline);
      if (!warmup) return;
      long t0 = System.currentTimeMillis();
      // creates + loads __consumer_offsets
      admin.listConsumerGroupOffsets("kafka-local-warmup").partitionsToOffsetAndMetadata()
          .get(left(deadline), TimeUnit.MILLISECONDS);
      Properties pp = new Properties();
      pp.put("bootstrap.servers", bootstrap);
      pp.put("transactional.id", "kafka-local-warmup");
      pp.put("max.block.ms", String.valueOf(left(deadline)));
      try (KafkaProducer<byte[], byte[]> prod =
               new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer())) {
        prod.initTransactions();  // creates + loads __transaction_state
      }
      System.out.println("warm-up (group + transaction coordinators) " + (System.currentTimeMillis() - t0) + " ms");
    }
  }
}
JAVA
}

# One directory per version of the probe's source, so an edited probe is recompiled (atomically:
# several stacks may start at once) and a running broker's status keeps working.
PROBE_DIR="$PROBE_BASE/$(probe_source | sha1sum | cut -c1-12)"

ensure_probe() {
  if [[ -f "$PROBE_DIR/KafkaLocalProbe.class" ]] || { [[ -f "$PROBE_DIR/KafkaLocalProbe.java" ]] && ! command -v javac >/dev/null; }; then
    return 0
  fi
  local tmp="$PROBE_DIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  probe_source > "$tmp/KafkaLocalProbe.java"
  if command -v javac >/dev/null; then
    javac -nowarn -cp "$LIBS/*" -d "$tmp" "$tmp/KafkaLocalProbe.java" \
      || { rm -rf "$tmp"; die "javac of the readiness probe failed"; }
  fi
  mv -T "$tmp" "$PROBE_DIR" 2>/dev/null || rm -rf "$tmp"  # lost a race: the other copy is the same
}

run_probe() {  # $1 = timeout seconds, $2 = warmup 0|1, $3 = sasl (also set up and check SASL) or empty
  ensure_probe
  local cp="$LIBS/*" args=("$BOOTSTRAP" "$1" "$2")
  [[ "${3:-}" == sasl ]] && args+=("$SASL_BOOTSTRAP" "$KAFKA_SASL_USER")
  if [[ -f "$PROBE_DIR/KafkaLocalProbe.class" ]]; then
    "$JAVA" -Xmx64m -XX:TieredStopAtLevel=1 -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
      -cp "$PROBE_DIR:$cp" KafkaLocalProbe "${args[@]}"
  else  # JRE without javac: single-file source launcher
    "$JAVA" -Xmx64m -Dorg.slf4j.simpleLogger.defaultLogLevel=error \
      -cp "$cp" "$PROBE_DIR/KafkaLocalProbe.java" "${args[@]}"
  fi
}

# True when the running broker was started with the SASL listener (older runs were not).
has_sasl_listener() { grep -q '^listeners=.*SASL_PLAINTEXT://' "$PROPS" 2>/dev/null; }
has_tls_listener() { grep -q '^listeners=.*,SSL://' "$PROPS" 2>/dev/null; }

# ---------------------------------------------------------------- TLS: a CA of our own (once per run dir)
ensure_tls() {
  if [[ -f "$TLS_DIR/ca.pem" && -f "$TLS_DIR/broker.pem" ]]; then return 0; fi
  command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
  local tmp="$TLS_DIR.tmp.$$" san="IP:127.0.0.1,DNS:localhost"
  if [[ "$KAFKA_HOST" =~ ^[0-9.]+$ ]]; then
    [[ "$KAFKA_HOST" == 127.0.0.1 ]] || san="$san,IP:$KAFKA_HOST"
  elif [[ "$KAFKA_HOST" != localhost ]]; then san="$san,DNS:$KAFKA_HOST"; fi
  rm -rf "$tmp"; mkdir -p "$tmp"; chmod 700 "$tmp"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=outflow-local-ca" \
      -keyout "$tmp/ca.key" -out "$tmp/ca.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$KAFKA_HOST" \
      -keyout "$tmp/broker.key" -out "$tmp/broker.csr" &&
    openssl x509 -req -in "$tmp/broker.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
      -days 3650 -extfile <(printf 'subjectAltName=%s\n' "$san") -out "$tmp/broker.crt" &&
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain, in one file
    openssl pkcs8 -topk8 -nocrypt -in "$tmp/broker.key" -out "$tmp/broker.pk8"
  } >"$tmp/openssl.log" 2>&1 || die "certificate generation failed: $(tail -n 5 "$tmp/openssl.log")"
  cat "$tmp/broker.pk8" "$tmp/broker.crt" "$tmp/ca.pem" > "$tmp/broker.pem"
  rm -f "$tmp/broker.csr" "$tmp/broker.key" "$tmp/broker.pk8" "$tmp/openssl.log"
  chmod 644 "$tmp/ca.pem"
  rm -rf "$TLS_DIR"; mv "$tmp" "$TLS_DIR"
  log "made a local CA and the broker's certificate in $TLS_DIR (SAN $san)"
}

# A real TLS handshake with the broker, verified against our CA.
check_tls() {  # $1 = timeout seconds
  local i out
  for ((i = 0; i < $1 * 5; i++)); do
    if out="$(openssl s_client -connect "$TLS_BOOTSTRAP" -CAfile "$TLS_DIR/ca.pem" -verify_return_error \
        -verify_ip "$KAFKA_HOST" </dev/null 2>&1)"; then
      echo "SSL $TLS_BOOTSTRAP: certificate verified against $TLS_DIR/ca.pem"; return 0
    fi
    sleep 0.2
  done
  echo "SSL $TLS_BOOTSTRAP: no verified TLS handshake: $(grep -m1 -i 'error\|verify' <<<"$out")" >&2
  return 1
}

# ---------------------------------------------------------------- config + storage (once)
write_props() {
  mkdir -p "$KAFKA_LOCAL_DIR"
  ( umask 077; : > "$PROPS.tmp" )  # holds the PLAIN password
  cat > "$PROPS.tmp" <<EOF
# generated by kafka-local.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PORT,SSL://$KAFKA_HOST:$KAFKA_TLS_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_PLAINTEXT://$KAFKA_HOST:$KAFKA_SASL_PORT,SSL://$KAFKA_HOST:$KAFKA_TLS_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
# TLS for clients only, no client certificates: key and chain in one PEM file (see ensure_tls)
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$TLS_DIR/broker.pem
listener.name.ssl.ssl.client.auth=none
# SASL for clients only: SCRAM users are stored in the cluster metadata (the probe writes them), the
# PLAIN user is listed here
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
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
  [[ "$KAFKA_SASL_USER" =~ ^[A-Za-z0-9._-]+$ ]] || die "KAFKA_SASL_USER may hold only letters, digits, . _ -"
  [[ "$KAFKA_SASL_PASSWORD" != *[\"\\]* ]] || die "KAFKA_SASL_PASSWORD may not hold \" or \\"
  if pid="$(broker_pid)"; then
    if has_sasl_listener; then
      # also (re)writes the SCRAM credentials, so a changed KAFKA_SASL_PASSWORD applies at once
      if out="$(run_probe 20 0 sasl 2>&1)"; then
        log "already running (pid $pid); $(tail -n 1 <<<"$out")"
        has_tls_listener || log "started without the SSL listener: \`$0 restart\` adds it"
        echo "$BOOTSTRAP"; return 0
      fi
      die "pid $pid is alive but not answering on $BOOTSTRAP or $SASL_BOOTSTRAP: $out
see $LOG (try: $0 restart)"
    fi
    if run_probe 10 0 >/dev/null 2>&1; then
      log "already running (pid $pid), started without the SASL and SSL listeners: \`$0 restart\` adds them"
      echo "$BOOTSTRAP"; return 0
    fi
    die "pid $pid is alive but not answering on $BOOTSTRAP; see $LOG (try: $0 stop)"
  fi
  local major; major="$(java_major)"
  [[ -n "$major" && "$major" -ge 17 ]] || die "Java >= 17 required (found: ${major:-none}); set JAVA="
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT" "$KAFKA_TLS_PORT"; do
    port_in_use "$p" && die "port $KAFKA_HOST:$p already in use by another process"
  done
  ensure_jars
  ensure_probe
  ensure_tls
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
  if ! out="$(run_probe "$KAFKA_START_TIMEOUT" "$KAFKA_WARMUP" sasl 2>&1)"; then
    log "$out"
    kill -0 "$pid" 2>/dev/null || die "broker exited during startup; tail of $LOG:
$(tail -n 30 "$LOG")"
    die "broker not ready after ${KAFKA_START_TIMEOUT}s (still running as pid $pid); see $LOG"
  fi
  kill -0 "$pid" 2>/dev/null || die "broker exited; see $LOG"
  log "$out"
  local tls; tls="$(check_tls 20)" || die "the SSL listener does not answer with a certificate from our CA; see $LOG"
  log "$tls"
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
  sasl-address) echo "$SASL_BOOTSTRAP" ;;
  tls-address) echo "$TLS_BOOTSTRAP" ;;
  tls-ca) echo "$TLS_DIR/ca.pem" ;;
  restart) cmd_stop; cmd_start ;;
  wipe) cmd_stop; rm -rf "$DATA"; log "data removed" ;;
  *) echo "usage: $0 start|stop|status|restart|wipe|sasl-address|tls-address|tls-ca" >&2; exit 2 ;;
esac
