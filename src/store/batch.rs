//! One batch of one partition → one transaction: dedupe, fold stages over entity states, write all.
//!
//! Round trips per batch: the event-id read, the entity-state read, ONE `bulkWrite` (the offsets
//! fence first, then every document) and the commit. The fence is an upsert filtered on the
//! partition's `_id`, our owner epoch and the outbox sequence we expect: when the epoch or the
//! sequence moved it matches nothing, the upsert collides with the existing `_id` and the ordered
//! bulk write stops there; the transaction is aborted and the offsets document tells which it was.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{InsertOneModel, ReplaceOneModel, UpdateOneModel, WriteModel};
use mongodb::{ClientSession, Namespace};

use super::documents::{self, EVENT_LOG, EventLogEntry, OFFSETS, OUTBOX, OutboxEntry};
use super::{Store, StoreError, txn};
use crate::stage::StageRunner;
use crate::stage::fold::{BatchEvent, BatchReport, Folded, OutboxItem, States, fold};

/// This processor's ownership of a partition.
#[derive(Debug, Clone)]
pub struct PartitionClaim {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub epoch: i64,
    /// Where to resume; `None` for a partition never processed.
    pub next_offset: Option<i64>,
    /// The partition's last outbox `seq` as this owner knows it (read at the claim, advanced by
    /// each commit, refreshed when `outflow rebuild --emit` moved it).
    pub outbox_seq: Arc<AtomicI64>,
    /// The session every batch of this claim runs in; its id is in the offsets document, so the
    /// next owner can kill it (see `Store::claim_partition`).
    pub session: Arc<tokio::sync::Mutex<ClientSession>>,
}

/// Why a batch's fence did not match, read from the offsets document after the abort.
enum Fence {
    /// Another processor claimed the partition.
    Lost,
    /// Someone else appended to the shard's outbox (a rebuild): the new sequence.
    SeqMoved(i64),
    /// Neither: the error was about something else.
    Held,
}

/// Everything a batch writes, computed inside the transaction from what it read there.
struct Plan {
    models: Vec<WriteModel>,
    report: BatchReport,
    /// The outbox records, in `seq` order (copies of those in the pages among `models`).
    outbox: Vec<Document>,
}

/// A committed batch: what it did, and the outbox records it wrote (for this process's relay).
#[derive(Debug)]
pub struct Committed {
    pub report: BatchReport,
    pub outbox: Vec<Document>,
}

impl Store {
    /// Commits `events` and the partition's `next_offset` in one transaction (see the module docs).
    pub async fn commit_batch(
        &self,
        claim: &PartitionClaim,
        events: &[BatchEvent],
        next_offset: i64,
        runner: &StageRunner,
        dlq_topic: &str,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Committed, StoreError> {
        let mut session = claim.session.lock().await;
        let session = &mut *session;
        let mut retrier = txn::Retrier::new(stop);
        loop {
            let mut clock = crate::metrics::PhaseClock::start();
            retrier.begin(session).await?;
            let expected = claim.outbox_seq.load(Ordering::Acquire);
            match self
                .attempt(
                    session,
                    claim,
                    (events, next_offset),
                    (runner, dlq_topic),
                    &mut clock,
                )
                .await
            {
                Ok((mut done, end_seq)) => {
                    let committed = retrier.commit(session).await?;
                    clock.lap("commit");
                    if committed {
                        claim.outbox_seq.store(end_seq, Ordering::Release);
                        done.report.retries = retrier.retries;
                        return Ok(done);
                    }
                }
                Err(e) if e.is_transient() => retrier.recover(session, e).await?,
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    match self.why_unfenced(claim, expected).await {
                        Ok(Fence::Lost) => {
                            return Err(StoreError::Fenced {
                                topic: claim.topic.clone(),
                                partition: claim.partition,
                                ours: claim.epoch,
                            });
                        }
                        Ok(Fence::SeqMoved(seq)) => {
                            tracing::debug!(topic = %claim.topic, partition = claim.partition, seq, "outbox sequence moved (a rebuild emitted); retrying the batch");
                            claim.outbox_seq.store(seq, Ordering::Release);
                        }
                        Ok(Fence::Held) => return Err(e),
                        Err(read) => retrier.recover(session, read).await?,
                    }
                }
            }
        }
    }

