//! Relay membership: live relays heartbeat in Mongo, and each holds about its fair share of shards.
//!
//! Without it the first relay to start would lease every shard and the others would only stand by.
//! Each relay counts the live members (heartbeat newer than the lease TTL) and takes at most
//! `ceil(shards / members)` shards; one holding more gives the excess up between two Kafka
//! transactions (exactly like a shutdown: the lease is released, nothing is in flight), and the
//! others pick those shards up on their next lease attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc};
use tokio::sync::watch;

use crate::store::Store;

/// The collection of relay heartbeats.
pub const RELAY_MEMBERS: &str = "relay_members";

/// What this relay holds and may hold; shared by its shard tasks and their leases.
#[derive(Debug)]
pub struct Share {
    shards: usize,
    fair: AtomicUsize,
    held: AtomicUsize,
    giving_up: AtomicUsize,
}

impl Share {
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            shards,
            fair: AtomicUsize::new(shards),
            held: AtomicUsize::new(0),
            giving_up: AtomicUsize::new(0),
        })
    }

    fn set_members(&self, members: usize) {
        let fair = self.shards.div_ceil(members.max(1));
        self.fair.store(fair.max(1), Ordering::SeqCst);
    }

    /// True while this relay holds fewer shards than its fair share.
    pub fn may_take_more(&self) -> bool {
        self.held.load(Ordering::SeqCst) < self.fair.load(Ordering::SeqCst)
    }

    pub fn took(&self) {
        self.held.fetch_add(1, Ordering::SeqCst);
    }

    /// A shard is no longer held; `yielded` when it was given up for balance.
    pub fn dropped(&self, yielded: bool) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        if yielded {
            self.giving_up.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Claims one shard's worth of excess to give up; false when the relay holds no more than its share.
    pub fn should_yield(&self) -> bool {
        let excess = self
            .held
            .load(Ordering::SeqCst)
            .saturating_sub(self.fair.load(Ordering::SeqCst));
        self.giving_up
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |g| {
                (g < excess).then_some(g + 1)
            })
            .is_ok()
    }
}

/// Writes one heartbeat and counts the live members.
async fn beat(store: &Store, owner: &str, ttl: Duration) -> Result<usize, mongodb::error::Error> {
    let members = store.database().collection::<Document>(RELAY_MEMBERS);
    let now = DateTime::now();
    let expires = DateTime::from_millis(now.timestamp_millis() + ttl.as_millis() as i64);
    members
        .update_one(
            doc! { "_id": owner },
            doc! { "$set": { "expiresAt": expires } },
        )
        .upsert(true)
        .await?;
    let live = members
        .count_documents(doc! { "expiresAt": { "$gt": now } })
        .await?;
    Ok(live as usize)
}

/// Registers this relay and keeps the fair share current until `stop`; the first heartbeat is
/// written before it returns, so the shard tasks start with an up-to-date count.
pub async fn join(
    store: Store,
    owner: String,
    ttl: Duration,
    share: Arc<Share>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    match beat(&store, &owner, ttl).await {
        Ok(n) => share.set_members(n),
        Err(e) => tracing::warn!("relay heartbeat failed: {e}"),
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
                _ = stop.changed() => {
                    let members = store.database().collection::<Document>(RELAY_MEMBERS);
                    let _ = members.delete_one(doc! { "_id": &owner }).await;
                    return;
                }
            }
            match beat(&store, &owner, ttl).await {
                Ok(n) => share.set_members(n),
                Err(e) => tracing::warn!("relay heartbeat failed: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_gives_up_exactly_its_excess() {
        let share = Share::new(6);
        share.set_members(1);
        for _ in 0..6 {
            assert!(share.may_take_more());
            share.took();
        }
        assert!(!share.may_take_more());
        assert!(!share.should_yield(), "alone, it keeps all six");
        share.set_members(2);
        let yielded = (0..6).filter(|_| share.should_yield()).count();
        assert_eq!(yielded, 3, "with two relays, three shards go");
        for _ in 0..3 {
            share.dropped(true);
        }
        assert!(!share.should_yield());
        assert!(
            !share.may_take_more(),
            "three is the fair share of two relays"
        );
        share.set_members(4);
        assert_eq!(share.fair.load(Ordering::SeqCst), 2);
    }
}
