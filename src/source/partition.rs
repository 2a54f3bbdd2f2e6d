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
use crate::store::{BatchEvent, PartitionClaim, StoreError};

/// Everything a partition worker shares with the others.
pub struct Shared {
    pub store: crate::store::Store,
    pub registry: Arc<crate::schema::registry::Registry>,
    pub runner: Arc<crate::stage::StageRunner>,
    /// Set once the consumer joined its group (for `/readyz`).
    pub joined: Arc<std::sync::atomic::AtomicBool>,
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
    loop {
        let mut records: Vec<RawRecord> = Vec::new();
        let mut bytes = 0;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            message = queue.recv() => match message {
                Ok(m) => { let r = received(&m); bytes += r.size(); records.push(r); }
                Err(e) => { tracing::warn!(topic = %claim.topic, partition = claim.partition, "consume error: {e}"); continue; }
            },
        }
        let mut clock = metrics::PhaseClock::start();
        let deadline = tokio::time::Instant::now() + limits.linger;
        while records.len() < limits.max_records && bytes < limits.max_bytes && !*stop.borrow() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => break,
                message = queue.recv() => match message {
                    Ok(m) => { let r = received(&m); bytes += r.size(); records.push(r); }
                    Err(e) => tracing::warn!(topic = %claim.topic, partition = claim.partition, "consume error: {e}"),
                },
            }
        }
        clock.lap("collect");
        match process(&shared, &source, &claim, &records, &stop, clock).await {
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
                    reason: format!("a batch failed permanently: {e}"),
                });
                break;
            }
        }
        if let (Some(last), Some(consumer)) = (records.last(), consumer.upgrade()) {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(
                    &claim.topic,
                    claim.partition,
                    rdkafka::Offset::Offset(last.offset + 1),
                )
                .is_ok()
            {
                // for lag tools only: the truth is the offset stored with the batch in Mongo
                let _ = consumer.commit(&tpl, CommitMode::Async);
            }
            drop(tpl);
        }
    }
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
    let report = shared
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
