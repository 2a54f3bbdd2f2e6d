//! The typed, validated topology: the only configuration type the runtime accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::schema::avsc::AvroSchema;
use crate::stage::jq::JqProgram;

/// A validated `topology.toml`. Built only by [`crate::config::load`].
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    /// The file it came from; schema paths are resolved relative to its folder.
    pub file: PathBuf,
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub mongo: MongoSettings,
    pub relay: RelaySettings,
    pub sources: Vec<Source>,
    pub entities: Vec<Entity>,
    pub topics: Vec<OutputTopic>,
    pub stages: Vec<StageDef>,
    pub ingress: Vec<IngressRoute>,
    pub http: HttpSettings,
}

impl Topology {
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn source_for_topic(&self, topic: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.topic == topic)
    }

    pub fn entity(&self, kind: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == kind)
    }

    pub fn output_topic(&self, name: &str) -> Option<&OutputTopic> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Every schema the topology reads or emits with its topic and registry subject, once per
    /// (topic, subject), sources first (what `run` registers and `schemas check` checks).
    pub fn subjects(&self) -> Vec<SubjectUse> {
        let mut out: Vec<SubjectUse> = Vec::new();
        let read = self.sources.iter().flat_map(|s| {
            s.schemas
                .iter()
                .map(move |x| (&s.topic, s.subject_strategy, x))
        });
        let emitted = self.stages.iter().flat_map(|st| {
            st.emits
                .iter()
                .map(|e| (&e.topic, e.subject_strategy, &e.schema))
        });
        for (topic, strategy, schema) in read.chain(emitted) {
            let subject = strategy.subject(topic, &schema.full_name);
            if !out
                .iter()
                .any(|u| u.subject == subject && &u.topic == topic)
            {
                out.push(SubjectUse {
                    topic: topic.clone(),
                    subject,
                    schema: Arc::clone(schema),
                });
            }
        }
        out
    }

    /// The stages fed by `source`, in declaration order (the first whose `when` holds wins).
    pub fn stages_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a StageDef> + 'a {
        self.stages.iter().filter(move |s| s.source == source)
    }
}

/// One schema as the registry knows it: under which subject, for which topic.
#[derive(Debug, Clone)]
pub struct SubjectUse {
    pub topic: String,
    pub subject: String,
    pub schema: Arc<AvroSchema>,
}

/// Debug shows secret properties as `***` (see [`crate::kafka_auth::redacted_properties`]).
#[derive(Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    /// Extra librdkafka properties (security and tuning), already expanded.
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("properties", &crate::kafka_auth::redacted_properties(self))
            .finish()
    }
}

/// Compatibility levels of a Confluent-compatible registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatLevel {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatLevel {
    pub const ALL: [(&'static str, CompatLevel); 7] = [
        ("NONE", CompatLevel::None),
        ("BACKWARD", CompatLevel::Backward),
        ("BACKWARD_TRANSITIVE", CompatLevel::BackwardTransitive),
        ("FORWARD", CompatLevel::Forward),
        ("FORWARD_TRANSITIVE", CompatLevel::ForwardTransitive),
        ("FULL", CompatLevel::Full),
        ("FULL_TRANSITIVE", CompatLevel::FullTransitive),
    ];

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|(_, level)| *level)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, level)| *level == self)
            .map_or("NONE", |(name, _)| name)
    }
}

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub url: String,
    pub compatibility: CompatLevel,
    /// Register missing schemas on start-up (handy locally; pipelines use `schemas register`).
    pub auto_register: bool,
}

/// Debug shows the URI without its password.
#[derive(Clone)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
    /// Partition batches one processor runs against Mongo at once; the others keep collecting
    /// records meanwhile, so they commit as fewer, larger transactions.
    pub max_concurrent_batches: usize,
}

impl MongoSettings {
    /// Measured with `outflow-bench` (README, Tuning): 2 and 8 carry the same on 6 partitions
    /// (1 carried 15-35% less), and at half load 2 gave the lower, steadier p99: transactions
    /// run one after another in less time than side by side, contending for the same cores.
    /// Like Kafka Streams' one stream thread per instance, scale out with replicas.
    pub const DEFAULT_CONCURRENT_BATCHES: usize = 2;
}

impl std::fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSettings")
            .field("uri", &crate::health::redact_uri(&self.uri))
            .field("database", &self.database)
            .field("max_concurrent_batches", &self.max_concurrent_batches)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Outbox records per Kafka transaction, at most.
    pub batch_records: usize,
    /// How often the relay reads the partitions' offsets documents to learn of appends to the
    /// outbox made by other processes (this process's own are handed over at once).
    pub poll_interval: Duration,
    /// The compacted topic holding one checkpoint per outbox shard.
    pub checkpoint_topic: String,
    /// How long a relay owns a shard without renewing its lease.
    pub lease_ttl: Duration,
}

