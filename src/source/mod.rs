//! Sources: one consumer-group consumer for all source topics, one task per assigned partition.
//!
//! On assignment each partition is claimed in Mongo (owner epoch +1), the consumer is positioned at
//! the offset stored with the last committed batch, and the partition gets its own queue and task,
//! so a partition blocked on a transient error never holds up the others. On revocation the task
//! finishes its batch before the partition is given up. A consumer whose group stops settling is
//! replaced by a new one (see `watchdog`).

mod context;
pub mod decode;
mod partition;
mod watchdog;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::{mpsc, watch};

pub use context::SourceContext;
pub use partition::Shared;

use crate::config::Topology;

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "record {topic}[{partition}]@{offset} arrived outside its partition queue; stopped so it is re-read after a restart"
    )]
    StrayRecord {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A partition cannot go on (a permanent store error, a queue that cannot be split): the
    /// processor stops rather than keep the partition assigned and idle, so it moves to another
    /// processor (or is processed again from its stored offset after a restart).
    #[error(
        "partition {topic}[{partition}] stopped: {reason}; the processor stops so it is processed again"
    )]
    PartitionFailed {
        topic: String,
        partition: i32,
        reason: String,
    },
}

/// What the processor's consumer group looks like from here, for `/readyz`.
#[derive(Debug, Default)]
pub struct GroupStatus {
    /// Set at the first assignment.
    joined: AtomicBool,
    /// How long the group has been out of its steady state, in ms (0 while steady).
    unsettled_ms: AtomicU64,
}

impl GroupStatus {
    fn joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        self.unsettled(Duration::ZERO);
    }

    /// The group has been unsettled this long (zero: it is steady); also the metric.
    fn unsettled(&self, unsettled: Duration) {
        let ms = u64::try_from(unsettled.as_millis()).unwrap_or(u64::MAX);
        self.unsettled_ms.store(ms, Ordering::Relaxed);
        crate::metrics::group_unsettled(unsettled);
    }

    /// How long the group has been unsettled, as last published.
    pub fn unsettled_time(&self) -> Duration {
        Duration::from_millis(self.unsettled_ms.load(Ordering::Relaxed))
    }

    /// The readiness check's words, and whether the process may count as ready. A rebalance after
    /// the first assignment keeps it ready: its HTTP routes work without partitions, and the
    /// watchdog replaces a consumer whose group does not settle.
    pub fn check(&self) -> (String, bool) {
        if !self.joined.load(Ordering::Relaxed) {
            return ("waiting for partitions".to_string(), false);
        }
        match self.unsettled_time().as_secs() {
            0 => ("ok".to_string(), true),
            secs => (
                format!("rebalancing for {secs} s (the consumer group has not settled)"),
                true,
            ),
        }
    }
}

/// Records fetched ahead per partition at most, in KiB.
const PREFETCH_KIB: &str = "8192";

/// How one consumer's run ended.
enum Ended {
    /// `stop` turned true.
    Stopped,
    /// Its group did not settle for [`watchdog::stall_limit`]: a new consumer takes over.
    GroupStalled,
}

/// The processor side of `outflow run`: consumes every source topic until `stop` turns true.
pub async fn run(
    topology: Arc<Topology>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    loop {
        match consume(Arc::clone(&topology), Arc::clone(&shared), stop.clone()).await? {
            Ended::Stopped => return Ok(()),
            Ended::GroupStalled if *stop.borrow() => return Ok(()),
            Ended::GroupStalled => crate::metrics::consumer_replaced(),
        }
    }
}

