//! The consumer's context: on assignment it claims each partition in Mongo, splits its queue and
//! starts its task; on revocation it finishes their batches first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::SourceError;
use super::partition::{self, Shared};
use super::watchdog::GroupWatch;
use crate::config::Topology;
use crate::store::PartitionClaim;

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
    /// The group's state from librdkafka's statistics, for the consume loop's watchdog.
    pub(super) group: GroupWatch,
}

impl SourceContext {
    pub(super) fn new(
        shared: Arc<Shared>,
        topology: Arc<Topology>,
        stopping: watch::Receiver<bool>,
        failures: mpsc::UnboundedSender<SourceError>,
        group: GroupWatch,
    ) -> Self {
        Self {
            shared,
            topology,
            consumer: OnceLock::new(),
            workers: Mutex::new(HashMap::new()),
            stopping,
            failures,
            group,
        }
    }

    /// Lets the context reach its own consumer (to split partition queues), without keeping it alive.
    pub(super) fn attach(&self, consumer: &Arc<StreamConsumer<SourceContext>>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }
}

impl ClientContext for SourceContext {
    /// librdkafka's periodic statistics carry the group's state and each assigned partition's
    /// consumer lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(group) = &statistics.cgrp {
            self.group
                .observe(&group.state, &group.join_state, Instant::now());
        }
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
                let wanted = partitions_of(tpl);
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
                // the statistics may still say otherwise for up to 5 s: a claim that waited out a
                // long Mongo outage must not look like a stuck group to the watchdog (nor to
                // `/readyz`)
                self.group.assigned();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = partitions_of(tpl);
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

/// How long a revocation or a shutdown waits for the partitions' batches in flight.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// The `(topic, partition)`s of a rebalance's list.
fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
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
            let work = partition::run(
                Arc::clone(&self.shared),
                source,
                claim,
                queue,
                Weak::clone(consumer),
                stop_rx,
                self.failures.clone(),
            );
            let (failures, (topic, partition)) = (self.failures.clone(), key.clone());
            // a worker that panicked would leave its partition assigned and idle: stop the
            // processor instead, as a permanent error does, so a supervisor restarts it
            let handle = tokio::spawn(async move {
                if let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await {
                    let why = crate::stage::panic_text(panic.as_ref());
                    let _ = failures.send(SourceError::PartitionFailed {
                        topic,
                        partition,
                        reason: format!("its worker panicked: {why}"),
                    });
                }
            });
            workers.insert(key, Worker { stop, handle });
        }
    }

    /// Stops the tasks of `partitions` (all when empty) and waits for their batches to commit.
    pub(super) fn stop_workers(&self, partitions: &[(String, i32)]) {
        let stopped: Vec<((String, i32), Worker)> = match self.workers.lock() {
            Ok(mut workers) => {
                let keys: Vec<(String, i32)> = if partitions.is_empty() {
                    workers.keys().cloned().collect()
                } else {
                    partitions.to_vec()
                };
                keys.into_iter()
                    .filter_map(|k| workers.remove(&k).map(|w| (k, w)))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for (_, w) in &stopped {
            let _ = w.stop.send(true);
        }
        let _ = block_on(async move {
            // one deadline for them all, then the stragglers are aborted: a task left running
            // would still hold its partition's queue when the partition is split again
            let deadline = tokio::time::Instant::now() + REVOKE_WAIT;
            for ((topic, partition), worker) in stopped {
                let mut handle = worker.handle;
                if tokio::time::timeout_at(deadline, &mut handle)
                    .await
                    .is_err()
                {
                    tracing::warn!(%topic, partition, "the partition's batch did not finish within {REVOKE_WAIT:?} of the stop; abandoning it uncommitted (the partition's next owner processes it again)");
                    handle.abort();
                    let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
                }
            }
        });
    }
}