/// How a topic's records map to registry subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectStrategy {
    /// `<topic>-value`: one record type per topic.
    TopicName,
    /// `<record full name>`: a type keeps its subject across topics.
    RecordName,
    /// `<topic>-<record full name>`: several types on one topic.
    TopicRecordName,
}

impl SubjectStrategy {
    pub const ALL: [(&'static str, SubjectStrategy); 3] = [
        ("topic_name", SubjectStrategy::TopicName),
        ("record_name", SubjectStrategy::RecordName),
        ("topic_record_name", SubjectStrategy::TopicRecordName),
    ];

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, s)| *s)
    }

    /// The value subject of `record_full_name` on `topic`.
    pub fn subject(self, topic: &str, record_full_name: &str) -> String {
        match self {
            SubjectStrategy::TopicName => format!("{topic}-value"),
            SubjectStrategy::RecordName => record_full_name.to_string(),
            SubjectStrategy::TopicRecordName => format!("{topic}-{record_full_name}"),
        }
    }
}

/// Micro-batch limits of a source partition: whichever is reached first cuts the batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_records: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_records: 500,
            max_bytes: 4 * 1024 * 1024,
            linger: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub topic: String,
    pub partitions: i32,
    pub subject_strategy: SubjectStrategy,
    /// Reader schemas of the record types this topic carries.
    pub schemas: Vec<Arc<AvroSchema>>,
    /// The event field producers use as the Kafka key, when declared.
    pub key_field: Option<String>,
    /// The event field holding a producer-assigned event id, when declared.
    pub event_id_field: Option<String>,
    pub dlq_topic: String,
    pub batch: BatchSettings,
}

impl Source {
    /// The reader schema for a record type, by full or short name.
    pub fn schema_for(&self, record_name: &str) -> Option<&Arc<AvroSchema>> {
        self.schemas
            .iter()
            .find(|s| s.full_name == record_name || s.short_name() == record_name)
    }

    /// The registry subject `schema` is registered under on this source's topic.
    pub fn subject_for(&self, schema: &AvroSchema) -> String {
        self.subject_strategy
            .subject(&self.topic, &schema.full_name)
    }
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub collection: String,
}

#[derive(Debug, Clone)]
pub struct OutputTopic {
    pub name: String,
    pub partitions: i32,
    pub schema: Arc<AvroSchema>,
    pub subject_strategy: SubjectStrategy,
}

/// How a stage computes: a declarative jq stage or a custom Rust stage registered by name.
#[derive(Debug, Clone)]
pub enum StageKind {
    Jq { state: JqProgram },
    Custom { name: String },
}

#[derive(Debug, Clone)]
pub struct StageDef {
    pub name: String,
    pub source: String,
    pub kind: StageKind,
    pub when: Option<JqProgram>,
    pub entity_kind: String,
    pub entity_id: JqProgram,
    pub emits: Vec<EmitDef>,
}

#[derive(Debug, Clone)]
pub struct EmitDef {
    pub topic: String,
    pub schema: Arc<AvroSchema>,
    pub subject_strategy: SubjectStrategy,
    pub when: Option<JqProgram>,
    pub key: JqProgram,
    pub value: JqProgram,
}

/// `POST /quotes` → validate the JSON body as `schema` → produce to `topic`.
#[derive(Debug, Clone)]
pub struct IngressRoute {
    pub method: String,
    pub path: String,
    pub topic: String,
    pub schema: Arc<AvroSchema>,
    /// Computes the Kafka key from the body; the source's key field when absent.
    pub key: Option<JqProgram>,
}

/// Where a bearer token comes from (the token itself is never in the topology).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Ingress and query API.
    pub listen: String,
    /// `/metrics`, `/healthz`, `/readyz`, `/openapi.json`; the same address when not set.
    pub admin_listen: Option<String>,
    pub max_body_bytes: usize,
    /// How long ingress waits for the broker's acknowledgement before answering 503.
    pub produce_timeout: Duration,
    pub ingress_token: Option<TokenSource>,
    pub query_token: Option<TokenSource>,
    pub admin_token: Option<TokenSource>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            max_body_bytes: 64 * 1024,
            produce_timeout: Duration::from_secs(10),
            ingress_token: None,
            query_token: None,
            admin_token: None,
        }
    }
}
