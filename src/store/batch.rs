//! The batches of a transaction (one partition's, or several in a group): dedupe, fold stages over
//! entity states, write all.
//!
//! Round trips per transaction: the event-id read, the entity-state read per kind, ONE `bulkWrite`
//! (every batch's offsets fence first, then every document) and the commit. A fence is an upsert
//! filtered on the partition's `_id`, our owner epoch and the outbox sequence we expect: when the
//! epoch or the sequence moved it matches nothing, the upsert collides with the existing `_id` and
//! the ordered bulk write stops there; the transaction is aborted and the offsets documents tell
//! which it was.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{InsertOneModel, ReplaceOneModel, UpdateOneModel, WriteModel};
use mongodb::{ClientSession, Namespace};

use super::documents::{self, EVENT_LOG, EventLogEntry, OFFSETS, OUTBOX, OutboxEntry};
use super::group::Member;
use super::{Store, StoreError};
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
}

/// Why a batch's fence did not match, read from the offsets document after the abort.
pub(super) enum Fence {
    /// Another processor claimed the partition.
    Lost,
    /// Someone else appended to the shard's outbox (a rebuild): the new sequence.
    SeqMoved(i64),
    /// Neither: the error was about something else.
    Held,
}

/// Everything a batch writes, computed inside the transaction from what it read there.
struct Plan {
    /// The partition's outbox sequence the batch numbers its records after.
    base_seq: i64,
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
    /// After a failed batch: did we lose the partition, did the outbox sequence move, or neither?
    pub(super) async fn why_unfenced(
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

    /// The body of a group transaction; the caller commits or retries it. Returns what each
    /// member's batch did, should it commit, and the outbox sequence its partition then has.
    pub(super) async fn attempt(
        &self,
        session: &mut ClientSession,
        members: &[&Member<'_>],
        runner: &StageRunner,
        clock: &mut crate::metrics::PhaseClock,
    ) -> Result<Vec<(Committed, i64)>, StoreError> {
        let plans = self.plan(session, members, runner, clock).await?;
        // every fence first: a lost partition stops the bulk write before anything else is sent
        let mut models = Vec::with_capacity(plans.iter().map(|p| p.models.len() + 1).sum());
        let mut done = Vec::with_capacity(plans.len());
        for (m, plan) in members.iter().zip(&plans) {
            let end_seq = plan.base_seq + plan.outbox.len() as i64;
            models.push(fence(
                m.claim,
                plan.base_seq,
                end_seq,
                m.next_offset,
                self.db.name(),
            ));
        }
        for plan in plans {
            let end_seq = plan.base_seq + plan.outbox.len() as i64;
            models.extend(plan.models);
            let committed = Committed {
                report: plan.report,
                outbox: plan.outbox,
            };
            done.push((committed, end_seq));
        }
        self.client
            .bulk_write(models)
            .ordered(true)
            .session(&mut *session)
            .await?;
        clock.lap("write");
        Ok(done)
    }

    /// Reads what the batches depend on (seen event ids, entity states: one query for them all, one
    /// per entity kind) and folds the stages over each batch in turn, each starting from the
    /// states and event ids the ones before it left.
    async fn plan(
        &self,
        session: &mut ClientSession,
        members: &[&Member<'_>],
        runner: &StageRunner,
        clock: &mut crate::metrics::PhaseClock,
    ) -> Result<Vec<Plan>, StoreError> {
        let decoded = || {
            members
                .iter()
                .flat_map(|m| m.events)
                .filter_map(|e| match e {
                    BatchEvent::Decoded(d) => Some(d),
                    BatchEvent::Dead(_) => None,
                })
        };
        let ids: Vec<&str> = decoded().map(|d| d.event_id.as_str()).collect();
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
        // current state and version of every entity the batches touch, one query per kind
        let mut wanted: HashMap<&str, HashSet<&str>> = HashMap::new();
        for d in decoded() {
            if let Some(r) = &d.routed
                && !seen.contains(&d.event_id)
            {
                wanted
                    .entry(r.entity_kind.as_str())
                    .or_default()
                    .insert(r.entity_id.as_str());
            }
        }
        let topology = runner.topology();
        let mut states: States = HashMap::new();
        for (kind, ids) in &wanted {
            let collection = topology
                .entity(kind)
                .map_or(*kind, |e| e.collection.as_str());
            let ids: Vec<&str> = ids.iter().copied().collect();
            let mut cursor = self
                .db
                .collection::<Document>(collection)
                .find(doc! { "_id": { "$in": &ids } })
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
        let now = DateTime::now().timestamp_millis();
        let mut plans = Vec::with_capacity(members.len());
        for m in members {
            let folded = fold(
                runner,
                m.events,
                &mut seen,
                &mut states,
                (&m.claim.topic, m.claim.partition),
                m.dlq_topic,
                now,
            );
            let base_seq = m.claim.outbox_seq.load(Ordering::Acquire);
            plans.push(to_models(folded, m.claim, runner, base_seq, self.db.name()));
        }
        clock.lap("fold");
        Ok(plans)
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
        base_seq,
        models,
        report: folded.report,
        outbox,
    }
}
