//! Runs a topology's stages in memory, no servers: pipe events in, read entities, outputs and
//! dead letters out (Kafka Streams' TopologyTestDriver, for outflow topologies).
//!
//! Records take the same path as in production (Avro encoding against the topic's schema, the
//! decoder, the stage fold); only Kafka, the registry and Mongo are replaced by maps.

pub mod cases;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use apache_avro::Schema;
use serde_json::Value as Json;

use crate::config::{self, ConfigError, Topology};
use crate::dlq::DeadLetter;
use crate::schema::codec;
use crate::schema::json::{avro_to_json, json_to_avro};
use crate::schema::registry::{RegistryError, WriterSchemas};
use crate::source::decode::{RawRecord, decode};
use crate::stage::fold::{OutboxItem, States, fold};
use crate::stage::{Stage, StageRunner};

/// Why the driver refused an input.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no source reads topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{topic}` carries no record type `{wanted}`")]
    UnknownType { topic: String, wanted: String },
    #[error("input does not fit `{schema}`: {errors}")]
    Invalid { schema: String, errors: String },
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
}

/// Schema ids handed out in memory.
#[derive(Default)]
struct MemorySchemas {
    by_id: HashMap<u32, Arc<Schema>>,
    ids: HashMap<String, u32>,
}

impl MemorySchemas {
    fn id_of(&mut self, full_name: &str, schema: &Schema) -> u32 {
        let next = self.ids.len() as u32 + 1;
        let id = *self.ids.entry(full_name.to_string()).or_insert(next);
        self.by_id
            .entry(id)
            .or_insert_with(|| Arc::new(schema.clone()));
        id
    }
}

#[async_trait::async_trait]
impl WriterSchemas for MemorySchemas {
    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        self.by_id.get(&id).cloned().ok_or_else(|| RegistryError {
            message: format!("schema id {id} not found"),
            transient: false,
            not_found: true,
        })
    }
}

/// A record a stage published (decoded back to JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub topic: String,
    pub key: String,
    pub event_type: String,
    pub event_id: String,
    pub value: Json,
}

/// An entity as the store would hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityView {
    pub state: Json,
    pub version: i64,
}

/// The in-memory driver.
pub struct TopologyTestDriver {
    topology: Arc<Topology>,
    runner: StageRunner,
    schemas: MemorySchemas,
    seen: HashSet<String>,
    states: States,
    outputs: Vec<OutputRecord>,
    dead: Vec<DeadLetter>,
    offsets: HashMap<String, i64>,
}

impl TopologyTestDriver {
    /// Loads and validates the topology (offline) with no custom stages.
    pub fn new(topology: impl AsRef<Path>) -> Result<Self, TestkitError> {
        Self::with_stages(topology, HashMap::new())
    }

