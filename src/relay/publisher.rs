//! Publishes one outbox shard: records in `seq` order plus the shard's checkpoint, one Kafka transaction each batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::Document;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

use super::checkpoint::{self, Checkpoint};
use super::cleanup::Cleaner;
use super::errors::{Recovery, classify};
use super::inbox::Inbox;
use super::lease::Lease;
use super::record::{Pending, pending};
use crate::config::Topology;
use crate::kafka_client::retire_producer;
use crate::metrics;
use crate::store::Store;
use crate::store::documents::OUTBOX;
use crate::store::outbox;

/// How often an idle publisher reads the store with nothing announced: appends are announced
/// (handed over, or seen by the offsets poll), so this is a safety net only.
const STORE_READ_EVERY: Duration = Duration::from_secs(5);

/// Why a shard publisher stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("fenced: a newer relay owns shard {0}")]
    Fenced(String),
    #[error("lease on shard {0} lost")]
    LeaseLost(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("mongo: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A blocking Kafka call of the shard's publisher panicked.
    #[error("shard {0}: a Kafka call panicked")]
    Panicked(String),
    /// A record the relay cannot publish as it is (edited by hand, or of a layout this release
    /// does not know): the shard stops there, so nothing is skipped or published out of order.
    #[error("shard {shard}: the outbox record after seq {after} cannot be published: {reason}")]
    Malformed {
        shard: String,
        after: i64,
        reason: String,
    },
}

/// Crash-test hook: `OUTFLOW_CRASH_AT=<point>` aborts the process there, as a SIGKILL would, so the
/// fault tests can stop the relay at the worst moment (between the Kafka commit and the Mongo clean-up).
fn crash_point(point: &str) {
    if std::env::var("OUTFLOW_CRASH_AT").is_ok_and(|p| p == point) {
        tracing::error!("OUTFLOW_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Waits between retries of a failed transaction: 200 ms growing to 10 s, reset by a success.
fn retry_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .build()
}

/// Publishes `shard` while this relay holds its lease.
pub struct ShardPublisher {
    pub topology: Arc<Topology>,
    pub store: Store,
    pub shard: String,
    /// The shard's partition on the checkpoint topic.
    pub checkpoint_partition: i32,
    pub inbox: Arc<Inbox>,
    pub lease: Lease,
}

impl ShardPublisher {
    fn producer(&self) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        let mut config = crate::kafka_client::producer_config(&self.topology.kafka);
        config
            .set(
                "transactional.id",
                format!("outflow-{}-relay-{}", self.topology.name, self.shard),
            )
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // a transaction's records are enqueued at once and their deliveries awaited before
            // the commit: a linger would only delay every transaction (median 8–9 ms with 5)
            .set("linger.ms", "0")
            .set("transaction.timeout.ms", "60000")
            // a record not delivered in 20 s (a broker restart can leave a producer waiting on
            // stale metadata) fails the transaction; the retry builds a fresh producer
            .set("message.timeout.ms", "20000");
        config.create()
    }

    /// Runs until stopped, fenced or the lease is lost; re-initialises the producer on fatal errors.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), PublishError> {
        let mut cleaner: Option<Cleaner> = None;
        'producer: loop {
            let producer = Arc::new(self.producer()?);
            let init = Arc::clone(&producer);
            tokio::task::spawn_blocking(move || init.init_transactions(Duration::from_secs(30)))
                .await
                .map_err(|_| PublishError::Panicked(self.shard.clone()))??;
            let database = self.store.database_id().await?;
            let kafka = self.topology.kafka.clone();
            let (topic, partition, shard, of_database) = (
                self.topology.relay.checkpoint_topic.clone(),
                self.checkpoint_partition,
                self.shard.clone(),
                database.clone(),
            );
            let mut last = tokio::task::spawn_blocking(move || {
                let whose = (shard.as_str(), of_database.as_str());
                checkpoint::read(&kafka, &topic, partition, whose, Duration::from_secs(30))
            })
            .await
            .map_err(|_| PublishError::Panicked(self.shard.clone()))??;
            tracing::info!(shard = %self.shard, checkpoint = last, "relay owns shard");
            self.warn_if_renumbered(last).await;
            // records at or below the checkpoint were published: they are the cleaner's
            match &cleaner {
                Some(c) => c.published(last),
                None => {
                    cleaner = Some(Cleaner::start(
                        self.store.clone(),
                        self.shard.as_str().into(),
                        last,
                    ))
                }
            }
            let mut retry_delays = retry_backoff();
            loop {
                if *stop.borrow() {
                    if let Some(c) = cleaner.take() {
                        c.finish().await;
                    }
                    return Ok(());
                }
                if !self.lease.renew_if_due(&self.store).await? {
                    return Err(PublishError::LeaseLost(self.shard.clone()));
                }
                let batch = self.next_batch(last).await?;
                if batch.is_empty() {
                    tokio::select! {
                        _ = self.inbox.woken() => {}
                        // a read now and then, should an append ever not be announced
                        _ = tokio::time::sleep(STORE_READ_EVERY) => self.inbox.read_store(),
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                let started = Instant::now();
                match self.publish(&producer, &batch, &database).await {
                    Ok(()) => {
                        retry_delays = retry_backoff();
                        last = batch.last().map_or(last, |p| p.seq);
                        metrics::relay_txn(started.elapsed());
                        crash_point("relay-after-kafka-commit");
                        if let Some(c) = &cleaner {
                            c.published(last);
                        }
                    }
                    Err(e) => match classify(&e) {
                        Recovery::Retry | Recovery::AbortAndRetry => {
                            tracing::warn!(shard = %self.shard, "transaction failed, aborting and retrying: {e}");
                            let p = Arc::clone(&producer);
                            let aborted = tokio::task::spawn_blocking(move || {
                                p.abort_transaction(Duration::from_secs(10))
                            })
                            .await;
                            if !matches!(aborted, Ok(Ok(()))) {
                                // a producer that cannot even abort is wedged: start afresh
                                tracing::warn!(shard = %self.shard, "abort failed, re-initialising the producer: {aborted:?}");
                                // its successor's init_transactions fences it and aborts its
                                // open transaction
                                retire_producer(producer);
                                continue 'producer;
                            }
                            // growing waits: an error that repeats (a topic the brokers refuse) must
                            // not spin on the brokers or the log
                            tokio::time::sleep(
                                retry_delays.next().unwrap_or(Duration::from_secs(10)),
                            )
                            .await;
                        }
                        Recovery::Reinit => {
                            tracing::warn!(shard = %self.shard, "producer unusable, re-initialising: {e}");
                            retire_producer(producer);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue 'producer;
                        }
                        Recovery::Fenced => return Err(PublishError::Fenced(self.shard.clone())),
                    },
                }
            }
        }
    }

    /// The next records after `after`, in `seq` order: those this process's processor handed
    /// over, else (when the store may hold more than that) read from the store; empty when the
    /// shard is not known to reach past `after`.
    async fn next_batch(&self, after: i64) -> Result<Vec<Pending>, PublishError> {
        let n = self.topology.relay.batch_records.max(1);
        let handed = self.inbox.take(after, n);
        if !handed.is_empty() {
            metrics::relay_batch("inbox");
            return self.to_pending(&handed, after);
        }
        if !self.inbox.needs_read(after) {
            return Ok(Vec::new());
        }
        let docs = self.read_store(after, n as i64).await?;
        if docs.len() >= n {
            self.inbox.read_store(); // a full batch: there may be more
        }
        metrics::relay_batch(if docs.is_empty() { "none" } else { "store" });
        self.to_pending(&docs, after)
    }

    /// `docs` ready to produce, in order; the first that cannot be stops the shard (see
    /// [`PublishError::Malformed`]).
    fn to_pending(&self, docs: &[Document], after: i64) -> Result<Vec<Pending>, PublishError> {
        let mut ready: Vec<Pending> = Vec::with_capacity(docs.len());
        for doc in docs {
            match pending(doc) {
                Ok(p) => ready.push(p),
                Err(reason) => {
                    return Err(PublishError::Malformed {
                        shard: self.shard.clone(),
                        after: ready.last().map_or(after, |p| p.seq),
                        reason,
                    });
                }
            }
        }
        Ok(ready)
    }

    /// Warns when the shard's outbox numbering is behind what its checkpoint says is published:
    /// the records numbered up to the checkpoint again are taken for published. Expected after a
    /// database is restored from a backup (reprocessing writes again what was published); a loss
    /// when offsets documents were deleted. Normally the numbering is ahead: a record is
    /// published only once its number is committed.
    async fn warn_if_renumbered(&self, published: i64) {
        let Some((topic, partition)) = self
            .shard
            .rsplit_once(':')
            .and_then(|(topic, p)| Some((topic, p.parse::<i32>().ok()?)))
        else {
            return;
        };
        match self.store.shard_seq_floor(topic, partition).await {
            Ok(numbered) if numbered < published => tracing::warn!(
                shard = %self.shard,
                "the shard's outbox is numbered up to {numbered} but its checkpoint says {published} \
                 were published: records {} to {published} will be taken for published and not \
                 sent. Expected after restoring the database from a backup (they were sent before \
                 it); records are lost if offsets documents were deleted by hand",
                numbered + 1
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(shard = %self.shard, "cannot read the shard's outbox numbering: {e}")
            }
        }
    }

    /// Up to `n` records after `after` from the store (see [`outbox::read`]).
    async fn read_store(&self, after: i64, n: i64) -> Result<Vec<Document>, PublishError> {
        let collection = self.store.majority_read(OUTBOX);
        Ok(outbox::read(&collection, &self.shard, after, n).await?)
    }

    /// One Kafka transaction: the records in order, then the checkpoint (of `database`'s outbox);
    /// committed only after every delivery report arrived and was served (see [`reports_served`]).
    async fn publish(
        &self,
        producer: &Arc<FutureProducer>,
        batch: &[Pending],
        database: &str,
    ) -> Result<(), rdkafka::error::KafkaError> {
        producer.begin_transaction()?;
        let mut deliveries = Vec::with_capacity(batch.len() + 1);
        for p in batch {
            let mut record = FutureRecord::to(&p.topic)
                .key(&p.key)
                .headers(p.headers.clone());
            if let Some(payload) = &p.payload {
                record = record.payload(payload);
            }
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(e),
            }
        }
        let last = batch.last().map_or(0, |p| p.seq);
        let checkpoint = serde_json::to_vec(&Checkpoint {
            shard: self.shard.clone(),
            seq: last,
            at: crate::source::decode::chrono_millis(),
            database: Some(database.to_string()),
        })
        .unwrap_or_default();
        let record = FutureRecord::to(&self.topology.relay.checkpoint_topic)
            .partition(self.checkpoint_partition)
            .key(self.shard.as_bytes())
            .payload(&checkpoint);
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => return Err(e),
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(rdkafka::error::KafkaError::Canceled),
            }
        }
        reports_served(producer, Duration::from_secs(5)).await;
        let p = Arc::clone(producer);
        tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(30)))
            .await
            .map_err(|_| rdkafka::error::KafkaError::Canceled)??;
        let mut per_topic: std::collections::BTreeMap<&str, usize> =
            std::collections::BTreeMap::new();
        for p in batch {
            *per_topic.entry(p.topic.as_str()).or_default() += 1;
        }
        for (topic, n) in per_topic {
            metrics::relay_published(topic, n);
        }
        Ok(())
    }
}

/// Waits (at most `limit`) until librdkafka is done with every delivery report. A delivery future
/// resolves inside the report's callback, before librdkafka counts the message as done; a commit
/// started then flushes, and that flush waits ~100 ms for its next poll. Measured on the local
/// broker, one record per transaction: commit p50 1 ms / p90 101 ms without this wait, p99 6 ms
/// with it (the relay's share of every record's latency).
pub async fn reports_served(producer: &FutureProducer, limit: Duration) {
    let deadline = Instant::now() + limit;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
