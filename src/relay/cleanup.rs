//! Deleting published outbox records, off the publish path, and the outbox gauges.
//!
//! What was published is decided by the shard's checkpoint on Kafka, never by what is left in
//! the outbox, so deleting is tidying: it runs in a task of its own, and a slow delete no longer
//! holds up the next transaction (measured: a 5,000-record delete stalled the shard's publishing
//! for its whole duration, every 2 s).

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::Document;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics;
use crate::store::Store;
use crate::store::documents::OUTBOX;
use crate::store::outbox;

/// Published records are deleted once this many have piled up, or this long after the last
/// delete, whichever comes first: one delete per many transactions costs the store far fewer
/// round trips and index updates (deleting every 500 ms instead made batch transactions ~1.5×
/// slower). Each shard starts at a random point of the period: 6 shards deleting at the same
/// moment every 2 s cut the processor's batches per second by two thirds for that moment.
const CLEAN_UP_RECORDS: i64 = 5_000;
const CLEAN_UP_EVERY: Duration = Duration::from_secs(2);
/// How often the outbox gauges (pending, oldest age) are refreshed: they cost two queries.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Tidies one shard while its publisher runs; told how far the shard is published.
pub struct Cleaner {
    published: watch::Sender<i64>,
    task: JoinHandle<()>,
}

impl Cleaner {
    /// Starts tidying `shard`, of which everything up to `published` is published already.
    pub fn start(store: Store, shard: Arc<str>, published: i64) -> Self {
        let (tx, rx) = watch::channel(published);
        let task = tokio::spawn(tidy(store, shard, rx));
        Self {
            published: tx,
            task,
        }
    }

    /// Everything up to `seq` is committed on Kafka.
    pub fn published(&self, seq: i64) {
        self.published.send_replace(seq);
    }

    /// Deletes what is published and not yet deleted, then stops (a graceful stop leaves an
    /// empty outbox behind).
    pub async fn finish(self) {
        let Self { published, task } = self;
        drop(published);
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
}

async fn tidy(store: Store, shard: Arc<str>, mut published: watch::Receiver<i64>) {
    let collection = store.database().collection::<Document>(OUTBOX);
    // the first delete is unbounded below: a previous owner may have left anything up to here
    let mut cleaned: Option<i64> = None;
    let mut due = tokio::time::Instant::now() + CLEAN_UP_EVERY.mul_f64(rand::random::<f64>());
    let mut gauge_due = tokio::time::Instant::now();
    loop {
        let open = tokio::select! {
            changed = published.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(due) => true,
        };
        let upto = *published.borrow_and_update();
        let behind = cleaned.map_or(i64::MAX, |c| upto - c);
        let now = tokio::time::Instant::now();
        if behind > 0 && (behind >= CLEAN_UP_RECORDS || now >= due || !open) {
            // bounded on both sides: the index walk skips what earlier deletes left behind
            let first = cleaned.map_or(0, |from| from + 1);
            match outbox::delete_published(&collection, &shard, first, upto).await {
                Ok(_) => cleaned = Some(upto),
                Err(e) => {
                    tracing::warn!(shard = %shard, "deleting published outbox records failed (retried later): {e}")
                }
            }
            due = now + CLEAN_UP_EVERY;
        } else if now >= due {
            due = now + CLEAN_UP_EVERY;
        }
        if now >= gauge_due {
            gauge_due = now + GAUGE_EVERY;
            if let Err(e) = refresh_gauges(&collection, &shard, upto).await {
                tracing::debug!(shard = %shard, "outbox gauges not refreshed: {e}");
            }
        }
        if !open {
            return;
        }
    }
}

/// Records after `upto` (not yet published) and how long the oldest of them has waited.
async fn refresh_gauges(
    collection: &mongodb::Collection<Document>,
    shard: &str,
    upto: i64,
) -> Result<(), mongodb::error::Error> {
    let (pending, oldest) = outbox::unpublished(collection, shard, upto).await?;
    let age = oldest.map_or(Duration::ZERO, |t| {
        Duration::from_millis(
            (mongodb::bson::DateTime::now().timestamp_millis() - t.timestamp_millis()).max(0)
                as u64,
        )
    });
    metrics::outbox(shard, pending, age);
    Ok(())
}
