//! Sources: one consumer-group consumer for all source topics, one task per assigned partition.
//!
//! On assignment each partition is claimed in Mongo (owner epoch +1), the consumer is positioned at
//! the offset stored with the last committed batch, and the partition gets its own queue and task,
//! so a partition blocked on a transient error never holds up the others. On revocation the task
//! finishes its batch before the partition is given up.

pub mod decode;
mod partition;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use partition::Shared;

use crate::config::Topology;
use crate::store::PartitionClaim;

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

struct Worker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// A claimed partition with its own queue, ready for its task.
struct SplitPartition {
    claim: PartitionClaim,
    source: crate::config::Source,
    queue: rdkafka::consumer::stream_consumer::StreamPartitionQueue<SourceContext>,
}

/// The consumer's context: claims partitions on assignment and runs their tasks.
pub struct SourceContext {
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    consumer: OnceLock<Weak<StreamConsumer<SourceContext>>>,
    workers: Mutex<HashMap<(String, i32), Worker>>,
    stopping: watch::Receiver<bool>,
    /// Partition tasks that cannot go on report here; the consume loop then stops the processor.
    failures: mpsc::UnboundedSender<SourceError>,
}

impl ClientContext for SourceContext {
    /// librdkafka's periodic statistics carry each assigned partition's consumer lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    crate::metrics::consumer_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?wanted, "partitions assigned; claiming them");
                let claims = self.claim_all(&wanted);
                for claim in &claims {
                    let offset = claim.next_offset.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&claim.topic, claim.partition, offset)
                    {
                        tracing::error!(
                            "cannot position {}[{}]: {e}",
                            claim.topic,
                            claim.partition
                        );
                    }
                }
                // each partition gets its own queue BEFORE it is assigned: fetching starts at
                // the assignment, and a fetch served before the split would land in the
                // consumer's main queue instead (librdkafka never re-forwards a queue the
                // application has split, so later assignments of the partition are safe too)
                let split = self.split_queues(claims);
                let assigned = if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!("assignment failed: {e}");
                    return;
                }
                self.start_workers(split);
                self.shared
                    .joined
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?revoked, "partitions revoked; finishing their batches");
                self.stop_workers(&revoked);
                let result = if cooperative {
                    base.incremental_unassign(tpl)
                } else {
                    base.unassign()
                };
                if let Err(e) = result {
                    tracing::error!("unassignment failed: {e}");
                }
            }
            other => tracing::error!("rebalance error: {other:?}"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!("group offset commit (for lag tools) failed: {e}");
        }
    }
}

/// Runs `future` to completion from inside a librdkafka callback on a runtime worker thread.
fn block_on<F: std::future::Future>(future: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(tokio::task::block_in_place(|| handle.block_on(future)))
}

