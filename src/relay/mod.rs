//! The outbox relay: publishes outbox records to Kafka exactly once, in order per shard.
//!
//! # Exactly once, Mongo → Kafka
//! Outbox shard = source partition: one writer, so `seq` is commit order. A relay publishes a
//! shard only while it holds the shard's Mongo lease, with a transactional producer whose
//! `transactional.id` is fixed per shard: `init_transactions` fences any older producer of the
//! shard (a zombie relay) and completes its open transaction. Each Kafka transaction carries a
//! batch of records in `seq` order AND the shard's checkpoint (the last `seq` in it). On start the
//! relay reads the checkpoint read_committed and resumes after it, so a record is published iff the
//! checkpoint moved past it. Deleting published records from Mongo comes after and is only tidying.

mod checkpoint;
mod cleanup;
mod errors;
mod inbox;
mod lease;
mod members;
pub mod placement;
mod publisher;
mod record;

pub use publisher::reports_served;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use tokio::sync::watch;

pub use errors::{Recovery, classify};
pub use inbox::Inboxes;
pub use publisher::PublishError;

use crate::config::Topology;
use crate::store::Store;
use crate::store::documents::{OFFSETS, offsets_id, shard_of};
use inbox::Inbox;
use lease::Lease;
use members::Share;
use publisher::ShardPublisher;

/// Every outbox shard of a topology, sorted (the order of the first [`placement`]).
pub fn shards(topology: &Topology) -> Vec<String> {
    let mut shards: Vec<String> = partitions(topology).map(|(_, shard)| shard).collect();
    shards.sort();
    shards
}

/// Every source partition of `topology`: its offsets document's `_id` and its outbox shard.
fn partitions(topology: &Topology) -> impl Iterator<Item = (String, String)> + '_ {
    let group = &topology.kafka.group_id;
    topology.sources.iter().flat_map(move |s| {
        (0..s.partitions).map(move |p| (offsets_id(group, &s.topic, p), shard_of(&s.topic, p)))
    })
}

/// The inboxes a relay of `topology` reads: build them before [`run`] and give them to this
/// process's processor too, which then hands over what it commits.
pub fn inboxes(topology: &Topology) -> Arc<Inboxes> {
    // two full Kafka transactions' worth per shard: enough to publish from while the next batch
    // commits, bounded for shards another relay publishes (nobody takes from those)
    Inboxes::new(&shards(topology), topology.relay.batch_records.max(1) * 2)
}

