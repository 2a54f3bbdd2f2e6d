//! The Mongo side: one transaction per batch, documents, offsets with owner epochs, outbox.
//!
//! # Exactly once, Kafka → Mongo
//! A batch's event-log inserts, entity upserts, outbox records, dead letters and the partition's
//! next offset are written in ONE multi-document transaction. The offsets document also holds the
//! partition's owner epoch: a processor bumps it when it is assigned the partition, and every batch
//! transaction writes the offsets document filtered on its own epoch (and on the outbox sequence it
//! planned with; see `batch`). A processor that lost the
//! partition (a zombie) matches nothing and aborts; one racing with the bump gets a write conflict,
//! retries, and then finds the new epoch. Processing resumes from the stored offset, so a record is
//! in Mongo iff its offset was committed with it, and an event id already in the event log is
//! skipped (checked before inserting: a duplicate key would kill the transaction).

mod batch;
pub mod documents;
pub mod outbox;
pub mod server;
pub(crate) mod txn;
mod upgrade;

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Database, IndexModel};

pub use crate::stage::fold::{BatchEvent, BatchReport, DecodedEvent};
pub use batch::{Committed, PartitionClaim};
pub use txn::is_duplicate_key;

use crate::config::Topology;
use documents::{EVENT_LOG, LEASES, META, OFFSETS, OUTBOX};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another processor owns the partition now (its epoch is newer): stop processing it.
    #[error("partition {topic}[{partition}] is owned by a newer processor (epoch {ours} is stale)")]
    Fenced {
        topic: String,
        partition: i32,
        ours: i64,
    },
    #[error("mongo: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("shutting down")]
    Shutdown,
    /// The server answered no document to an upsert that asked for it, every time.
    #[error("{0}: the server answered no document to an upsert, {UPSERT_ATTEMPTS} times")]
    Unanswered(String),
    /// The database holds another topology's outbox, leases and entities.
    #[error(
        "it belongs to topology `{owner}`, not `{ours}`: each topology needs a database of its own \
         (outbox shards are named after source partitions and entity collections after entity \
         kinds, so two topologies would number the same shards and write the same entities). \
         If `{owner}` was renamed `{ours}`, set `topology` to `{ours}` in the `{META}` document \
         `database`; the new name's relay starts with an empty checkpoint topic and publishes \
         again what the outbox still holds, unless `relay.checkpoint_topic` names the old one"
    )]
    OtherTopology { owner: String, ours: String },
    /// The server cannot run outflow's transactions (see [`server::fit`]).
    #[error("{0}")]
    UnfitServer(String),
    /// The database's id document lost its id (edited by hand).
    #[error(
        "the `{META}` document `database` has no string `id`: put the id back, or delete the \
         document (the relay then takes every checkpoint for another database's and publishes the \
         outbox again)"
    )]
    NoDatabaseId,
}

impl StoreError {
    /// Worth retrying with the same input (network trouble, write conflicts, elections).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Mongo(e) => txn::is_transient(e),
            _ => false,
        }
    }
}

/// How often an upsert that must answer its document is tried when the server answers none (see
/// [`Store::claim_partition`]).
const UPSERT_ATTEMPTS: u32 = 5;

/// A connected store for one topology's database.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
}

