//! The Mongo documents outflow writes: event log, entity, outbox (Debezium's names) and offsets.

use mongodb::bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype};
use serde_json::Value as Json;

/// Collection names; entity collections are named by the topology.
pub const EVENT_LOG: &str = "event_log";
pub const OUTBOX: &str = "outbox";
pub const OFFSETS: &str = "offsets";
pub const LEASES: &str = "relay_leases";
/// Each outbox shard's partition on the relay checkpoint topic (see `relay::placement`).
pub const PLACEMENTS: &str = "relay_checkpoint_partitions";
/// What outflow keeps about the database itself: its id (see `Store::database_id`).
pub const META: &str = "outflow_meta";

pub fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    })
}

/// JSON → BSON without surprises (integers stay integers).
pub fn to_bson(json: &Json) -> Bson {
    Bson::try_from(json.clone()).unwrap_or(Bson::Null)
}

/// BSON → JSON in relaxed extended JSON (plain numbers and strings for plain documents).
pub fn to_json(bson: Bson) -> Json {
    bson.into_relaxed_extjson()
}

/// The `_id` of a partition's offsets document.
pub fn offsets_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// The outbox shard of a source partition: one writer per shard, so `seq` is commit order.
pub fn shard_of(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}

/// Where an event came from and how it was typed, as stored in its event-log document.
pub struct EventLogEntry<'a> {
    pub event_id: &'a str,
    pub entity_kind: &'a str,
    pub entity_id: &'a str,
    pub event_type: &'a str,
    pub payload: &'a Json,
    pub schema_id: u32,
    pub subject: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub version: i64,
    /// The Kafka key as text (stages may use `.meta.key`; rebuilds need it back).
    pub key: Option<&'a str>,
    pub timestamp: Option<i64>,
}

pub fn event_log_doc(e: &EventLogEntry<'_>, now: DateTime) -> Document {
    doc! {
        "_id": e.event_id,
        "entityKind": e.entity_kind,
        "entityId": e.entity_id,
        "type": e.event_type,
        "payload": to_bson(e.payload),
        "schema": { "subject": e.subject, "id": i64::from(e.schema_id) },
        "source": { "topic": e.topic, "partition": e.partition, "offset": e.offset, "key": e.key, "timestamp": e.timestamp },
        "version": e.version,
        "recordedAt": now,
    }
}

pub fn entity_doc(
    id: &str,
    state: &Json,
    version: i64,
    last_event_id: &str,
    now: DateTime,
) -> Document {
    doc! {
        "_id": id,
        "state": to_bson(state),
        "version": version,
        "updatedAt": now,
        "lastEventId": last_event_id,
    }
}

/// The outbox record of a stage's output: keyed by its entity key, no extra headers, a fresh
/// UUIDv7 id (what the processor and a rebuild's emit both write).
pub fn emitted_doc(
    draft: &crate::stage::OutboxDraft,
    aggregate_type: &str,
    event_id: &str,
    seq: i64,
) -> Document {
    outbox_doc(OutboxEntry {
        id: uuid::Uuid::now_v7().to_string(),
        aggregate_type,
        aggregate_id: &draft.key,
        event_type: &draft.event_type,
        topic: &draft.topic,
        key: None,
        payload: Some(draft.payload.clone()),
        event_id,
        headers: &[],
        seq,
    })
}

/// One outbox record (Debezium's outbox fields). `key` holds the exact key bytes (dead letters
/// keep the original ones). Records are stored in pages, see [`super::outbox`].
pub struct OutboxEntry<'a> {
    /// The record's own id: the `id` header on Kafka, as in Debezium's outbox.
    pub id: String,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub event_type: &'a str,
    pub topic: &'a str,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub event_id: &'a str,
    pub headers: &'a [(String, String)],
    pub seq: i64,
}

pub fn outbox_doc(o: OutboxEntry<'_>) -> Document {
    let mut headers = Document::new();
    for (k, v) in o.headers {
        headers.insert(k.clone(), v.clone());
    }
    doc! {
        "id": o.id,
        "aggregatetype": o.aggregate_type,
        "aggregateid": o.aggregate_id,
        "type": o.event_type,
        "topic": o.topic,
        "key": o.key.map_or(Bson::Null, binary),
        "payload": o.payload.map_or(Bson::Null, binary),
        "eventId": o.event_id,
        "headers": headers,
        "seq": o.seq,
    }
}