    /// After a failed batch: did we lose the partition, did the outbox sequence move, or neither?
    async fn why_unfenced(
        &self,
        claim: &PartitionClaim,
        expected: i64,
    ) -> Result<Fence, StoreError> {
        let doc = self
            .db
            .collection::<Document>(OFFSETS)
            .find_one(
                doc! { "_id": documents::offsets_id(&claim.group, &claim.topic, claim.partition) },
            )
            .await?;
        let Some(doc) = doc else {
            return Ok(Fence::Lost);
        };
        if doc.get_i64("epoch").ok() != Some(claim.epoch) {
            return Ok(Fence::Lost);
        }
        match doc.get_i64("outboxSeq") {
            Ok(seq) if seq != expected => Ok(Fence::SeqMoved(seq)),
            _ => Ok(Fence::Held),
        }
    }

    /// The body of the batch transaction; the caller commits or retries it. Returns what the batch
    /// did, should it commit, and the outbox sequence the partition then has.
    async fn attempt(
        &self,
        session: &mut ClientSession,
        claim: &PartitionClaim,
        (events, next_offset): (&[BatchEvent], i64),
        (runner, dlq_topic): (&StageRunner, &str),
        clock: &mut crate::metrics::PhaseClock,
    ) -> Result<(Committed, i64), StoreError> {
        let base_seq = claim.outbox_seq.load(Ordering::Acquire);
        let Plan {
            models: planned,
            report,
            outbox,
        } = self
            .plan(session, claim, events, (runner, dlq_topic), base_seq, clock)
            .await?;
        let end_seq = base_seq + outbox.len() as i64;
        let mut models = Vec::with_capacity(planned.len() + 1);
        models.push(fence(claim, base_seq, end_seq, next_offset, self.db.name()));
        models.extend(planned);
        self.client
            .bulk_write(models)
            .ordered(true)
            .session(&mut *session)
            .await?;
        clock.lap("write");
        Ok((Committed { report, outbox }, end_seq))
    }

    /// Reads what the batch depends on (seen event ids, entity states) and folds the stages over it.
    async fn plan(
        &self,
        session: &mut ClientSession,
        claim: &PartitionClaim,
        events: &[BatchEvent],
        (runner, dlq_topic): (&StageRunner, &str),
        base_seq: i64,
        clock: &mut crate::metrics::PhaseClock,
    ) -> Result<Plan, StoreError> {
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                BatchEvent::Decoded(d) => Some(d.event_id.as_str()),
                BatchEvent::Dead(_) => None,
            })
            .collect();
        let mut seen: HashSet<String> = HashSet::new();
        // run even with no ids: the transaction's first command carries its read concern, which
        // SecantusDB refuses on the `bulkWrite` that would otherwise come first
        let mut cursor = self
            .db
            .collection::<Document>(EVENT_LOG)
            .find(doc! { "_id": { "$in": &ids } })
            .projection(doc! { "_id": 1 })
            .batch_size(ids.len().max(1) as u32) // one reply, no getMore round trips
            .session(&mut *session)
            .await?;
        while let Some(doc) = cursor.next(&mut *session).await.transpose()? {
            if let Ok(id) = doc.get_str("_id") {
                seen.insert(id.to_string());
            }
        }
        // current state and version of every entity the batch touches, one query per kind
        let mut wanted: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in events {
            if let BatchEvent::Decoded(d) = e
                && let Some(r) = &d.routed
                && !seen.contains(&d.event_id)
            {
                wanted
                    .entry(r.entity_kind.as_str())
                    .or_default()
                    .push(r.entity_id.as_str());
            }
        }
        let topology = runner.topology();
        let mut states: States = HashMap::new();
        for (kind, ids) in &wanted {
            let collection = topology
                .entity(kind)
                .map_or(*kind, |e| e.collection.as_str());
            let mut cursor = self
                .db
                .collection::<Document>(collection)
                .find(doc! { "_id": { "$in": ids } })
                .batch_size(ids.len().max(1) as u32)
                .session(&mut *session)
                .await?;
            while let Some(doc) = cursor.next(&mut *session).await.transpose()? {
                let id = doc.get_str("_id").unwrap_or_default().to_string();
                let version = doc.get_i64("version").unwrap_or(0);
                let state = doc.get("state").cloned().map(documents::to_json);
                states.insert((kind.to_string(), id), (state, version));
            }
        }
        clock.lap("read");
        let folded = fold(
            runner,
            events,
            seen,
            states,
            (&claim.topic, claim.partition),
            dlq_topic,
            DateTime::now().timestamp_millis(),
        );
        let plan = to_models(folded, claim, runner, base_seq, self.db.name());
        clock.lap("fold");
        Ok(plan)
    }
}