impl Store {
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("outflow".into());
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(Duration::from_secs(10));
        }
        let client = Client::with_options(options)?;
        let db = client.database(database);
        Ok(Self { client, db })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `name` read at read concern "majority": what the relay publishes must be what no failover
    /// rolls back (a "local" read on a primary sees a commit before its majority has it).
    pub fn majority_read(&self, name: &str) -> mongodb::Collection<Document> {
        let options = mongodb::options::CollectionOptions::builder()
            .read_concern(mongodb::options::ReadConcern::majority())
            .build();
        self.db.collection_with_options(name, options)
    }

    /// Creates every collection and index up front: first-touch creation inside concurrent
    /// transactions conflicts.
    pub async fn ensure_collections(&self, topology: &Topology) -> Result<(), StoreError> {
        // before anything is created: a server too old for the batch writes refuses only the
        // first batch, after the processor has joined its group
        let hello = self.db.run_command(doc! { "hello": 1 }).await?;
        server::fit(&hello).map_err(StoreError::UnfitServer)?;
        let existing = self.db.list_collection_names().await?;
        let mut wanted: Vec<&str> = vec![EVENT_LOG, OUTBOX, OFFSETS, LEASES, META];
        wanted.extend(topology.entities.iter().map(|e| e.collection.as_str()));
        for name in wanted {
            if !existing.iter().any(|e| e == name) {
                match self.db.create_collection(name).await {
                    Ok(()) => {}
                    // 48 NamespaceExists: another process created it first
                    Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 48) =>
                        {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        create_indexes(&self.db).await?;
        self.check_owner(&topology.name).await?;
        upgrade::page_legacy_outbox(&self.client, &self.db).await
    }

    /// Marks the database as `topology`'s the first time, and refuses it when it is another
    /// topology's (see [`StoreError::OtherTopology`]).
    async fn check_owner(&self, topology: &str) -> Result<(), StoreError> {
        self.database_id().await?;
        let meta = self.db.collection::<Document>(META);
        // one update wins when two topologies start on a new database at once
        meta.update_one(
            doc! { "_id": "database", "topology": { "$exists": false } },
            doc! { "$set": { "topology": topology } },
        )
        .await?;
        let owner = meta
            .find_one(doc! { "_id": "database" })
            .await?
            .and_then(|d| d.get_str("topology").ok().map(str::to_string));
        match owner {
            Some(owner) if owner != topology => Err(StoreError::OtherTopology {
                owner,
                ours: topology.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// This database's id, minted the first time it is asked for. The relay writes it into every
    /// checkpoint: the outbox sequences restart in a new database (another cluster, or the old
    /// database dropped) while the checkpoint topic, named after the topology, stays, and a
    /// checkpoint of the old database would make the relay skip the new one's first records.
    pub async fn database_id(&self) -> Result<String, StoreError> {
        let meta = self.db.collection::<Document>(META);
        for _ in 0..UPSERT_ATTEMPTS {
            let minted = meta
                .find_one_and_update(
                    doc! { "_id": "database" },
                    doc! { "$setOnInsert": {
                        "id": uuid::Uuid::now_v7().to_string(),
                        "createdAt": mongodb::bson::DateTime::now(),
                    } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match minted {
                Ok(Some(ref doc)) if let Ok(id) = doc.get_str("id") => return Ok(id.to_string()),
                // another process minted it at the same moment: the next round reads theirs
                // (SecantusDB answers no document to upserts that lose such a race)
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // still nothing readable: what the document holds decides
        let doc = meta.find_one(doc! { "_id": "database" }).await?;
        doc.as_ref()
            .and_then(|d| d.get_str("id").ok())
            .map(str::to_string)
            .ok_or(StoreError::NoDatabaseId)
    }

    /// Takes ownership of a partition: bumps its owner epoch and returns it with the stored next
    /// offset (`None` when the partition was never processed) and the session its batches run in.
    ///
    /// The previous owner's session is killed first. A processor killed in the middle of a batch
    /// leaves its transaction open on the server, holding the offsets document, and the epoch bump
    /// would wait for the server to reap it (`transactionLifetimeLimitSeconds`, 60 s by default):
    /// measured as a 61 s takeover after SIGKILL. Killing the session aborts that transaction at
    /// once; where the server refuses (no `killAnySession` privilege), the takeover falls back to
    /// that wait.
    pub async fn claim_partition(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<PartitionClaim, StoreError> {
        let id = documents::offsets_id(group, topic, partition);
        let offsets = self.db.collection::<Document>(OFFSETS);
        let floor = self.shard_seq_floor(topic, partition).await?;
        let previous = offsets
            .find_one(doc! { "_id": &id })
            .projection(doc! { "ownerSession": 1 })
            .await?
            .and_then(|d| d.get_document("ownerSession").ok().cloned());
        if let Some(previous) = previous {
            let killed = self
                .client
                .database("admin")
                .run_command(doc! { "killSessions": [previous] })
                .await;
            if let Err(e) = killed {
                tracing::warn!(%topic, partition, "the previous owner's session was not killed ({e}): should it hold a transaction open, this claim waits until that times out (transactionLifetimeLimitSeconds, 60 s by default); outflow's Mongo user needs the killAnySession action");
            }
        }
        let session = self.client.start_session().await?;
        let mut attempts = 0;
        let doc = loop {
            attempts += 1;
            let claimed = offsets
                .find_one_and_update(
                    doc! { "_id": &id },
                    doc! {
                        "$inc": { "epoch": 1_i64 },
                        "$set": { "ownerSession": session.id().clone() },
                        // never behind another group's numbering of the shard (a group renamed,
                        // or renamed back): the relay's checkpoint is per shard
                        "$max": { "outboxSeq": floor },
                        "$setOnInsert": { "group": group, "topic": topic, "partition": partition },
                    },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match claimed {
                Ok(Some(doc)) => break doc,
                // claims racing for a partition's first document: SecantusDB answers no document
                // to some of them, MongoDB may answer a duplicate key. Never guess the epoch
                // (several claims took 1 when it was guessed): claim again, and hold the one the
                // server answers
                Ok(None) if attempts < UPSERT_ATTEMPTS => {}
                Err(e) if is_duplicate_key(&e) && attempts < UPSERT_ATTEMPTS => {}
                Ok(None) => return Err(StoreError::Unanswered(format!("claiming {id}"))),
                Err(e) => return Err(e.into()),
            }
        };
        Ok(PartitionClaim {
            session: std::sync::Arc::new(tokio::sync::Mutex::new(session)),
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            epoch: doc.get_i64("epoch").unwrap_or(1),
            next_offset: doc.get_i64("nextOffset").ok(),
            outbox_seq: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
                doc.get_i64("outboxSeq").unwrap_or(0),
            )),
        })
    }

    /// The highest outbox sequence any consumer group reached on the shard of `topic` and
    /// `partition`. A group that starts on the shard (`kafka.group_id` renamed) numbers its records
    /// after it: the relay's checkpoint is per shard, and would take lower numbers for published.
    pub async fn shard_seq_floor(&self, topic: &str, partition: i32) -> Result<i64, StoreError> {
        let top = self
            .db
            .collection::<Document>(OFFSETS)
            .find_one(doc! { "topic": topic, "partition": partition })
            .sort(doc! { "outboxSeq": -1 })
            .projection(doc! { "outboxSeq": 1 })
            .await?;
        Ok(top.and_then(|d| d.get_i64("outboxSeq").ok()).unwrap_or(0))
    }
}

/// The indexes the store's queries need, on `db` (also used by the benchmark's Mongo ceiling, to
/// measure the same writes with the same index upkeep). The outbox needs none: its `_id` is
/// ordered by shard and sequence (see [`outbox::page_id`]).
pub async fn create_indexes(db: &Database) -> Result<(), StoreError> {
    db.collection::<Document>(EVENT_LOG)
        .create_index(
            IndexModel::builder()
                .keys(doc! { "entityKind": 1, "entityId": 1, "version": 1 })
                .options(
                    IndexOptions::builder()
                        .name("entity_version".to_string())
                        .build(),
                )
                .build(),
        )
        .await?;
    Ok(())
}