    /// Loads the topology with custom Rust stages registered by name.
    pub fn with_stages(
        topology: impl AsRef<Path>,
        stages: HashMap<String, Arc<dyn Stage>>,
    ) -> Result<Self, TestkitError> {
        let env = |name: &str| std::env::var(name).ok();
        let names: Vec<String> = stages.keys().cloned().collect();
        let loaded = config::load_with(topology.as_ref(), &env, &names)?;
        let topology = Arc::new(loaded.topology);
        let mut schemas = MemorySchemas::default();
        let mut ids = HashMap::new();
        for s in &topology.sources {
            for schema in &s.schemas {
                schemas.id_of(&schema.full_name, &schema.schema);
            }
        }
        for st in &topology.stages {
            for e in &st.emits {
                let id = schemas.id_of(&e.schema.full_name, &e.schema.schema);
                ids.insert((e.topic.clone(), e.schema.full_name.clone()), id);
            }
        }
        let runner = StageRunner::new(Arc::clone(&topology), stages, ids);
        Ok(Self {
            topology,
            runner,
            schemas,
            seen: HashSet::new(),
            states: HashMap::new(),
            outputs: Vec::new(),
            dead: Vec::new(),
            offsets: HashMap::new(),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Pipes one JSON event of `record_type` (or the topic's only type) into `topic`.
    pub fn pipe(
        &mut self,
        topic: &str,
        record_type: Option<&str>,
        event: &Json,
    ) -> Result<(), TestkitError> {
        let source = self
            .topology
            .source_for_topic(topic)
            .ok_or_else(|| TestkitError::UnknownTopic(topic.to_string()))?;
        let schema = match record_type {
            Some(t) => source.schema_for(t),
            None if source.schemas.len() == 1 => source.schemas.first(),
            None => None,
        }
        .ok_or_else(|| TestkitError::UnknownType {
            topic: topic.to_string(),
            wanted: record_type.unwrap_or("(none)").to_string(),
        })?
        .clone();
        let avro = json_to_avro(event, &schema.schema).map_err(|errors| TestkitError::Invalid {
            schema: schema.full_name.clone(),
            errors: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        let id = self.schemas.id_of(&schema.full_name, &schema.schema);
        let value = codec::encode(id, &schema.schema, avro)?;
        let key = source
            .key_field
            .as_ref()
            .and_then(|f| event.get(f))
            .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_string));
        self.pipe_raw(topic, key.as_deref().map(str::as_bytes), &value, None)
    }

    /// Pipes raw bytes, as a producer would (for dead-letter tests).
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        event_id: Option<&str>,
    ) -> Result<(), TestkitError> {
        let source = self
            .topology
            .source_for_topic(topic)
            .ok_or_else(|| TestkitError::UnknownTopic(topic.to_string()))?
            .clone();
        let offset = self.offsets.entry(topic.to_string()).or_insert(0);
        let record = RawRecord {
            topic: topic.to_string(),
            partition: 0,
            offset: *offset,
            timestamp: Some(0),
            key: key.map(<[u8]>::to_vec),
            value: Some(value.to_vec()),
            event_id_header: event_id.map(str::to_string),
        };
        *offset += 1;
        let event =
            futures::executor::block_on(decode(&record, &source, &self.schemas, &self.runner))
                .map_err(|e| TestkitError::Invalid {
                    schema: String::new(),
                    errors: e.to_string(),
                })?;
        let events = [event];
        let folded = fold(
            &self.runner,
            &events,
            self.seen.clone(),
            self.states.clone(),
            (topic, 0),
            &source.dlq_topic,
            0,
        );
        for l in &folded.logged {
            self.seen.insert(l.event.event_id.clone());
        }
        for e in folded.entities {
            self.states
                .insert((e.kind, e.id), (Some(e.state), e.version));
        }
        for item in folded.outbox {
            match item {
                OutboxItem::Record {
                    draft, event_id, ..
                } => {
                    let schema = self
                        .topology
                        .stages
                        .iter()
                        .flat_map(|s| &s.emits)
                        .find(|e| e.topic == draft.topic)
                        .map(|e| e.schema.schema.clone());
                    let value = match (schema, codec::split_frame(&draft.payload)) {
                        (Some(schema), Ok((id, body))) => {
                            avro_to_json(&codec::decode(id, &schema, &schema, body)?)
                        }
                        _ => Json::Null,
                    };
                    self.outputs.push(OutputRecord {
                        topic: draft.topic,
                        key: draft.key,
                        event_type: draft.event_type,
                        event_id,
                        value,
                    });
                }
                OutboxItem::Dead(dead) => self.dead.push(dead),
            }
        }
        Ok(())
    }

    /// The entity's state and version, as the store would hold them.
    pub fn entity(&self, kind: &str, id: &str) -> Option<EntityView> {
        self.states
            .get(&(kind.to_string(), id.to_string()))
            .and_then(|(state, version)| {
                state.clone().map(|state| EntityView {
                    state,
                    version: *version,
                })
            })
    }

    /// Records published to `topic`, in order.
    pub fn outputs(&self, topic: &str) -> Vec<&OutputRecord> {
        self.outputs.iter().filter(|o| o.topic == topic).collect()
    }

    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead
    }
}
