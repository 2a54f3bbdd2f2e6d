//! outflow end to end: a real `outflow run` process on a generated topology, fed and read back.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use outflow::config::Topology;
use outflow::schema::registry::Registry;
use outflow::schema::{codec, json::json_to_avro};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

use crate::process::Running;

/// The tuning knobs of a run: those it sets in the generated topology, and its producer's linger.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    /// `sources.batch.max_records`.
    pub batch: usize,
    /// `sources.batch.linger_ms`.
    pub linger_ms: u64,
    /// `relay.batch_records`.
    pub relay_batch: usize,
    /// `mongo.max_concurrent_batches`.
    pub concurrent: usize,
    /// The bench's own source producer's `linger.ms` (a service upstream, not outflow).
    pub producer_linger_ms: u64,
}

/// A generated benchmark topology and the `outflow run` process on it.
pub struct Bench {
    pub topology: Arc<Topology>,
    producer_linger_ms: u64,
    pub prefix: String,
    pub path: PathBuf,
    pub port: u16,
}

impl Bench {
    pub async fn new(knobs: &Knobs) -> anyhow::Result<Self> {
        // the checkout it runs in, not the build's source tree (a shared target directory may
        // have built it in another checkout)
        let root = std::env::current_dir()?;
        anyhow::ensure!(
            root.join("benches/topology.toml").is_file(),
            "run outflow-bench from the root of an outflow checkout (no benches/topology.toml in {})",
            root.display()
        );
        let root = root.display().to_string();
        let prefix = format!("b{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let text = std::fs::read_to_string(format!("{root}/benches/topology.toml"))?
            .replace("@PREFIX@", &prefix)
            .replace("@ROOT@", &root)
            .replace("@BATCH@", &knobs.batch.to_string())
            .replace("@LINGER@", &knobs.linger_ms.to_string())
            .replace("@CONCURRENT@", &knobs.concurrent.to_string())
            .replace("@RELAY_BATCH@", &knobs.relay_batch.to_string())
            .replace("@HTTP_PORT@", &port.to_string());
        let dir = PathBuf::from(format!("target/bench/{prefix}"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("topology.toml");
        std::fs::write(&path, text)?;
        let topology = Arc::new(
            outflow::config::load(&path)
                .map_err(|e| match &e {
                    // each problem on its own line, file:line:col first, as `outflow validate`
                    outflow::config::ConfigError::Invalid { diagnostics, .. } => anyhow::anyhow!(
                        "{e} (a knob out of range?):\n{}",
                        diagnostics
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    ),
                    _ => anyhow::anyhow!(e),
                })?
                .topology,
        );
        create_source_topic(&topology).await?;
        outflow::topics::ensure(&topology, 1).await?;
        Ok(Self {
            topology,
            producer_linger_ms: knobs.producer_linger_ms,
            prefix,
            path,
            port,
        })
    }

    /// Drops the run's database and deletes its topics (once its process has stopped).
    pub async fn remove(&self) {
        crate::cleanup::drop_database(&self.topology.mongo.uri, &self.topology.mongo.database)
            .await;
        let topics: Vec<String> = outflow::topics::wanted(&self.topology)
            .into_iter()
            .map(|spec| spec.name)
            .collect();
        match outflow::kafka_client::admin_config(&self.topology.kafka).create() {
            Ok(admin) => crate::cleanup::delete_topics(&admin, &topics).await,
            Err(e) => eprintln!("clean-up: topics {topics:?} not deleted: {e}"),
        }
    }

    pub fn output_topic(&self) -> &str {
        &self.topology.topics[0].name
    }

    /// Starts the release `outflow run` next to this binary.
    pub fn start(&self) -> anyhow::Result<Arc<Running>> {
        let exe = std::env::current_exe()?.with_file_name("outflow");
        // its warnings (retries, rebalances) next to its topology, to explain odd figures
        let log_path = self.path.with_file_name("outflow.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(exe)
            .arg("run")
            .arg(&self.path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Arc::new(Running::new(child, log_path)))
    }

    /// Waits until the started process answers `/readyz` (stores reachable, group joined and
    /// partitions assigned): throughput is timed from there, as the ceilings are timed after
    /// their connections are set up.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let ready = outflow::health::answers_ok(&url, timeout, Duration::from_millis(20)).await;
        anyhow::ensure!(
            ready,
            "outflow not ready after {timeout:?}; see {}",
            self.path.with_file_name("outflow.log").display()
        );
        Ok(())
    }

    /// Produces `events` events (keys over `entities` entities), at most `rate` per second.
    pub async fn produce(
        &self,
        from: usize,
        events: usize,
        entities: usize,
        rate: Option<f64>,
    ) -> anyhow::Result<()> {
        let source = &self.topology.sources[0];
        let schema = &source.schemas[0];
        let registry = Registry::new(&self.topology.registry.url, Duration::from_secs(10))?;
        let id = registry
            .register(&source.subject_for(schema), schema)
            .await?;
        let producer: FutureProducer = outflow::kafka_client::producer_config(&self.topology.kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", self.producer_linger_ms.to_string())
            .set("queue.buffering.max.messages", "500000")
            .create()?;
        let notes = "n".repeat(900);
        let started = Instant::now();
        let mut pending = Vec::with_capacity(10_000);
        for n in from..from + events {
            let entity = format!("acc{}", n % entities);
            let event = json!({"eventId": format!("{}-{n}", self.prefix), "entityId": entity, "seq": n, "amount": 1.0, "notes": notes});
            let avro =
                json_to_avro(&event, &schema.schema).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let value = codec::encode(id, &schema.schema, avro)?;
            let ts = outflow::source::decode::chrono_millis();
            loop {
                match producer.send_result(
                    FutureRecord::to(&source.topic)
                        .key(&entity)
                        .payload(&value)
                        .timestamp(ts),
                ) {
                    Ok(d) => {
                        pending.push(d);
                        break;
                    }
                    Err((_, _)) => tokio::time::sleep(Duration::from_millis(5)).await, // queue full
                }
            }
            if pending.len() >= 10_000 {
                for d in pending.drain(..) {
                    let _ = d.await;
                }
            }
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64((n - from) as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        for d in pending {
            let _ = d.await;
        }
        Ok(())
    }

    /// The `quantile` ("0.5", "0.99") of the processor's batch transaction time, from its metrics.
    pub async fn txn_seconds(&self, quantile: &str) -> Option<f64> {
        self.summary("outflow_store_txn_seconds", quantile).await
    }

    /// The `quantile` of one of the processor's summaries (histograms), from its metrics.
    pub async fn summary(&self, metric: &str, quantile: &str) -> Option<f64> {
        self.summaries(metric, "", quantile)
            .await
            .into_iter()
            .next()
            .map(|(_, v)| v)
    }

    /// The `quantile` of every series of a summary labelled `label`, as (label value, value).
    pub async fn summaries(&self, metric: &str, label: &str, quantile: &str) -> Vec<(String, f64)> {
        self.series(metric, label, &format!("quantile=\"{quantile}\"}}"))
            .await
    }

    /// Every series of a counter labelled `label` (and nothing else), as (label value, value).
    pub async fn counters(&self, metric: &str, label: &str) -> Vec<(String, f64)> {
        self.series(metric, label, "\"}").await
    }

    /// The series of `metric` whose labels end with `wanted`, by the value of `label`.
    async fn series(&self, metric: &str, label: &str, wanted: &str) -> Vec<(String, f64)> {
        let Ok(response) = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await
        else {
            return Vec::new();
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let labels = l.strip_prefix(metric)?.strip_prefix('{')?;
                let (labels, value) = labels.rsplit_once(' ')?;
                if !labels.ends_with(wanted) {
                    return None;
                }
                let name = labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{label}=\"")))
                    .map_or("", |v| v.trim_end_matches('}').trim_end_matches('"'));
                if !label.is_empty() && name.is_empty() {
                    return None;
                }
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }
}

/// Creates the source topic with the broker's append time as each record's timestamp: the
/// latency is measured from the append, not from the producer's send.
async fn create_source_topic(topology: &Topology) -> anyhow::Result<()> {
    use outflow::topics::TopicSpec;
    let source = &topology.sources[0];
    let admin = outflow::kafka_client::admin_config(&topology.kafka).create()?;
    let topic = TopicSpec::new(&source.topic, source.partitions)
        .with("message.timestamp.type", "LogAppendTime");
    outflow::topics::create(&admin, &[topic], 1).await?;
    Ok(())
}

/// Output records read so far: total, distinct event ids, and end-to-end latencies (ms), also
/// split at the moment the relay produced the record (the output record's timestamp): source
/// append → relay send (consume, batch, Mongo transaction, outbox read) and relay send → visible
/// read_committed (Kafka transaction, commit, fetch).
#[derive(Default)]
pub struct Seen {
    pub total: usize,
    pub distinct: usize,
    pub latencies: Vec<i64>,
    /// When each of `latencies` was seen (ms since the epoch), for the run's latency timeline.
    pub seen_at: Vec<i64>,
    pub to_relay: Vec<i64>,
    pub after_relay: Vec<i64>,
    /// Source append → the processor built the record's batch (the outbox id is a UUIDv7 made
    /// then): consume, queue, linger, decode and stage; the rest of `to_relay` is the Mongo
    /// transaction and the relay's wake-up and read.
    pub to_batch: Vec<i64>,
}

/// The milliseconds since the epoch in a UUIDv7 (the outbox record's id).
fn uuid_millis(id: &[u8]) -> Option<i64> {
    let id = uuid::Uuid::parse_str(std::str::from_utf8(id).ok()?).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// Reads `topic` read_committed from the beginning until `expected` records or `timeout`; with
/// `latency_from`, the latencies of records appended at or after that time (ms since the epoch).
/// Fails as soon as `outflow` has exited.
pub fn read_output(
    b: &Bench,
    expected: usize,
    timeout: Duration,
    latency_from: Option<i64>,
    (outflow, progress): (&Running, Option<&AtomicUsize>),
) -> anyhow::Result<Seen> {
    let consumer: BaseConsumer = outflow::kafka_client::consumer_config(&b.topology.kafka)
        .set("group.id", format!("bench-reader-{}", uuid::Uuid::now_v7()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition_offset(b.output_topic(), p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let schema = &b.topology.topics[0].schema.schema;
    let mut ids = HashSet::new();
    let mut seen = Seen::default();
    let deadline = Instant::now() + timeout;
    let mut alive_checked = Instant::now();
    while seen.total < expected && Instant::now() < deadline {
        if alive_checked.elapsed() >= Duration::from_secs(1) {
            alive_checked = Instant::now();
            if let Some(gone) = outflow.gone() {
                anyhow::bail!("{gone}");
            }
        }
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        seen.total += 1;
        if let Some(p) = progress {
            p.store(seen.total, Ordering::Relaxed);
        }
        if let Some(id) = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "outflow.event-id")
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        }) {
            ids.insert(id);
        }
        if let Some(from) = latency_from
            && let Some(Ok((id, body))) = m.payload().map(codec::split_frame)
            && let Ok(apache_avro::types::Value::Record(fields)) =
                codec::decode(id, schema, schema, body)
            && let Some((_, apache_avro::types::Value::Long(ts))) =
                fields.iter().find(|(k, _)| k == "sourceTimestamp")
            && *ts >= from
        {
            let now = outflow::source::decode::chrono_millis();
            seen.latencies.push(now - ts);
            seen.seen_at.push(now);
            if let Some(sent) = m.timestamp().to_millis() {
                seen.to_relay.push(sent - ts);
                seen.after_relay.push(now - sent);
            }
            let built = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "id")
                    .and_then(|h| h.value)
                    .and_then(uuid_millis)
            });
            if let Some(built) = built {
                seen.to_batch.push(built - ts);
            }
        }
    }
    drop(consumer);
    seen.distinct = ids.len();
    Ok(seen)
}
