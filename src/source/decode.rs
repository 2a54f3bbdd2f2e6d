//! Turns one Kafka record into a batch event: decoded and routed, or a dead letter saying why.

use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::config::Source;
use crate::dlq::{DeadLetter, Failure, Origin};
use crate::schema::codec::{self, CodecError};
use crate::schema::json::avro_to_json;
use crate::schema::registry::{RegistryError, WriterSchemas};
use crate::stage::StageRunner;
use crate::store::{BatchEvent, DecodedEvent};

/// The parts of a Kafka record decoding needs (owned, so the message can be released at once).
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header `outflow.event-id`, when the producer (or a replay) set one.
    pub event_id_header: Option<String>,
}

impl RawRecord {
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// The registry could not be asked: retry later, the partition waits (order first).
#[derive(Debug, thiserror::Error)]
#[error("registry unavailable while decoding {topic}[{partition}]@{offset}: {source}")]
pub struct Unavailable {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub source: RegistryError,
}

/// Decodes and routes one record. Only an unreachable registry is an error; everything else that
/// is wrong with the record makes a dead letter.
pub async fn decode(
    record: &RawRecord,
    source: &Source,
    registry: &dyn WriterSchemas,
    runner: &StageRunner,
) -> Result<BatchEvent, Unavailable> {
    let fallback_id = record
        .event_id_header
        .clone()
        .unwrap_or_else(|| format!("{}-{}-{}", record.topic, record.partition, record.offset));
    let dead = |class: &'static str, message: String, event_id: &str| {
        let origin = Origin {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        };
        let failure = Failure {
            class,
            message,
            stage: "source".into(),
        };
        let now = chrono_millis();
        BatchEvent::Dead(Box::new(DeadLetter::new(
            &source.dlq_topic,
            record.key.clone(),
            record.value.clone(),
            event_id,
            &origin,
            &failure,
            now,
        )))
    };
    let Some(value) = &record.value else {
        return Ok(dead(
            "wire-format",
            "record has no value (a tombstone)".into(),
            &fallback_id,
        ));
    };
    let (schema_id, body) = match codec::split_frame(value) {
        Ok(split) => split,
        Err(e) => return Ok(dead("wire-format", e.to_string(), &fallback_id)),
    };
    let writer = match registry.writer_schema(schema_id).await {
        Ok(w) => w,
        Err(e) if e.transient => {
            return Err(Unavailable {
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
                source: e,
            });
        }
        Err(e) => {
            return Ok(dead(
                "unknown-schema",
                format!("schema id {schema_id}: {}", e.message),
                &fallback_id,
            ));
        }
    };
    let writer_name = writer.name().map(|n| n.fullname(None)).unwrap_or_default();
    let Some(reader) = source.schema_for(&writer_name).map(Arc::clone) else {
        let accepted: Vec<&str> = source
            .schemas
            .iter()
            .map(|s| s.full_name.as_str())
            .collect();
        return Ok(dead(
            "schema-mismatch",
            format!(
                "record type `{writer_name}` (schema id {schema_id}) is not one this source reads: {}",
                accepted.join(", ")
            ),
            &fallback_id,
        ));
    };
    let avro = match codec::decode(schema_id, &writer, &reader.schema, body) {
        Ok(v) => v,
        Err(e @ CodecError::Resolve { .. }) => {
            return Ok(dead("schema-mismatch", e.to_string(), &fallback_id));
        }
        Err(e) => return Ok(dead("avro-decode", e.to_string(), &fallback_id)),
    };
    let payload = avro_to_json(&avro);
    let event_id = record
        .event_id_header
        .clone()
        .or_else(|| {
            let field = source.event_id_field.as_ref()?;
            match payload.get(field)? {
                Json::String(s) if !s.is_empty() => Some(s.clone()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            }
        })
        .unwrap_or(fallback_id);
    let key_text = record
        .key
        .as_deref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let meta = json!({
        "type": reader.short_name(),
        "eventId": event_id,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": key_text,
        "timestamp": record.timestamp,
    });
    let routed = match runner.route(source, &payload, &meta) {
        Ok(r) => r,
        Err(f) => {
            let origin = Origin {
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
            };
            let failure = Failure {
                class: f.class,
                message: f.message,
                stage: f.stage,
            };
            return Ok(BatchEvent::Dead(Box::new(DeadLetter::new(
                &source.dlq_topic,
                record.key.clone(),
                record.value.clone(),
                &event_id,
                &origin,
                &failure,
                chrono_millis(),
            ))));
        }
    };
    Ok(BatchEvent::Decoded(Box::new(DecodedEvent {
        event_id,
        payload,
        meta,
        event_type: reader.short_name().to_string(),
        schema_id,
        subject: source.subject_for(&reader),
        routed,
        key: record.key.clone(),
        value: record.value.clone(),
        offset: record.offset,
    })))
}

/// Milliseconds since the epoch, for `failed-at` headers.
pub fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
