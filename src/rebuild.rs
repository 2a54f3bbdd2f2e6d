//! Rebuilds the entities of one kind from their event log through the current stages (after a
//! stage fix), without emitting anything; each entity is replaced only if nothing changed it meanwhile.

use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value as Json, json};

use crate::stage::StageRunner;
use crate::store::documents::{self, EVENT_LOG, to_bson, to_json};
use crate::store::{Store, StoreError};

/// What a rebuild found and did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RebuildReport {
    pub entities: usize,
    pub events: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Changed by the processor while the rebuild ran: left as they are.
    pub skipped_concurrent: usize,
    /// Outbox records written by `--emit` (what the entity's last event emits now).
    pub emitted: usize,
    /// `(entity id, why)` for events the current stages reject.
    pub failed: Vec<(String, String)>,
}

/// One entity's recomputed state from its events, oldest first.
fn replay(
    runner: &StageRunner,
    kind: &str,
    id: &str,
    events: &[Document],
    report: &mut RebuildReport,
) -> (Option<Json>, i64, Option<LastEvent>) {
    let topology = runner.topology();
    let mut state: Option<Json> = None;
    let mut last: Option<LastEvent> = None;
    let mut version = 0;
    for e in events {
        let source_doc = e.get_document("source").ok();
        let topic = source_doc
            .and_then(|s| s.get_str("topic").ok())
            .unwrap_or_default();
        let Some(source) = topology.source_for_topic(topic) else {
            report.failed.push((
                id.to_string(),
                format!(
                    "event {} comes from `{topic}`, which no source reads now",
                    e.get_str("_id").unwrap_or("?")
                ),
            ));
            continue;
        };
        let payload = e.get("payload").cloned().map_or(Json::Null, to_json);
        let mut meta = json!({
            "type": e.get_str("type").unwrap_or_default(),
            "eventId": e.get_str("_id").unwrap_or_default(),
            "topic": topic,
            "partition": source_doc.and_then(|s| s.get_i32("partition").ok()),
            "offset": source_doc.and_then(|s| s.get_i64("offset").ok()),
            "key": source_doc.and_then(|s| s.get_str("key").ok()),
            "timestamp": source_doc.and_then(|s| s.get_i64("timestamp").ok()),
        });
        let routed = match runner.route(source, &payload, &meta) {
            Ok(Some(r)) if r.entity_kind == kind && r.entity_id == id => r,
            Ok(_) => {
                report.failed.push((
                    id.to_string(),
                    format!(
                        "event {} no longer routes to {kind} `{id}`",
                        e.get_str("_id").unwrap_or("?")
                    ),
                ));
                continue;
            }
            Err(f) => {
                report.failed.push((id.to_string(), f.to_string()));
                continue;
            }
        };
        version += 1;
        if let Json::Object(m) = &mut meta {
            m.insert("version".into(), json!(version));
            m.insert("entity".into(), json!({ "kind": kind, "id": id }));
        }
        match runner.apply(routed.stage, &payload, state.as_ref(), &meta) {
            Ok(applied) => {
                state = Some(applied.state);
                last = Some(LastEvent {
                    outputs: applied.outbox,
                    event_id: e.get_str("_id").unwrap_or_default().to_string(),
                    topic: topic.to_string(),
                    partition: source_doc
                        .and_then(|s| s.get_i32("partition").ok())
                        .unwrap_or(0),
                });
            }
            Err(f) => {
                version -= 1;
                report.failed.push((id.to_string(), f.to_string()));
            }
        }
        report.events += 1;
    }
    (state, version, last)
}

/// What the entity's last event emits under the current stages (the correction `--emit` sends).
struct LastEvent {
    outputs: Vec<crate::stage::OutboxDraft>,
    event_id: String,
    topic: String,
    partition: i32,
}