/// The offsets write every batch makes first: new offset and outbox sequence, only while the
/// partition's epoch and sequence are the ones this batch was planned on (see the module docs).
fn fence(
    claim: &PartitionClaim,
    base_seq: i64,
    end_seq: i64,
    next_offset: i64,
    db: &str,
) -> WriteModel {
    UpdateOneModel::builder()
        .namespace(Namespace::new(db, OFFSETS))
        .filter(doc! {
            "_id": documents::offsets_id(&claim.group, &claim.topic, claim.partition),
            "epoch": claim.epoch,
            "outboxSeq": base_seq,
        })
        .update(doc! { "$set": { "nextOffset": next_offset, "outboxSeq": end_seq, "updatedAt": DateTime::now() } })
        .upsert(true)
        .build()
        .into()
}

/// Turns a folded batch into write models; outbox records get `seq` from `base_seq + 1` on.
fn to_models(
    folded: Folded<'_>,
    claim: &PartitionClaim,
    runner: &StageRunner,
    base_seq: i64,
    db: &str,
) -> Plan {
    let now = DateTime::now();
    let topology = runner.topology();
    let shard = documents::shard_of(&claim.topic, claim.partition);
    let ns = |coll: &str| Namespace::new(db, coll);
    let mut models: Vec<WriteModel> = Vec::new();
    for l in &folded.logged {
        let d = l.event;
        let entry = EventLogEntry {
            event_id: &d.event_id,
            entity_kind: &l.entity_kind,
            entity_id: &l.entity_id,
            event_type: &d.event_type,
            payload: &d.payload,
            schema_id: d.schema_id,
            subject: &d.subject,
            topic: &claim.topic,
            partition: claim.partition,
            offset: d.offset,
            version: l.version,
            key: d.meta.get("key").and_then(|k| k.as_str()),
            timestamp: d.meta.get("timestamp").and_then(|t| t.as_i64()),
        };
        models.push(
            InsertOneModel::builder()
                .namespace(ns(EVENT_LOG))
                .document(documents::event_log_doc(&entry, now))
                .build()
                .into(),
        );
    }
    let mut outbox = Vec::with_capacity(folded.outbox.len());
    for (seq, item) in (base_seq + 1..).zip(&folded.outbox) {
        let doc = match item {
            OutboxItem::Record {
                draft,
                aggregate_type,
                event_id,
            } => documents::emitted_doc(draft, aggregate_type, event_id, seq),
            OutboxItem::Dead(dead) => {
                let aggregate_id = dead
                    .key
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                documents::outbox_doc(OutboxEntry {
                    id: uuid::Uuid::now_v7().to_string(),
                    aggregate_type: "dead-letter",
                    aggregate_id: &aggregate_id,
                    event_type: "DeadLetter",
                    topic: &dead.topic,
                    key: dead.key.clone(),
                    payload: dead.value.clone(),
                    event_id: &dead.event_id,
                    headers: &dead.headers,
                    seq,
                })
            }
        };
        outbox.push(doc);
    }
    for page in super::outbox::pages(&shard, outbox.iter().cloned(), now) {
        models.push(
            InsertOneModel::builder()
                .namespace(ns(OUTBOX))
                .document(page)
                .build()
                .into(),
        );
    }
    for e in &folded.entities {
        let collection = topology
            .entity(&e.kind)
            .map_or(e.kind.as_str(), |x| x.collection.as_str());
        models.push(
            ReplaceOneModel::builder()
                .namespace(ns(collection))
                .filter(doc! { "_id": Bson::String(e.id.clone()) })
                .replacement(documents::entity_doc(
                    &e.id,
                    &e.state,
                    e.version,
                    &e.last_event_id,
                    now,
                ))
                .upsert(true)
                .build()
                .into(),
        );
    }
    Plan {
        models,
        report: folded.report,
        outbox,
    }
}
