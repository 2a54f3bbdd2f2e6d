//! One assigned partition: cut micro-batches, decode, run stages and commit them in one transaction.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use tokio::sync::{mpsc, watch};

use super::decode::{RawRecord, decode};
use super::{SourceContext, SourceError};
use crate::config::Source;
use crate::metrics;
use crate::store::documents::shard_of;
use crate::store::{BatchEvent, PartitionClaim, StoreError};

/// Everything a partition worker shares with the others.
pub struct Shared {
    pub store: crate::store::Store,
    pub registry: Arc<crate::schema::registry::Registry>,
    pub runner: Arc<crate::stage::StageRunner>,
    /// Whether the consumer joined its group and how settled it is (for `/readyz`).
    pub group: Arc<super::GroupStatus>,
    /// `mongo.max_concurrent_batches` permits: a batch holds one from its decode to its commit.
    pub commit_slots: Arc<tokio::sync::Semaphore>,
    /// This process's relay, when it runs one: committed outbox records are handed to it.
    pub relay_inboxes: Option<Arc<crate::relay::Inboxes>>,
}

/// A record as its worker got it (its age there goes to the metrics).
fn received(message: &rdkafka::message::BorrowedMessage<'_>) -> RawRecord {
    let record = to_raw(message);
    if let Some(ts) = record.timestamp {
        metrics::source_record_age(super::decode::chrono_millis() - ts);
    }
    record
}

fn to_raw(message: &rdkafka::message::BorrowedMessage<'_>) -> RawRecord {
    let event_id_header = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == crate::dlq::header::EVENT_ID)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    });
    RawRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        event_id_header,
    }
}

/// Records collected for one batch: counted against `max_records` and `max_bytes`, with the time
/// the first arrived (its linger starts there).
struct Batch {
    records: Vec<RawRecord>,
    bytes: usize,
    first_at: tokio::time::Instant,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            bytes: 0,
            first_at: tokio::time::Instant::now(),
        }
    }
}

impl Batch {
    fn push(&mut self, record: RawRecord) {
        if self.records.is_empty() {
            self.first_at = tokio::time::Instant::now();
        }
        self.bytes += record.size();
        self.records.push(record);
    }

    /// Takes a message off the partition's queue into the batch; a consume error (no record) is
    /// logged and leaves the batch as it was. Returns whether a record was taken.
    fn take(
        &mut self,
        message: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
        claim: &PartitionClaim,
    ) -> bool {
        match message {
            Ok(m) => {
                self.push(received(&m));
                true
            }
            Err(e) => {
                tracing::warn!(topic = %claim.topic, partition = claim.partition, "consume error: {e}");
                false
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn is_full(&self, limits: &crate::config::BatchSettings) -> bool {
        self.records.len() >= limits.max_records || self.bytes >= limits.max_bytes
    }
}

/// The partition's offset as committed to Kafka, for lag tools only (the truth is the offset
/// stored with each batch in Mongo): at most once a second, as `auto.commit.interval.ms` would,
/// since a commit per batch was a write to `__consumer_offsets` per transaction.
#[derive(Default)]
struct LagOffset {
    pending: Option<i64>,
    committed_at: Option<Instant>,
}

impl LagOffset {
    const EVERY: Duration = Duration::from_secs(1);

    fn stored(
        &mut self,
        next_offset: i64,
        consumer: &Weak<StreamConsumer<SourceContext>>,
        claim: &PartitionClaim,
    ) {
        self.pending = Some(next_offset);
        if self
            .committed_at
            .is_none_or(|at| at.elapsed() >= Self::EVERY)
        {
            self.flush(consumer, claim);
        }
    }

    fn flush(&mut self, consumer: &Weak<StreamConsumer<SourceContext>>, claim: &PartitionClaim) {
        let (Some(offset), Some(consumer)) = (self.pending.take(), consumer.upgrade()) else {
            return;
        };
        self.committed_at = Some(Instant::now());
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(
                &claim.topic,
                claim.partition,
                rdkafka::Offset::Offset(offset),
            )
            .is_ok()
        {
            let _ = consumer.commit(&tpl, CommitMode::Async);
        }
    }
}

/// Runs until the partition is revoked, the process stops, or another processor fences this one.
pub async fn run(
    shared: Arc<Shared>,
    source: Source,
    claim: PartitionClaim,
    queue: StreamPartitionQueue<SourceContext>,
    consumer: Weak<StreamConsumer<SourceContext>>,
    mut stop: watch::Receiver<bool>,
    failures: mpsc::UnboundedSender<SourceError>,
) {
    let limits = source.batch;
    tracing::info!(topic = %claim.topic, partition = claim.partition, epoch = claim.epoch, next_offset = ?claim.next_offset, "partition assigned");
    // records taken off the queue while the previous batch was committing: the next batch
    let mut next = Batch::default();
    let mut lag_offset = LagOffset::default();
    'batches: loop {
        // a stop seen while a batch was collected is not announced again: ask, not wait
        if *stop.borrow() {
            break;
        }
        let mut records = std::mem::take(&mut next);
        if records.is_empty() {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                message = queue.recv() => if !records.take(message, &claim) { continue },
            }
        }
        let mut clock = metrics::PhaseClock::start();
        // linger counts from the batch's first record: after a long commit the next batch is
        // due at once, so a busy partition never waits on top of its own transaction
        let deadline = records.first_at + limits.linger;
        while !records.is_full(&limits) && !*stop.borrow() {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                message = queue.recv() => { records.take(message, &claim); },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        clock.lap("collect");
        // waiting for a commit slot, the batch keeps growing: fewer, larger transactions
        let slot = loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break 'batches, // nothing stored: Kafka redelivers them
                slot = shared.commit_slots.acquire() => break slot.ok(),
                message = queue.recv(), if !records.is_full(&limits) => { records.take(message, &claim); },
            }
        };
        clock.lap("slot");
        let work = process(&shared, &source, &claim, &records.records, &stop, clock);
        tokio::pin!(work);
        // once stopped, take nothing more: the partition may be split again for a new worker,
        // and a record this one took would never reach it
        let mut stopping = stop.clone();
        let mut stopped = false;
        let outcome = loop {
            stopped |= *stopping.borrow_and_update();
            tokio::select! {
                biased;
                outcome = &mut work => break outcome,
                // a closed channel counts as a stop
                changed = stopping.changed(), if !stopped => stopped |= changed.is_err(),
                message = queue.recv(), if !next.is_full(&limits) && !stopped => { next.take(message, &claim); },
            }
        };
        drop(slot);
        match outcome {
            Ok(()) => {}
            Err(StoreError::Fenced { .. }) => {
                tracing::warn!(topic = %claim.topic, partition = claim.partition, epoch = claim.epoch, "fenced: another processor owns this partition now; stopping it here");
                break;
            }
            Err(StoreError::Shutdown) => break,
            Err(e) => {
                let _ = failures.send(SourceError::PartitionFailed {
                    topic: claim.topic.clone(),
                    partition: claim.partition,
                    reason: format!(
                        "the batch of offsets {}..={} failed permanently: {e}",
                        records.records.first().map_or(-1, |r| r.offset),
                        records.records.last().map_or(-1, |r| r.offset)
                    ),
                });
                break;
            }
        }
        if let Some(last) = records.records.last() {
            lag_offset.stored(last.offset + 1, &consumer, &claim);
        }
    }
    lag_offset.flush(&consumer, &claim);
    tracing::info!(topic = %claim.topic, partition = claim.partition, "partition released");
}