impl SourceContext {
    /// Claims every partition, retrying while Mongo is unreachable (the assignment waits).
    fn claim_all(&self, wanted: &[(String, i32)]) -> Vec<PartitionClaim> {
        let group = self.topology.kafka.group_id.clone();
        let store = self.shared.store.clone();
        let stopping = self.stopping.clone();
        block_on(async move {
            let mut claims = Vec::new();
            for (topic, partition) in wanted {
                let mut delay = Duration::from_millis(100);
                loop {
                    match store.claim_partition(&group, topic, *partition).await {
                        Ok(c) => {
                            claims.push(c);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("cannot claim {topic}[{partition}] in Mongo, retrying in {delay:?}: {e}");
                            if *stopping.borrow() {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            claims
        })
        .unwrap_or_default()
    }

    /// Each claimed partition's own queue, split from the consumer's main queue.
    fn split_queues(&self, claims: Vec<PartitionClaim>) -> Vec<SplitPartition> {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return Vec::new();
        };
        let mut split = Vec::with_capacity(claims.len());
        for claim in claims {
            let Some(source) = self.topology.source_for_topic(&claim.topic).cloned() else {
                continue;
            };
            let Some(queue) = consumer.split_partition_queue(&claim.topic, claim.partition) else {
                let _ = self.failures.send(SourceError::PartitionFailed {
                    topic: claim.topic.clone(),
                    partition: claim.partition,
                    reason: "its queue cannot be split from the consumer".to_string(),
                });
                continue;
            };
            split.push(SplitPartition {
                claim,
                source,
                queue,
            });
        }
        split
    }

    fn start_workers(&self, split: Vec<SplitPartition>) {
        let Some(consumer) = self.consumer.get() else {
            return;
        };
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        for SplitPartition {
            claim,
            source,
            queue,
        } in split
        {
            let (stop, stop_rx) = watch::channel(false);
            let key = (claim.topic.clone(), claim.partition);
            let handle = tokio::spawn(partition::run(
                Arc::clone(&self.shared),
                source,
                claim,
                queue,
                Weak::clone(consumer),
                stop_rx,
                self.failures.clone(),
            ));
            workers.insert(key, Worker { stop, handle });
        }
    }

    /// Stops the tasks of `partitions` (all when empty) and waits for their batches to commit.
    fn stop_workers(&self, partitions: &[(String, i32)]) {
        let stopped: Vec<Worker> = match self.workers.lock() {
            Ok(mut workers) => {
                let keys: Vec<(String, i32)> = if partitions.is_empty() {
                    workers.keys().cloned().collect()
                } else {
                    partitions.to_vec()
                };
                keys.iter().filter_map(|k| workers.remove(k)).collect()
            }
            Err(_) => Vec::new(),
        };
        for w in &stopped {
            let _ = w.stop.send(true);
        }
        let handles: Vec<JoinHandle<()>> = stopped.into_iter().map(|w| w.handle).collect();
        let _ = block_on(async move {
            for h in handles {
                let _ = tokio::time::timeout(Duration::from_secs(60), h).await;
            }
        });
    }
}

/// Records fetched ahead per partition at most, in KiB.
const PREFETCH_KIB: &str = "8192";

/// The processor side of `outflow run`: consumes every source topic until `stop` turns true.
pub async fn run(
    topology: Arc<Topology>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut config = crate::health::kafka_config(&topology.kafka);
    config
        .set("group.id", &topology.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MiB per partition by default: a few batches ahead is
        // enough to keep every partition busy, and keeps memory flat (see README, Tuning)
        .set("queued.max.messages.kbytes", PREFETCH_KIB)
        .set("queued.min.messages", "10000");
    let (failures, mut failed) = mpsc::unbounded_channel();
    let context = SourceContext {
        shared,
        topology: Arc::clone(&topology),
        consumer: OnceLock::new(),
        workers: Mutex::new(HashMap::new()),
        stopping: stop.clone(),
        failures,
    };
    let consumer: Arc<StreamConsumer<SourceContext>> =
        Arc::new(config.create_with_context(context)?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topics: Vec<&str> = topology
        .sources
        .iter()
        .filter(|s| topology.stages_of(&s.name).next().is_some())
        .map(|s| s.topic.as_str())
        .collect();
    consumer.subscribe(&topics)?;
    tracing::info!(?topics, group = %topology.kafka.group_id, "processor subscribed");
    let outcome = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(()),
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
        }
    };
    consumer.context().stop_workers(&[]);
    if outcome.is_ok() {
        consumer.unsubscribe();
    }
    close(consumer).await;
    outcome
}

/// How long leaving the group may take before the processor gives up on a clean leave.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// Drops the consumer (it leaves the group) on a thread of its own, waiting at most
/// [`CLOSE_LIMIT`]: librdkafka's close can wait for ever on a handle still alive somewhere, and a
/// processor that neither works nor exits is worse than one that exits without a clean leave
/// (the group then reassigns its partitions after `session.timeout.ms`).
async fn close(consumer: Arc<StreamConsumer<SourceContext>>) {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("outflow-consumer-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
    if spawned.is_err() || tokio::time::timeout(CLOSE_LIMIT, done).await.is_err() {
        tracing::error!(
            "the Kafka consumer did not close within {}s; exiting without a clean leave of the group",
            CLOSE_LIMIT.as_secs()
        );
    }
}
