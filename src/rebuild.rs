//! Rebuilds the entities of one kind from their event log through the current stages (after a
//! stage fix), without emitting anything; each entity is replaced only if nothing changed it meanwhile.

use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value as Json, json};

use crate::stage::StageRunner;
use crate::store::documents::{EVENT_LOG, to_bson, to_json};
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
) -> (Option<Json>, i64) {
    let topology = runner.topology();
    let mut state: Option<Json> = None;
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
            Ok(applied) => state = Some(applied.state),
            Err(f) => {
                version -= 1;
                report.failed.push((id.to_string(), f.to_string()));
            }
        }
        report.events += 1;
    }
    (state, version)
}

/// Rebuilds every entity of `kind`; `progress` is told how many events were read so far.
pub async fn rebuild(
    store: &Store,
    runner: &StageRunner,
    kind: &str,
    dry_run: bool,
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
            let (state, version) = replay(runner, kind, &id, &events, &mut report);
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
                let result = entities
                    .update_one(filter, update)
                    .upsert(old_version.is_none())
                    .await?;
                if result.matched_count == 1 || result.upserted_id.is_some() {
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