/// Decodes a batch (waiting out registry outages) and commits it (waiting out transient store errors).
async fn process(
    shared: &Shared,
    source: &Source,
    claim: &PartitionClaim,
    records: &[RawRecord],
    stop: &watch::Receiver<bool>,
    mut clock: metrics::PhaseClock,
) -> Result<(), StoreError> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    let mut events: Vec<BatchEvent> = Vec::with_capacity(records.len());
    let mut delays = ExponentialBuilder::default()
        .with_jitter()
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    for record in records {
        loop {
            match decode(record, source, shared.registry.as_ref(), &shared.runner).await {
                Ok(event) => {
                    events.push(event);
                    break;
                }
                Err(unavailable) => {
                    if *stop.borrow() {
                        return Err(StoreError::Shutdown);
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!("{unavailable}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    clock.lap("decode");
    let started = Instant::now();
    let stopping = || *stop.borrow(); // a started batch gets its first attempt even during shutdown
    let crate::store::Committed { report, outbox } = shared
        .store
        .commit_batch(
            claim,
            &events,
            last.offset + 1,
            &shared.runner,
            &source.dlq_topic,
            &stopping,
        )
        .await?;
    if let Some(inboxes) = &shared.relay_inboxes
        && !outbox.is_empty()
    {
        inboxes.committed(&shard_of(&claim.topic, claim.partition), outbox);
    }
    metrics::batch(records.len(), started.elapsed(), report.retries);
    metrics::source_records(&claim.topic, "processed", report.processed);
    metrics::source_records(&claim.topic, "duplicate", report.duplicates);
    metrics::source_records(&claim.topic, "skipped", report.skipped);
    metrics::source_records(&claim.topic, "dead-letter", report.dead_letters.len());
    for (class, topic) in &report.dead_letters {
        metrics::dead_letter(topic, class);
    }
    tracing::debug!(topic = %claim.topic, partition = claim.partition, records = records.len(), processed = report.processed,
        duplicates = report.duplicates, dead = report.dead_letters.len(), "batch committed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, bytes: usize) -> RawRecord {
        RawRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            value: Some(vec![0; bytes]),
            event_id_header: None,
        }
    }

    #[tokio::test]
    async fn a_batch_is_full_at_either_limit_and_lingers_from_its_first_record() {
        let limits = crate::config::BatchSettings {
            max_records: 3,
            max_bytes: 100,
            linger: Duration::from_millis(20),
        };
        let mut batch = Batch::default();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = tokio::time::Instant::now();
        batch.push(record(0, 10));
        let first = batch.first_at;
        assert!(
            first >= before,
            "linger starts at the first record, not at the batch's making"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        batch.push(record(1, 10));
        assert_eq!(batch.first_at, first, "later records do not move it");
        assert!(!batch.is_full(&limits));
        batch.push(record(2, 10));
        assert!(batch.is_full(&limits), "3 records");
        let mut big = Batch::default();
        big.push(record(0, 100));
        assert!(big.is_full(&limits), "100 bytes");
    }
}
