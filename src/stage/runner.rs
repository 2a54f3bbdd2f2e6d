//! Runs a topology's stages on decoded events: routing, entity ids, new state, encoded emits.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::jq::JqValue;
use super::{Stage, StageInput, StageOutput};
use crate::config::{EmitDef, Source, StageDef, StageKind, Topology};
use crate::schema::{codec, json as avro_json};

/// An event failed in a stage: a dead letter, and processing goes on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class} in stage `{stage}`: {message}")]
pub struct StageFailure {
    /// Stable class for the `outflow.error.class` header and the DLQ metric.
    pub class: &'static str,
    pub stage: String,
    pub message: String,
}

/// Which stage takes an event and which entity it changes.
#[derive(Debug, Clone)]
pub struct Routed {
    pub stage: usize,
    pub entity_kind: String,
    pub entity_id: String,
}

/// An outgoing record, encoded, before the store gives it its outbox id and sequence.
#[derive(Debug, Clone)]
pub struct OutboxDraft {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// Record type (the Avro record's short name).
    pub event_type: String,
}

/// The outcome of one event in its stage.
#[derive(Debug, Clone)]
pub struct Applied {
    pub state: Json,
    pub outbox: Vec<OutboxDraft>,
}

/// Stages of one topology with what they need at run time (schema ids, custom stages).
pub struct StageRunner {
    topology: Arc<Topology>,
    custom: HashMap<String, Arc<dyn Stage>>,
    /// Registry id per (topic, record full name) of every schema a stage may emit.
    schema_ids: HashMap<(String, String), u32>,
}

impl StageRunner {
    pub fn new(
        topology: Arc<Topology>,
        custom: HashMap<String, Arc<dyn Stage>>,
        schema_ids: HashMap<(String, String), u32>,
    ) -> Self {
        Self {
            topology,
            custom,
            schema_ids,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The first stage of `source` whose `when` holds, with the entity it targets; `None` if no stage wants it.
    pub fn route(
        &self,
        source: &Source,
        event: &Json,
        meta: &Json,
    ) -> Result<Option<Routed>, StageFailure> {
        let input = JqValue::object([
            ("event", JqValue::from_json(event)),
            ("state", JqValue::from_json(&Json::Null)),
            ("meta", JqValue::from_json(meta)),
        ]);
        for (index, stage) in self.topology.stages.iter().enumerate() {
            if stage.source != source.name {
                continue;
            }
            if let Some(when) = &stage.when {
                let holds = when
                    .holds(&input)
                    .map_err(|e| failure("stage-error", stage, e.to_string()))?;
                if !holds {
                    continue;
                }
            }
            let id = stage
                .entity_id
                .run_one(&input)
                .map_err(|e| failure("entity-id", stage, e.to_string()))?;
            let entity_id = scalar_text(&id).ok_or_else(|| {
                failure(
                    "entity-id",
                    stage,
                    format!("entity id must be a non-empty string or number, got {id}"),
                )
            })?;
            return Ok(Some(Routed {
                stage: index,
                entity_kind: stage.entity_kind.clone(),
                entity_id,
            }));
        }
        Ok(None)
    }

    /// Applies stage `index` to one event given the entity's current state.
    pub fn apply(
        &self,
        index: usize,
        event: &Json,
        state: Option<&Json>,
        meta: &Json,
    ) -> Result<Applied, StageFailure> {
        let Some(stage) = self.topology.stages.get(index) else {
            return Err(StageFailure {
                class: "stage-error",
                stage: String::new(),
                message: format!("no stage #{index}"),
            });
        };
        let applied = self.run(stage, event, state, meta)?;
        let size = bson_size(&applied.state);
        if size > MAX_STATE_BYTES {
            return Err(failure(
                "too-large",
                stage,
                format!(
                    "the new state of this {} would be {size} bytes as BSON, over MongoDB's \
                     16 MiB document limit; the entity keeps its state",
                    stage.entity_kind
                ),
            ));
        }
        Ok(applied)
    }

    fn run(
        &self,
        stage: &StageDef,
        event: &Json,
        state: Option<&Json>,
        meta: &Json,
    ) -> Result<Applied, StageFailure> {
        match &stage.kind {
            StageKind::Jq { state: program } => {
                // each part converted once, shared by the state program and every emit's; keys
                // in the order the serde_json objects gave them before (preserve_order is on)
                let (event, meta) = (JqValue::from_json(event), JqValue::from_json(meta));
                let previous = JqValue::from_json(state.unwrap_or(&Json::Null));
                let input = JqValue::object([
                    ("event", event.clone()),
                    ("state", previous.clone()),
                    ("meta", meta.clone()),
                ]);
                let new_state = program
                    .run_one(&input)
                    .map_err(|e| failure("stage-error", stage, e.to_string()))?;
                let emit_input = JqValue::object([
                    ("event", event),
                    ("state", JqValue::from_json(&new_state)),
                    ("previous", previous),
                    ("meta", meta),
                ]);
                let mut outbox = Vec::new();
                for emit in &stage.emits {
                    if let Some(when) = &emit.when
                        && !when
                            .holds(&emit_input)
                            .map_err(|e| failure("stage-error", stage, e.to_string()))?
                    {
                        continue;
                    }
                    let key = emit
                        .key
                        .run_one(&emit_input)
                        .map_err(|e| failure("stage-error", stage, e.to_string()))?;
                    let key = scalar_text(&key).ok_or_else(|| {
                        failure(
                            "emit-invalid",
                            stage,
                            format!("emit key must be a string or number, got {key}"),
                        )
                    })?;
                    let value = emit
                        .value
                        .run_one(&emit_input)
                        .map_err(|e| failure("stage-error", stage, e.to_string()))?;
                    outbox.push(self.encode(stage, emit, key, &value)?);
                }
                Ok(Applied {
                    state: new_state,
                    outbox,
                })
            }
            StageKind::Custom { name } => {
                let Some(custom) = self.custom.get(name) else {
                    return Err(failure(
                        "stage-error",
                        stage,
                        format!("custom stage `{name}` is not registered"),
                    ));
                };
                // a panic is the stage failing on this event: a dead letter, like an error
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    custom.apply(StageInput { event, state, meta })
                }))
                .map_err(|panic| {
                    let why = crate::stage::panic_text(panic.as_ref());
                    failure(
                        "stage-error",
                        stage,
                        format!("custom stage `{name}` panicked: {why}"),
                    )
                })?;
                let StageOutput {
                    state: new_state,
                    emits,
                } = applied.map_err(|e| failure("stage-error", stage, e.0))?;
                let mut outbox = Vec::new();
                for emitted in emits {
                    let emit = stage.emits.iter().find(|e| e.topic == emitted.topic).ok_or_else(|| {
                        failure("emit-invalid", stage, format!("stage emitted to `{}`, which its [[stages.emit]] does not declare", emitted.topic))
                    })?;
                    outbox.push(self.encode(stage, emit, emitted.key, &emitted.value)?);
                }
                Ok(Applied {
                    state: new_state,
                    outbox,
                })
            }
        }
    }

    /// Checks `value` against the emit's schema and encodes it in the wire format.
    fn encode(
        &self,
        stage: &StageDef,
        emit: &EmitDef,
        key: String,
        value: &Json,
    ) -> Result<OutboxDraft, StageFailure> {
        let avro = avro_json::json_to_avro(value, &emit.schema.schema).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            failure(
                "emit-invalid",
                stage,
                format!(
                    "value for `{}` does not fit `{}`: {}",
                    emit.topic,
                    emit.schema.full_name,
                    list.join("; ")
                ),
            )
        })?;
        let id = self
            .schema_ids
            .get(&(emit.topic.clone(), emit.schema.full_name.clone()))
            .copied()
            .ok_or_else(|| {
                failure(
                    "emit-invalid",
                    stage,
                    format!(
                        "no registry id for `{}` on `{}`",
                        emit.schema.full_name, emit.topic
                    ),
                )
            })?;
        let payload = codec::encode(id, &emit.schema.schema, avro)
            .map_err(|e| failure("emit-invalid", stage, e.to_string()))?;
        if payload.len() + key.len() > crate::dlq::MAX_RECORD_BYTES {
            return Err(failure(
                "too-large",
                stage,
                format!(
                    "record for `{}` is {} bytes, over the relay's limit of {} bytes",
                    emit.topic,
                    payload.len() + key.len(),
                    crate::dlq::MAX_RECORD_BYTES
                ),
            ));
        }
        Ok(OutboxDraft {
            topic: emit.topic.clone(),
            key,
            payload,
            event_type: emit.schema.short_name().to_string(),
        })
    }
}

