//! Shared helpers of the integration tests: a per-test topology on the real local stack, the
//! `outflow` binary as a child process, producing events and reading topics read_committed.
#![allow(dead_code)]

mod cleanup;
pub mod group;
mod process;
mod quotes;

// each test crate uses some of these (as with `dead_code` above)
#[allow(unused_imports)]
pub use process::Outflow;
#[allow(unused_imports)]
pub use quotes::*;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::bson::{Document, doc};
use outflow::config::Topology;
use outflow::ingress::{EventProducer, ProduceError};
use outflow::schema::registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

/// The stack's address from the environment `deploy/local/stack.sh up` prints.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `eval \"$(deploy/local/stack.sh up)\"` first")
    })
}

/// `pipeline.toml`'s `[kafka] properties` line: a 10 s session, so killed and paused processors
/// hand over their partitions within the tests' waits. Tests that bring properties of their own,
/// or test the default, take it out.
pub const FAST_FAILOVER: &str =
    "properties = { \"session.timeout.ms\" = \"10000\", \"heartbeat.interval.ms\" = \"1000\" }\n";

/// A topology with its own topics, consumer group and database, so tests never see each other's data.
pub struct TestTopology {
    pub prefix: String,
    pub path: PathBuf,
    pub topology: Arc<Topology>,
    _dir: tempfile::TempDir,
}

impl Drop for TestTopology {
    /// Removes the test's topics and databases; a failed test keeps them, for a look.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            cleanup::remove_artefacts(&self.prefix);
        }
    }
}

impl TestTopology {
    pub fn new(template: &str) -> Self {
        Self::edited(template, &[])
    }

    /// Like [`Self::new`], with `extra` TOML inserted after the `[http]` table's first line.
    pub fn with_extra(template: &str, extra: &str) -> Self {
        Self::edited(template, &[("[http]\n", &format!("[http]\n{extra}\n"))])
    }

    /// Like [`Self::new`], with each `(from, to)` replaced in the template text first.
    pub fn edited(template: &str, edits: &[(&str, &str)]) -> Self {
        Self::edited_with_env(template, edits, &[])
    }

    /// Like [`Self::edited`], with `${VAR}`s looked up in `env` before the process environment
    /// (pass the same `env` to the `outflow` processes the test starts).
    pub fn edited_with_env(template: &str, edits: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let prefix = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let root = env!("CARGO_MANIFEST_DIR");
        let mut text = std::fs::read_to_string(format!("{root}/tests/topologies/{template}"))
            .unwrap_or_else(|e| panic!("{template}: {e}"));
        for (from, to) in edits {
            assert!(text.contains(from), "{template} has no `{from}`");
            text = text.replace(from, to);
        }
        let text = text
            .replace("@PREFIX@", &prefix)
            .replace("@ROOT@", root)
            .replace("@HTTP_PORT@", &free_port().to_string());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("topology.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write: {e}"));
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| std::env::var(name).ok())
        };
        let topology = match outflow::config::load_with(&path, &lookup, &[]) {
            Ok(l) => Arc::new(l.topology),
            Err(e) => panic!("{e}: {e:?}"),
        };
        Self {
            prefix,
            path,
            topology,
            _dir: dir,
        }
    }

    /// The base URL of this topology's HTTP server.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.topology.http.listen)
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub async fn db(&self) -> mongodb::Database {
        let client = mongodb::Client::with_uri_str(env("OUTFLOW_MONGO_URI"))
            .await
            .unwrap_or_else(|e| panic!("mongo: {e}"));
        client.database(&self.prefix)
    }

    pub async fn count(&self, collection: &str, filter: Document) -> u64 {
        self.db()
            .await
            .collection::<Document>(collection)
            .count_documents(filter)
            .await
            .unwrap_or_else(|e| panic!("count: {e}"))
    }

    /// This topology's store, its collections and indexes created as `outflow run` creates them.
    pub async fn store(&self) -> outflow::store::Store {
        let store = outflow::store::Store::connect(&env("OUTFLOW_MONGO_URI"), &self.prefix)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .ensure_collections(&self.topology)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
    }

    /// Waits up to `timeout` for `collection` to hold exactly `n` documents matching `filter`;
    /// whether it did.
    pub async fn reaches(
        &self,
        collection: &str,
        filter: Document,
        n: u64,
        timeout: Duration,
    ) -> bool {
        eventually(timeout, async || {
            self.count(collection, filter.clone()).await == n
        })
        .await
    }

    /// Waits up to 180 s for the event log to hold `total` events, and fails the test otherwise.
    pub async fn assert_event_log_reaches(&self, total: usize) {
        let processed = self
            .reaches("event_log", doc! {}, total as u64, Duration::from_secs(180))
            .await;
        assert!(
            processed,
            "event log has {} of {total}",
            self.count("event_log", doc! {}).await
        );
    }

    /// Creates topics, collections and subjects as `outflow run` would, without running anything.
    pub async fn prepare(&self) {
        outflow::topics::ensure(&self.topology, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn producer(&self) -> EventProducer {
        let registry = Arc::new(
            Registry::new(&self.topology.registry.url, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        EventProducer::new(
            Arc::clone(&self.topology),
            registry,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `outflow run` on this topology with extra arguments.
    pub fn run(&self, args: &[&str]) -> Outflow {
        self.run_with_env(args, &[])
    }

    /// Starts `outflow run` with extra arguments and environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outflow {
        // processor-only and relay-only processes serve only the admin routes, on a port of their own
        let partial = args
            .iter()
            .any(|a| *a == "--processor-only" || *a == "--relay-only");
        let listen = if partial {
            format!("127.0.0.1:{}", free_port())
        } else {
            self.topology.http.listen.clone()
        };
        let log_path = self
            .path
            .with_extension(format!("{}.log", uuid::Uuid::now_v7().simple()));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_outflow"))
            .arg("run")
            .args(args)
            .arg(&self.path)
            .env("RUST_LOG", "info,outflow=debug")
            .env("OUTFLOW_HTTP_LISTEN", &listen)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn outflow: {e}"));
        Outflow {
            child,
            log: log_path,
        }
    }
}

/// Waits up to 60 s for `{base}/readyz` to answer 200 (Kafka, registry, Mongo reachable; partitions
/// assigned), and fails the test otherwise.
pub async fn wait_ready(base: &str) {
    let url = format!("{base}/readyz");
    let up = outflow::health::answers_ok(&url, Duration::from_secs(60), Duration::from_millis(250))
        .await;
    assert!(up, "{base}/readyz never answered 200");
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// Reads `topic` read_committed from the beginning until `expected` records arrived (or `timeout`),
/// then keeps reading for `settle` to catch any extra ones.
pub fn read_committed(
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Record> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", env("OUTFLOW_KAFKA_BROKERS"))
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = tpl.add_partition_offset(topic, p, Offset::Beginning);
    }
    consumer
        .assign(&tpl)
        .unwrap_or_else(|e| panic!("assign: {e}"));
    drop(tpl);
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || settle_until.is_some_and(|s| now > s) {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = outflow::dlq::header::as_text(&m);
            records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
        if records.len() >= expected && settle_until.is_none() {
            settle_until = Some(Instant::now() + settle);
        }
    }
    drop(consumer);
    records
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F: AsyncFn() -> bool>(timeout: Duration, check: F) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    check().await
}
