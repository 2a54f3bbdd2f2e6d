//! Where each outbox shard's checkpoint lives: a partition of the checkpoint topic, assigned once
//! and kept in Mongo, so adding a source or partitions never moves an existing shard's checkpoint.
//!
//! A shard that read its checkpoint from another partition would find none and publish again
//! whatever the outbox still holds; a shard past the topic's last partition could not publish.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use crate::config::Topology;
use crate::store::documents::PLACEMENTS;
use crate::store::{Store, StoreError};
use crate::topics::TopicError;

/// Each shard's partition on the checkpoint topic.
pub type Placements = HashMap<String, i32>;

/// Why the shards could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("placing outbox shards on the checkpoint topic: {0}")]
    Store(#[from] StoreError),
    #[error("growing the checkpoint topic: {0}")]
    Topic(#[from] TopicError),
    #[error(
        "placing outbox shards on the checkpoint topic: other relays kept taking the same partitions"
    )]
    Contended,
}

/// Places every shard of `topology` (keeping the places of those placed before) and grows the
/// checkpoint topic to hold them all.
pub async fn place(topology: &Topology, store: &Store) -> Result<Placements, PlacementError> {
    let placements = assign(store, &super::shards(topology)).await?;
    let needed = placements.values().max().map_or(1, |p| p + 1);
    crate::topics::grow(&topology.kafka, &topology.relay.checkpoint_topic, needed).await?;
    Ok(placements)
}

/// Gives each shard in `shards` (sorted) a partition of its own. The first placement follows the
/// sorted order, as outflow before this placement did implicitly, so existing checkpoints stay
/// where they are; a later shard takes the next partition after the highest one placed.
async fn assign(store: &Store, shards: &[String]) -> Result<Placements, PlacementError> {
    let placements = store.database().collection::<Document>(PLACEMENTS);
    placements
        .create_index(
            IndexModel::builder()
                .keys(doc! { "partition": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .map_err(StoreError::from)?;
    // each round places what is missing; a collision means another relay placed it (or took the
    // partition) meanwhile, and the next round reads what it did
    for _ in 0..shards.len() + 3 {
        let known = read(&placements).await?;
        let missing: Vec<&String> = shards.iter().filter(|s| !known.contains_key(*s)).collect();
        if missing.is_empty() {
            return Ok(known);
        }
        let wanted: Vec<(&String, i32)> = if known.is_empty() {
            shards.iter().zip(0..).collect()
        } else {
            let next = known.values().max().map_or(0, |p| p + 1);
            missing.into_iter().zip(next..).collect()
        };
        for (shard, partition) in wanted {
            match placements
                .insert_one(doc! { "_id": shard, "partition": partition })
                .await
            {
                Ok(_) => {}
                Err(e) if crate::store::is_duplicate_key(&e) => break,
                Err(e) => return Err(StoreError::from(e).into()),
            }
        }
    }
    Err(PlacementError::Contended)
}

async fn read(placements: &Collection<Document>) -> Result<Placements, StoreError> {
    let docs: Vec<Document> = placements.find(doc! {}).await?.try_collect().await?;
    Ok(docs
        .iter()
        .filter_map(|d| {
            Some((
                d.get_str("_id").ok()?.to_string(),
                d.get_i32("partition").ok()?,
            ))
        })
        .collect())
}