/// One consumer, from its subscription until `stop`, a failed partition or a stalled group.
async fn consume(
    topology: Arc<Topology>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<Ended, SourceError> {
    let mut config = crate::kafka_client::consumer_config(&topology.kafka);
    config
        .set("group.id", &topology.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // the group watchdog reads the group's state from these, as does `outflow_consumer_lag`
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MiB per partition by default: a few batches ahead is
        // enough to keep every partition busy, and keeps memory flat (see README, Tuning)
        .set("queued.max.messages.kbytes", PREFETCH_KIB)
        .set("queued.min.messages", "10000");
    // Kafka's own defaults (KIP-735): a broker restart of a few seconds keeps the group as it was
    // (with 10 s the session expired in every restart test: a rebalance, and processing resumed
    // ~9.6 s after the broker was back, against ~1.1 s); a crashed processor's partitions wait this
    // long to move. `[kafka] properties` may choose otherwise (README, Tuning).
    for (key, default) in [
        ("session.timeout.ms", "45000"),
        ("heartbeat.interval.ms", "3000"),
    ] {
        if config.get(key).is_none() {
            config.set(key, default);
        }
    }
    let session = config
        .get("session.timeout.ms")
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let group =
        watchdog::GroupWatch::new(watchdog::stall_limit(session), Arc::clone(&shared.group));
    let (failures, mut failed) = mpsc::unbounded_channel();
    let context = SourceContext::new(shared, Arc::clone(&topology), stop.clone(), failures, group);
    let consumer: Arc<StreamConsumer<SourceContext>> =
        Arc::new(config.create_with_context(context)?);
    consumer.context().attach(&consumer);
    let topics: Vec<&str> = topology
        .sources
        .iter()
        .filter(|s| topology.stages_of(&s.name).next().is_some())
        .map(|s| s.topic.as_str())
        .collect();
    consumer.subscribe(&topics)?;
    tracing::info!(?topics, group = %topology.kafka.group_id, "processor subscribed");
    let mut check = tokio::time::interval(watchdog::CHECK_EVERY);
    let outcome = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(Ended::Stopped),
            Some(failure) = failed.recv() => {
                tracing::error!("{failure}");
                break Err(failure);
            }
            message = consumer.recv() => match message {
                // Every assigned partition has its own queue, split inside the rebalance callback
                // before this loop can see a record; a record here means that went wrong.
                Ok(m) => break Err(SourceError::StrayRecord { topic: m.topic().to_string(), partition: m.partition(), offset: m.offset() }),
                Err(e) => tracing::warn!("consumer: {e}"),
            },
            _ = check.tick() => if let Some((unsettled, last)) = consumer.context().group.stalled(Instant::now()) {
                // a new consumer only helps if the brokers answer one: during an outage, each
                // replacement would only leave another client behind, closing
                let probe = tokio::select! {
                    probe = crate::health::kafka_topics(&topology.kafka, watchdog::PROBE_TIMEOUT) => probe,
                    // a shutdown does not wait for the probe
                    _ = stop.changed() => break Ok(Ended::Stopped),
                };
                match probe {
                    Ok(_) => {
                        tracing::error!(
                            "the consumer group has not settled for {} s (librdkafka's group state: {last}) \
                             while the brokers answer; starting a new consumer, as a restart of the process would",
                            unsettled.as_secs()
                        );
                        break Ok(Ended::GroupStalled);
                    }
                    Err(e) => {
                        tracing::warn!(
                            "the consumer group has not settled for {} s (librdkafka's group state: {last}), \
                             and the brokers do not answer a new client either ({e}); keeping this consumer",
                            unsettled.as_secs()
                        );
                        consumer.context().group.restart_episode(Instant::now());
                    }
                }
            },
        }
    };
    consumer.context().stop_workers(&[]);
    match outcome {
        Ok(Ended::Stopped) => {
            consumer.unsubscribe();
            close(consumer, CLOSE_LIMIT).await;
        }
        // a stuck consumer may never close: its successor does not wait for it
        Ok(Ended::GroupStalled) => close(consumer, Duration::ZERO).await,
        Err(_) => close(consumer, CLOSE_LIMIT).await,
    }
    outcome
}

/// How long leaving the group may take before the processor gives up on a clean leave.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// Drops the consumer (it leaves the group) on a thread of its own, waiting at most `limit`:
/// librdkafka's close can wait for ever on a handle still alive somewhere, and a processor that
/// neither works nor exits is worse than one that exits without a clean leave (the group then
/// reassigns its partitions after `session.timeout.ms`).
async fn close(consumer: Arc<StreamConsumer<SourceContext>>, limit: Duration) {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("outflow-consumer-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
    if limit.is_zero() {
        return;
    }
    if spawned.is_err() || tokio::time::timeout(limit, done).await.is_err() {
        tracing::error!(
            "the Kafka consumer did not close within {}s; exiting without a clean leave of the group",
            limit.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_the_first_assignment_and_names_a_later_rebalance() {
        let group = GroupStatus::default();
        assert_eq!(group.check(), ("waiting for partitions".to_string(), false));
        group.unsettled(Duration::from_secs(3));
        assert!(!group.check().1, "unsettled before it ever joined");
        group.joined();
        assert_eq!(group.check(), ("ok".to_string(), true));
        group.unsettled(Duration::from_millis(75_400));
        let (words, ready) = group.check();
        assert!(ready, "a rebalance keeps the HTTP routes ready");
        assert_eq!(
            words,
            "rebalancing for 75 s (the consumer group has not settled)"
        );
        group.unsettled(Duration::ZERO);
        assert_eq!(group.check(), ("ok".to_string(), true));
    }
}