/// Runs the relay until `stop` turns true: competes for every shard's lease and publishes those it
/// wins, from `inboxes` (see [`inboxes`]) and the store, each with its checkpoint where
/// [`placement::place`] put it.
pub async fn run(
    topology: Arc<Topology>,
    store: Store,
    (inboxes, placements): (Arc<Inboxes>, placement::Placements),
    stop: watch::Receiver<bool>,
) {
    let owner = format!("{}-{}", hostname(), uuid::Uuid::now_v7());
    let shards = shards(&topology);
    let announcer = tokio::spawn(announce_appends(
        Arc::clone(&topology),
        store.clone(),
        Arc::clone(&inboxes),
        stop.clone(),
    ));
    let share = Share::new(shards.len());
    let membership = members::join(
        store.clone(),
        owner.clone(),
        topology.relay.lease_ttl,
        Arc::clone(&share),
        stop.clone(),
    )
    .await;
    let member = Arc::new(Member {
        topology,
        store,
        owner,
        share,
    });
    let mut tasks = Vec::new();
    for shard in shards {
        // both built from the same topology: every shard has an inbox and a place
        let (Some(inbox), Some(&partition)) = (inboxes.get(&shard), placements.get(&shard)) else {
            continue;
        };
        tasks.push(tokio::spawn(own_shard(
            Arc::clone(&member),
            shard,
            partition,
            Arc::clone(inbox),
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    announcer.abort();
    let _ = membership.await;
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "relay".to_string())
}

/// What every shard task of one relay shares.
struct Member {
    topology: Arc<Topology>,
    store: Store,
    /// This relay's name on its leases and its heartbeat.
    owner: String,
    share: Arc<Share>,
}

/// Tries to lease `shard` until stopped; publishes it whenever the lease is ours.
async fn own_shard(
    member: Arc<Member>,
    shard: String,
    partition: i32,
    inbox: Arc<Inbox>,
    mut stop: watch::Receiver<bool>,
) {
    let Member {
        topology,
        store,
        owner,
        share,
    } = member.as_ref();
    let ttl = topology.relay.lease_ttl;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = if share.may_take_more() {
            Lease::acquire(store, &shard, owner, ttl, share).await
        } else {
            Ok(None) // this relay holds its fair share: leave the shard to another one
        };
        match attempt {
            Ok(Some(lease)) => {
                share.took();
                let mut publisher = ShardPublisher {
                    topology: Arc::clone(topology),
                    store: store.clone(),
                    shard: shard.clone(),
                    checkpoint_partition: partition,
                    inbox: Arc::clone(&inbox),
                    lease: lease.clone(),
                };
                inbox.open();
                let outcome = publisher.run(stop.clone()).await;
                inbox.close();
                share.dropped(lease.yielded());
                match outcome {
                    Ok(()) => {
                        lease.release(store).await;
                        return;
                    }
                    Err(_) if lease.yielded() => {
                        tracing::info!(shard = %shard, "shard given up to balance the relays")
                    }
                    Err(e @ PublishError::Malformed { .. }) => {
                        tracing::error!(shard = %shard, "relay stopped publishing the shard: {e}; fix or remove that record in the outbox collection")
                    }
                    Err(e) => {
                        tracing::warn!(shard = %shard, "relay stopped publishing the shard: {e}")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(shard = %shard, "lease check failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Tells each shard's inbox how far the shard reaches, read from the partitions' offsets
/// documents every `relay.poll_interval_ms`: every append to a shard's outbox (a batch, a
/// rebuild's emit) moves its partition's `outboxSeq` in the same transaction. One small query
/// per interval, whatever the write load; a change stream (used before) costs the server every
/// oplog entry of the database, the event log's payloads included: 7% of SecantusDB's CPU in the
/// benchmark, and 5–10% of end-to-end throughput. Appends this process commits reach the inbox
/// at once (see [`Inboxes::committed`]); the poll is for those of other processes.
async fn announce_appends(
    topology: Arc<Topology>,
    store: Store,
    inboxes: Arc<Inboxes>,
    mut stop: watch::Receiver<bool>,
) {
    let watched: HashMap<String, Arc<Inbox>> = partitions(&topology)
        .filter_map(|(id, shard)| inboxes.get(&shard).map(|inbox| (id, Arc::clone(inbox))))
        .collect();
    let ids: Vec<&String> = watched.keys().collect();
    let offsets = store.majority_read(OFFSETS);
    let mut tick = tokio::time::interval(topology.relay.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let found = offsets
            .find(doc! { "_id": { "$in": &ids } })
            .projection(doc! { "outboxSeq": 1 })
            .await;
        let docs: Result<Vec<Document>, _> = match found {
            Ok(cursor) => cursor.try_collect().await,
            Err(e) => Err(e),
        };
        match docs {
            Ok(docs) => {
                for d in docs {
                    let inbox = d.get_str("_id").ok().and_then(|id| watched.get(id));
                    if let (Some(inbox), Ok(seq)) = (inbox, d.get_i64("outboxSeq")) {
                        inbox.announce(Some(seq));
                    }
                }
            }
            // every interval while Mongo is away: said once a minute, the relay's own reads
            // report the rest
            Err(e) if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) => {
                warned = Some(std::time::Instant::now());
                tracing::warn!("reading the offsets documents for appends failed: {e}");
            }
            Err(e) => tracing::debug!("reading the offsets documents for appends failed: {e}"),
        }
    }
}
