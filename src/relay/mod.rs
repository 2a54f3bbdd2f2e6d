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
mod publisher;

pub use publisher::reports_served;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{Document, doc};
use tokio::sync::watch;

pub use errors::{Recovery, classify};
pub use inbox::Inboxes;
pub use publisher::PublishError;

use crate::config::Topology;
use crate::store::Store;
use crate::store::documents::{OFFSETS, shard_of, shard_of_offsets_id};
use inbox::Inbox;
use lease::Lease;
use members::Share;
use publisher::ShardPublisher;

/// Every outbox shard of a topology in a fixed order (its index is its checkpoint partition).
pub fn shards(topology: &Topology) -> Vec<String> {
    let mut shards: Vec<String> = topology
        .sources
        .iter()
        .flat_map(|s| (0..s.partitions).map(move |p| shard_of(&s.topic, p)))
        .collect();
    shards.sort();
    shards
}

/// The inboxes a relay of `topology` reads: build them before [`run`] and give them to this
/// process's processor too, which then hands over what it commits.
pub fn inboxes(topology: &Topology) -> Arc<Inboxes> {
    // two full Kafka transactions' worth per shard: enough to publish from while the next batch
    // commits, bounded for shards another relay publishes (nobody takes from those)
    Inboxes::new(&shards(topology), topology.relay.batch_records.max(1) * 2)
}

/// Runs the relay until `stop` turns true: competes for every shard's lease and publishes those it
/// wins, from `inboxes` (see [`inboxes`]) and the store.
pub async fn run(
    topology: Arc<Topology>,
    store: Store,
    inboxes: Arc<Inboxes>,
    stop: watch::Receiver<bool>,
) {
    let owner = format!("{}-{}", hostname(), uuid::Uuid::now_v7());
    let shards = shards(&topology);
    let watcher = tokio::spawn(wake_on_appends(
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
    for (index, shard) in shards.into_iter().enumerate() {
        let Some(inbox) = inboxes.get(&shard).map(Arc::clone) else {
            continue; // built from the same topology: every shard has one
        };
        tasks.push(tokio::spawn(own_shard(
            Arc::clone(&member),
            shard,
            index as i32,
            inbox,
            stop.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    watcher.abort();
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

/// Wakes a shard's publisher when its partition's offsets document moves `outboxSeq`: every
/// append to a shard's outbox (a batch, a rebuild's emit) moves it in the same transaction, so one
/// change event per batch says what one event per outbox record said before, at a fraction of the
/// store's work, and it says how far the shard now reaches. An update that leaves `outboxSeq`
/// alone (a batch with nothing to emit) wakes nobody. Polling (`relay.poll_interval_ms`) covers
/// a broken stream.
async fn wake_on_appends(store: Store, inboxes: Arc<Inboxes>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = store
            .database()
            .collection::<Document>(OFFSETS)
            .watch()
            // the document key (`group/topic/partition`) and the changed fields (`outboxSeq`)
            .pipeline([
                doc! { "$match": { "operationType": { "$in": ["insert", "update", "replace"] } } },
                doc! { "$project": { "operationType": 1, "documentKey": 1, "updateDescription": 1 } },
            ])
            .await;
        match stream {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    next = stream.next() => match next {
                        Some(Ok(event)) => {
                            let shard = event.document_key.as_ref().and_then(|k| k.get_str("_id").ok()).and_then(shard_of_offsets_id);
                            if let Some(inbox) = shard.and_then(|s| inboxes.get(&s)) {
                                match event.update_description {
                                    Some(update) => if let Ok(seq) = update.updated_fields.get_i64("outboxSeq") {
                                        inbox.announce(Some(seq));
                                    },
                                    None => inbox.announce(None),
                                }
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!("outbox change stream broke, polling meanwhile: {e}");
                            break;
                        }
                        None => break,
                    },
                }
            },
            Err(e) => tracing::debug!("no outbox change stream, polling: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}