/// Rebuilds every entity of `kind`; `progress` is told how many events were read so far.
pub async fn rebuild(
    store: &Store,
    runner: &StageRunner,
    kind: &str,
    dry_run: bool,
    emit: bool,
    progress: &dyn Fn(u64),
) -> Result<RebuildReport, StoreError> {
    let collection = runner
        .topology()
        .entity(kind)
        .map_or(kind.to_string(), |e| e.collection.clone());
    let entities = store.database().collection::<Document>(&collection);
    let mut cursor = store
        .database()
        .collection::<Document>(EVENT_LOG)
        .find(doc! { "entityKind": kind })
        .sort(doc! { "entityId": 1, "version": 1 })
        .await?;
    let mut report = RebuildReport::default();
    let mut current: Option<String> = None;
    let mut events: Vec<Document> = Vec::new();
    let mut read = 0u64;
    loop {
        let next = cursor.try_next().await?;
        let next_id = next
            .as_ref()
            .and_then(|d| d.get_str("entityId").ok())
            .map(str::to_string);
        if current.is_some() && next_id != current {
            let id = current.take().unwrap_or_default();
            let (state, version, last) = replay(runner, kind, &id, &events, &mut report);
            report.entities += 1;
            let existing = entities.find_one(doc! { "_id": &id }).await?;
            let old_state = existing
                .as_ref()
                .and_then(|d| d.get("state").cloned())
                .map(to_json);
            let old_version = existing.as_ref().and_then(|d| d.get_i64("version").ok());
            if state == old_state && Some(version) == old_version {
                report.unchanged += 1;
            } else if dry_run {
                report.changed += 1;
            } else if let Some(state) = &state {
                let filter = match old_version {
                    Some(v) => doc! { "_id": &id, "version": v },
                    None => doc! { "_id": &id },
                };
                let update = doc! { "$set": { "state": to_bson(state), "version": version, "updatedAt": DateTime::now() } };
                let corrections = if emit {
                    last.filter(|l| !l.outputs.is_empty())
                } else {
                    None
                };
                let written = match corrections {
                    None => {
                        let result = entities
                            .update_one(filter, update)
                            .upsert(old_version.is_none())
                            .await?;
                        result.matched_count == 1 || result.upserted_id.is_some()
                    }
                    Some(last) => {
                        let written = write_with_corrections(
                            store,
                            runner,
                            &collection,
                            kind,
                            filter,
                            update,
                            old_version.is_none(),
                            &last,
                        )
                        .await?;
                        if written {
                            report.emitted += last.outputs.len();
                        }
                        written
                    }
                };
                if written {
                    report.changed += 1;
                } else {
                    report.skipped_concurrent += 1;
                }
            }
            events.clear();
        }
        let Some(doc) = next else { break };
        read += 1;
        progress(read);
        current = next_id;
        events.push(doc);
    }
    Ok(report)
}

/// Updates the entity and adds its corrections to the outbox of its last event's shard, in one
/// transaction that takes the next `seq` numbers from the partition's offsets document (so the
/// processor writing the same shard conflicts and retries instead of reusing a number).
#[allow(clippy::too_many_arguments)]
async fn write_with_corrections(
    store: &Store,
    runner: &StageRunner,
    collection: &str,
    kind: &str,
    filter: Document,
    update: Document,
    upsert: bool,
    last: &LastEvent,
) -> Result<bool, StoreError> {
    let group = &runner.topology().kafka.group_id;
    let offsets_id = documents::offsets_id(group, &last.topic, last.partition);
    let shard = documents::shard_of(&last.topic, last.partition);
    let n = last.outputs.len() as i64;
    let mut session = store.client().start_session().await?;
    crate::store::txn::run_unless_given_up(&mut session, async |session| {
        let result = store
            .database()
            .collection::<Document>(collection)
            .update_one(filter.clone(), update.clone())
            .upsert(upsert)
            .session(&mut *session)
            .await?;
        if result.matched_count == 0 && result.upserted_id.is_none() {
            return Ok(false);
        }
        let after = store
            .database()
            .collection::<Document>(documents::OFFSETS)
            .find_one_and_update(
                doc! { "_id": &offsets_id },
                doc! { "$inc": { "outboxSeq": n } },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .session(&mut *session)
            .await?;
        let end = match after.and_then(|d| d.get_i64("outboxSeq").ok()) {
            Some(end) => end,
            None => {
                // this group never processed the partition: number after where any group stands
                let floor = store.shard_seq_floor(&last.topic, last.partition).await?;
                store
                    .database()
                    .collection::<Document>(documents::OFFSETS)
                    .insert_one(doc! {
                        "_id": &offsets_id, "group": group, "topic": &last.topic,
                        "partition": last.partition, "outboxSeq": floor + n,
                    })
                    .session(&mut *session)
                    .await?;
                floor + n
            }
        };
        let now = DateTime::now();
        let docs: Vec<Document> = last
            .outputs
            .iter()
            .enumerate()
            .map(|(i, draft)| {
                documents::emitted_doc(draft, kind, &last.event_id, end - n + 1 + i as i64)
            })
            .collect();
        store
            .database()
            .collection::<Document>(documents::OUTBOX)
            .insert_many(crate::store::outbox::pages(&shard, docs, now))
            .session(&mut *session)
            .await?;
        Ok(true)
    })
    .await
}
