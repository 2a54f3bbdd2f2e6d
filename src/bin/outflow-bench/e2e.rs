//! outflow end to end: a real `outflow run` process on a generated topology, fed and read back.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use outflow::config::Topology;
use outflow::schema::registry::Registry;
use outflow::schema::{codec, json::json_to_avro};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

/// A generated benchmark topology and the `outflow run` process on it.
pub struct Bench {
    pub topology: Arc<Topology>,
    pub prefix: String,
    pub path: PathBuf,
    pub port: u16,
}

impl Bench {
    pub async fn new(batch: usize, linger_ms: u64) -> anyhow::Result<Self> {
        let root = env!("CARGO_MANIFEST_DIR");
        let prefix = format!("b{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let text = std::fs::read_to_string(format!("{root}/benches/topology.toml"))?
            .replace("@PREFIX@", &prefix)
            .replace("@ROOT@", root)
            .replace("@BATCH@", &batch.to_string())
            .replace("@LINGER@", &linger_ms.to_string())
            .replace("@HTTP_PORT@", &port.to_string());
        let dir = PathBuf::from(format!("target/bench/{prefix}"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("topology.toml");
        std::fs::write(&path, text)?;
        let topology = Arc::new(
            outflow::config::load(&path)
                .map_err(|e| anyhow::anyhow!("{e}: {e:?}"))?
                .topology,
        );
        outflow::topics::ensure(&topology, 1).await?;
        Ok(Self {
            topology,
            prefix,
            path,
            port,
        })
    }

    pub fn output_topic(&self) -> &str {
        &self.topology.topics[0].name
    }

    /// Starts the release `outflow run` next to this binary.
    pub fn start(&self) -> anyhow::Result<Child> {
        let exe = std::env::current_exe()?.with_file_name("outflow");
        Ok(Command::new(exe)
            .arg("run")
            .arg(&self.path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
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
            .register(
                &source
                    .subject_strategy
                    .subject(&source.topic, &schema.full_name),
                schema,
            )
            .await?;
        let producer: FutureProducer = outflow::health::kafka_config(&self.topology.kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", "10")
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

    /// The median batch transaction time from the running process's `/metrics`, in seconds.
    pub async fn median_txn_seconds(&self) -> Option<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("outflow_store_txn_seconds{quantile=\"0.5\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// Output records read so far: total, distinct event ids, and end-to-end latencies (ms).
#[derive(Default)]
pub struct Seen {
    pub total: usize,
    pub distinct: usize,
    pub latencies: Vec<i64>,
}

/// Reads `topic` read_committed from the beginning until `expected` records or `timeout`.
pub fn read_output(
    b: &Bench,
    expected: usize,
    timeout: Duration,
    with_latency: bool,
) -> anyhow::Result<Seen> {
    let consumer: BaseConsumer = outflow::health::kafka_config(&b.topology.kafka)
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
    while seen.total < expected && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        seen.total += 1;
        if let Some(id) = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "outflow.event-id")
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        }) {
            ids.insert(id);
        }
        if with_latency
            && let Some(Ok((id, body))) = m.payload().map(codec::split_frame)
            && let Ok(apache_avro::types::Value::Record(fields)) =
                codec::decode(id, schema, schema, body)
            && let Some((_, apache_avro::types::Value::Long(ts))) =
                fields.iter().find(|(k, _)| k == "sourceTimestamp")
        {
            seen.latencies
                .push(outflow::source::decode::chrono_millis() - ts);
        }
    }
    drop(consumer);
    seen.distinct = ids.len();
    Ok(seen)
}

/// Samples a process's resident memory every second: (start, peak, last) in MiB.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    first: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let (stop, first, peak, last) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, f, p, l) = (
            Arc::clone(&stop),
            Arc::clone(&first),
            Arc::clone(&peak),
            Arc::clone(&last),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let now = rss_kib(pid);
                // the first sample is taken a second in, once the process is up
                let _ = f.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                p.fetch_max(now, Ordering::Relaxed);
                l.store(now, Ordering::Relaxed);
            }
        });
        Self {
            stop,
            first,
            peak,
            last,
        }
    }

    /// (start, peak, last) in MiB.
    pub fn finish(&self) -> (f64, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let mib = |k: u64| k as f64 / 1024.0;
        (
            mib(self.first.load(Ordering::Relaxed)),
            mib(self.peak.load(Ordering::Relaxed)),
            mib(self.last.load(Ordering::Relaxed)),
        )
    }
}
