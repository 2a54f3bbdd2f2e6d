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

/// JSON → BSON as it is: integers stay integers (32-bit where they fit, as the `bson` crate
/// does) and keys stay keys. `Bson::try_from` would read `{"$oid": ...}` and its kin as extended
/// JSON, and a malformed one failed the whole value (stored as null); it also took a copy first.
pub fn to_bson(json: &Json) -> Bson {
    match json {
        Json::Null => Bson::Null,
        Json::Bool(b) => Bson::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            // u64 above i64::MAX and fractions; serde_json has no number without an f64
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Bson::String(s.clone()),
        Json::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Json::Object(map) => Bson::Document(
            map.iter()
                .map(|(key, value)| (key.clone(), to_bson(value)))
                .collect(),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::{to_bson, to_json};
    use mongodb::bson::{Bson, doc};
    use serde_json::json;

    #[test]
    fn json_becomes_bson_as_it_is_and_comes_back_the_same() {
        let value = json!({
            "small": 7, "big": 5_000_000_000_i64, "huge": u64::MAX, "half": 0.5, "ok": true,
            "none": null, "name": "é", "list": [1, "two", {"three": 3}],
            // map keys of an Avro map, or a jq state's: kept as keys, not read as extended JSON
            "ids": {"$oid": "not an object id"}, "n": {"$numberLong": "x"}
        });
        let bson = to_bson(&value);
        let Bson::Document(doc) = &bson else {
            panic!("{bson:?}")
        };
        assert_eq!(doc.get("small"), Some(&Bson::Int32(7)));
        assert_eq!(doc.get("big"), Some(&Bson::Int64(5_000_000_000)));
        assert_eq!(doc.get("huge"), Some(&Bson::Double(u64::MAX as f64)));
        assert_eq!(
            doc.get("ids"),
            Some(&Bson::Document(doc! { "$oid": "not an object id" }))
        );
        let back = to_json(bson);
        assert_eq!(back["small"], json!(7));
        assert_eq!(back["big"], json!(5_000_000_000_i64));
        assert_eq!(back["list"], value["list"]);
        assert_eq!(back["n"], value["n"]);
    }
}
