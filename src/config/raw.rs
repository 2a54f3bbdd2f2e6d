//! The raw serde mirror of `topology.toml`: every value keeps its span; nothing here is checked.
//!
//! Only `config::validate` reads these types; the runtime sees the typed `Topology`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

/// A string value with its byte span in the file.
pub type SStr = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
pub struct RawTopology {
    pub topology: Option<Spanned<RawMeta>>,
    pub kafka: Option<Spanned<RawKafka>>,
    pub registry: Option<Spanned<RawRegistry>>,
    pub mongo: Option<Spanned<RawMongo>>,
    pub relay: Option<Spanned<RawRelay>>,
    #[serde(default)]
    pub sources: Vec<Spanned<RawSource>>,
    #[serde(default)]
    pub entities: Vec<Spanned<RawEntity>>,
    #[serde(default)]
    pub topics: Vec<Spanned<RawTopic>>,
    #[serde(default)]
    pub stages: Vec<Spanned<RawStage>>,
    #[serde(default)]
    pub ingress: Vec<Spanned<RawIngress>>,
    pub http: Option<Spanned<RawHttp>>,
}

#[derive(Debug, Deserialize)]
pub struct RawIngress {
    pub method: Option<SStr>,
    pub path: Option<SStr>,
    pub topic: Option<SStr>,
    #[serde(rename = "type")]
    pub record_type: Option<SStr>,
    pub key: Option<SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawHttp {
    pub listen: Option<SStr>,
    pub admin_listen: Option<SStr>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub produce_timeout_ms: Option<Spanned<i64>>,
    pub tokens: Option<Spanned<RawTokens>>,
}

/// Bearer tokens per route group, as `env:NAME` or `file:/path` (never the token itself).
#[derive(Debug, Deserialize)]
pub struct RawTokens {
    pub ingress: Option<SStr>,
    pub query: Option<SStr>,
    pub admin: Option<SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawMeta {
    pub name: Option<SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawKafka {
    pub brokers: Option<SStr>,
    pub group_id: Option<SStr>,
    /// Passed to librdkafka as is (security.protocol, sasl.*, ssl.*), after `${VAR}` expansion.
    #[serde(default)]
    pub properties: BTreeMap<String, SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawRegistry {
    pub url: Option<SStr>,
    pub compatibility: Option<SStr>,
    pub auto_register: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
pub struct RawMongo {
    pub uri: Option<SStr>,
    pub database: Option<SStr>,
    pub max_concurrent_batches: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRelay {
    pub batch_records: Option<Spanned<i64>>,
    pub poll_interval_ms: Option<Spanned<i64>>,
    pub checkpoint_topic: Option<SStr>,
    pub lease_ttl_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawSource {
    pub name: Option<SStr>,
    pub topic: Option<SStr>,
    pub partitions: Option<Spanned<i64>>,
    pub subject_strategy: Option<SStr>,
    #[serde(default)]
    pub schemas: Vec<SStr>,
    pub key: Option<SStr>,
    pub event_id: Option<SStr>,
    pub dlq: Option<SStr>,
    pub batch: Option<Spanned<RawBatch>>,
}

#[derive(Debug, Deserialize)]
pub struct RawBatch {
    pub max_records: Option<Spanned<i64>>,
    pub max_bytes: Option<Spanned<i64>>,
    pub linger_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawEntity {
    pub name: Option<SStr>,
    pub collection: Option<SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawTopic {
    pub name: Option<SStr>,
    pub partitions: Option<Spanned<i64>>,
    pub schema: Option<SStr>,
    pub subject_strategy: Option<SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawStage {
    pub name: Option<SStr>,
    pub source: Option<SStr>,
    /// `jq` for a declarative stage (the default), or the name of a custom Rust stage.
    pub kind: Option<SStr>,
    pub when: Option<SStr>,
    pub entity: Option<Spanned<RawEntityRef>>,
    pub state: Option<SStr>,
    #[serde(default)]
    pub emit: Vec<Spanned<RawEmit>>,
}

#[derive(Debug, Deserialize)]
pub struct RawEntityRef {
    pub kind: Option<SStr>,
    pub id: Option<SStr>,
}

#[derive(Debug, Deserialize)]
pub struct RawEmit {
    pub topic: Option<SStr>,
    pub schema: Option<SStr>,
    pub key: Option<SStr>,
    pub value: Option<SStr>,
    pub when: Option<SStr>,
}

/// The keys each table accepts, for "unknown key" diagnostics and their "did you mean" hints.
/// `path` is the TOML path of the table with array indices removed (e.g. `stages.emit`).
pub fn known_keys(path: &str) -> &'static [&'static str] {
    match path {
        "" => &[
            "topology", "kafka", "registry", "mongo", "relay", "sources", "entities", "topics",
            "stages", "ingress", "http",
        ],
        "topology" => &["name"],
        "kafka" => &["brokers", "group_id", "properties"],
        "registry" => &["url", "compatibility", "auto_register"],
        "mongo" => &["uri", "database", "max_concurrent_batches"],
        "relay" => &[
            "batch_records",
            "poll_interval_ms",
            "checkpoint_topic",
            "lease_ttl_ms",
        ],
        "sources" => &[
            "name",
            "topic",
            "partitions",
            "subject_strategy",
            "schemas",
            "key",
            "event_id",
            "dlq",
            "batch",
        ],
        "sources.batch" => &["max_records", "max_bytes", "linger_ms"],
        "entities" => &["name", "collection"],
        "topics" => &["name", "partitions", "schema", "subject_strategy"],
        "stages" => &["name", "source", "kind", "when", "entity", "state", "emit"],
        "stages.entity" => &["kind", "id"],
        "stages.emit" => &["topic", "schema", "key", "value", "when"],
        "ingress" => &["method", "path", "topic", "type", "key"],
        "http" => &[
            "listen",
            "admin_listen",
            "max_body_bytes",
            "produce_timeout_ms",
            "tokens",
        ],
        "http.tokens" => &["ingress", "query", "admin"],
        _ => &[],
    }
}