/// The largest entity state kept: MongoDB refuses documents over 16 MiB, and the entity document
/// holds a few fields beside the state. A larger state would fail its batch's transaction on every
/// retry, on every processor the partition moves to.
const MAX_STATE_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// `json`'s size as BSON, or a little more (every number counted as 8 bytes).
fn bson_size(json: &Json) -> usize {
    const DOCUMENT: usize = 5; // length and terminator
    match json {
        Json::Null => 0,
        Json::Bool(_) => 1,
        Json::Number(_) => 8,
        Json::String(s) => 4 + s.len() + 1,
        // an element: its type byte, its name and the name's terminator, its value
        Json::Array(items) => {
            let digits = |i: usize| i.checked_ilog10().map_or(1, |d| d as usize + 1);
            DOCUMENT
                + items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| 2 + digits(i) + bson_size(v))
                    .sum::<usize>()
        }
        Json::Object(fields) => {
            DOCUMENT
                + fields
                    .iter()
                    .map(|(k, v)| 2 + k.len() + bson_size(v))
                    .sum::<usize>()
        }
    }
}

fn failure(class: &'static str, stage: &StageDef, message: String) -> StageFailure {
    StageFailure {
        class,
        stage: stage.name.clone(),
        message,
    }
}

/// A string or number as text; anything else (or an empty string) is not an id.
fn scalar_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::bson_size;
    use serde_json::json;

    #[test]
    fn the_bson_size_estimate_is_exact_but_for_small_integers() {
        let state = json!({
            "name": "quote", "ok": true, "none": null, "premium": 12.5, "big": 5_000_000_000_i64,
            "lines": [{"sku": "a"}, {"sku": "bb"}], "tags": ["x", "y", "z", "a", "b", "c", "d", "e", "f", "g", "h", "i"], "nested": {"deep": {"er": "é"}}
        });
        let doc = match crate::store::documents::to_bson(&state) {
            mongodb::bson::Bson::Document(d) => d,
            other => panic!("{other:?}"),
        };
        let mut bytes = Vec::new();
        doc.to_writer(&mut bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bson_size(&state), bytes.len());
        assert_eq!(
            bson_size(&json!({"n": 1})),
            12 + 4,
            "an int32 is counted as 8 bytes"
        );
    }
}
