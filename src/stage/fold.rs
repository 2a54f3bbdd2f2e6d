//! Folds a batch of decoded records over entity states, in offset order: pure, shared by the store
//! (which writes the result in one transaction) and the testkit (which keeps it in memory).

use std::collections::{HashMap, HashSet};

use serde_json::{Value as Json, json};

use super::{OutboxDraft, Routed, StageRunner};
use crate::dlq::{DeadLetter, Failure, Origin};

/// A record that decoded and was routed to a stage (or to none).
#[derive(Debug, Clone)]
pub struct DecodedEvent {
    pub event_id: String,
    pub payload: Json,
    /// `{type, eventId, topic, partition, offset, key, timestamp}`; `version` and `entity` are added per event.
    pub meta: Json,
    pub event_type: String,
    pub schema_id: u32,
    pub subject: String,
    pub routed: Option<Routed>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub offset: i64,
}

/// One record of a batch, in offset order.
#[derive(Debug, Clone)]
pub enum BatchEvent {
    Decoded(Box<DecodedEvent>),
    /// Failed before any stage (decode, routing): goes straight to the dead-letter topic.
    Dead(Box<DeadLetter>),
}

/// What one batch did.
#[derive(Debug, Default, Clone)]
pub struct BatchReport {
    pub processed: usize,
    pub duplicates: usize,
    pub skipped: usize,
    pub dead_letters: Vec<(&'static str, String)>,
    pub outbox_records: usize,
    pub retries: u32,
}

/// An event the batch adds to the event log, with the entity version it produced.
#[derive(Debug, Clone)]
pub struct Logged<'a> {
    pub event: &'a DecodedEvent,
    pub entity_kind: String,
    pub entity_id: String,
    pub version: i64,
}

/// An entity's state after the batch (written once, however many events changed it).
#[derive(Debug, Clone)]
pub struct EntityWrite {
    pub kind: String,
    pub id: String,
    pub state: Json,
    pub version: i64,
    pub last_event_id: String,
}

/// An outbox record in commit order: a stage's output or a dead letter.
#[derive(Debug, Clone)]
pub enum OutboxItem {
    Record {
        draft: OutboxDraft,
        aggregate_type: String,
        event_id: String,
    },
    Dead(DeadLetter),
}

/// Everything a batch changes.
#[derive(Debug, Default)]
pub struct Folded<'a> {
    pub logged: Vec<Logged<'a>>,
    pub entities: Vec<EntityWrite>,
    pub outbox: Vec<OutboxItem>,
    pub report: BatchReport,
}

/// Entity states by (kind, id): state (None for a new entity) and version.
pub type States = HashMap<(String, String), (Option<Json>, i64)>;

/// Applies the stages to `events` in order. `seen` holds event ids already in the event log (they
/// are skipped, as are repeats inside the batch); `states` the current entity states.
pub fn fold<'a>(
    runner: &StageRunner,
    events: &'a [BatchEvent],
    mut seen: HashSet<String>,
    mut states: States,
    source: (&str, i32),
    dlq_topic: &str,
    now_millis: i64,
) -> Folded<'a> {
    let mut out = Folded::default();
    let mut touched: Vec<(String, String, String)> = Vec::new(); // kind, id, last event id
    for event in events {
        let d = match event {
            BatchEvent::Dead(dead) => {
                out.report
                    .dead_letters
                    .push((dead.class, dead.topic.clone()));
                out.outbox.push(OutboxItem::Dead((**dead).clone()));
                continue;
            }
            BatchEvent::Decoded(d) => d,
        };
        if !seen.insert(d.event_id.clone()) {
            out.report.duplicates += 1;
            continue;
        }
        let Some(routed) = &d.routed else {
            out.report.skipped += 1;
            continue;
        };
        let slot = states
            .entry((routed.entity_kind.clone(), routed.entity_id.clone()))
            .or_insert((None, 0));
        let version = slot.1 + 1;
        let mut meta = d.meta.clone();
        if let Json::Object(m) = &mut meta {
            m.insert("version".into(), json!(version));
            m.insert(
                "entity".into(),
                json!({ "kind": routed.entity_kind, "id": routed.entity_id }),
            );
        }
        match runner.apply(routed.stage, &d.payload, slot.0.as_ref(), &meta) {
            Ok(applied) => {
                out.logged.push(Logged {
                    event: d,
                    entity_kind: routed.entity_kind.clone(),
                    entity_id: routed.entity_id.clone(),
                    version,
                });
                for draft in applied.outbox {
                    out.report.outbox_records += 1;
                    out.outbox.push(OutboxItem::Record {
                        draft,
                        aggregate_type: routed.entity_kind.clone(),
                        event_id: d.event_id.clone(),
                    });
                }
                *slot = (Some(applied.state), version);
                touched.retain(|(k, i, _)| !(k == &routed.entity_kind && i == &routed.entity_id));
                touched.push((
                    routed.entity_kind.clone(),
                    routed.entity_id.clone(),
                    d.event_id.clone(),
                ));
                out.report.processed += 1;
            }
            Err(failure) => {
                let failure = Failure {
                    class: failure.class,
                    message: failure.message,
                    stage: failure.stage,
                };
                let origin = Origin {
                    topic: source.0.to_string(),
                    partition: source.1,
                    offset: d.offset,
                };
                let dead = DeadLetter::new(
                    dlq_topic,
                    d.key.clone(),
                    d.value.clone(),
                    &d.event_id,
                    &origin,
                    &failure,
                    now_millis,
                );
                out.report
                    .dead_letters
                    .push((dead.class, dead.topic.clone()));
                out.outbox.push(OutboxItem::Dead(dead));
            }
        }
    }
    for (kind, id, last_event_id) in touched {
        if let Some((Some(state), version)) = states.remove(&(kind.clone(), id.clone())) {
            out.entities.push(EntityWrite {
                kind,
                id,
                state,
                version,
                last_event_id,
            });
        }
    }
    out.report.outbox_records += out.report.dead_letters.len();
    out
}
