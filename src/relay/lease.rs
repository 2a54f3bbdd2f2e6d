//! Mongo leases on outbox shards: one relay publishes a shard at a time; a dead one's lease expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use super::members::Share;
use crate::store::Store;
use crate::store::documents::LEASES;

/// This relay's hold on one shard.
#[derive(Debug, Clone)]
pub struct Lease {
    pub shard: String,
    pub owner: String,
    pub ttl: Duration,
    renewed: Instant,
    share: Arc<Share>,
    /// Set when the lease was given up to balance the relays (not lost to an expiry).
    yielded: Arc<AtomicBool>,
}

impl Lease {
    /// Takes the shard if it is free, expired or already ours; `None` if another relay holds it.
    pub async fn acquire(
        store: &Store,
        shard: &str,
        owner: &str,
        ttl: Duration,
        share: &Arc<Share>,
    ) -> Result<Option<Lease>, mongodb::error::Error> {
        let now = DateTime::now();
        let expires = DateTime::from_millis(now.timestamp_millis() + ttl.as_millis() as i64);
        let result = store
            .database()
            .collection::<Document>(LEASES)
            .find_one_and_update(
                doc! { "_id": shard, "$or": [ { "owner": owner }, { "expiresAt": { "$lt": now } } ] },
                doc! { "$set": { "owner": owner, "expiresAt": expires }, "$inc": { "generation": 1_i64 } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match result {
            Ok(Some(_)) => Ok(Some(Lease {
                shard: shard.to_string(),
                owner: owner.to_string(),
                ttl,
                renewed: Instant::now(),
                share: Arc::clone(share),
                yielded: Arc::new(AtomicBool::new(false)),
            })),
            Ok(None) => Ok(None),
            // the upsert collided with the live lease of another relay
            Err(e) if crate::store::is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True when the lease was given up for balance rather than lost.
    pub fn yielded(&self) -> bool {
        self.yielded.load(Ordering::SeqCst)
    }

    /// Extends the lease when a third of its time has passed; `false` when it was lost meanwhile,
    /// or given up because this relay holds more than its fair share (see `members`).
    pub async fn renew_if_due(&mut self, store: &Store) -> Result<bool, mongodb::error::Error> {
        if self.share.should_yield() {
            self.yielded.store(true, Ordering::SeqCst);
            self.release(store).await;
            return Ok(false);
        }
        if self.renewed.elapsed() < self.ttl / 3 {
            return Ok(true);
        }
        let now = DateTime::now();
        let expires = DateTime::from_millis(now.timestamp_millis() + self.ttl.as_millis() as i64);
        let updated = store
            .database()
            .collection::<Document>(LEASES)
            .update_one(
                doc! { "_id": &self.shard, "owner": &self.owner },
                doc! { "$set": { "expiresAt": expires } },
            )
            .await?;
        self.renewed = Instant::now();
        Ok(updated.matched_count == 1)
    }

    /// Gives the shard up at once (on shutdown), so another relay need not wait for expiry.
    pub async fn release(&self, store: &Store) {
        let released = store
            .database()
            .collection::<Document>(LEASES)
            .update_one(
                doc! { "_id": &self.shard, "owner": &self.owner },
                doc! { "$set": { "expiresAt": DateTime::from_millis(0) } },
            )
            .await;
        if let Err(e) = released {
            tracing::warn!(
                shard = %self.shard,
                "cannot release the relay lease ({e}): another relay takes the shard once it expires, within {:?}",
                self.ttl
            );
        }
    }
}
