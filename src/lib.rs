//! outflow: a stream processor on the transactional outbox pattern.
//!
//! # Layout
//! The modules follow the flow of an event:
//! - [`config`]: `topology.toml` → validated [`config::Topology`] (the only config the runtime takes)
//! - [`source`]: consumer group, per-partition micro-batches, decoding ([`schema`]: Avro, registry)
//! - [`stage`]: jq stages and the [`stage::Stage`] trait for custom Rust stages
//! - [`store`]: the one Mongo transaction per batch (event log, entities, outbox, offsets)
//! - [`relay`]: outbox → Kafka with a transactional producer per shard
//! - [`dlq`]: dead-letter records; [`ingress`], [`query`], [`http`], [`openapi`]: the HTTP API
//! - [`runtime`]: the builder that wires them; [`cli`]: one file per subcommand
//! - [`testkit`]: runs a topology in memory for users' own tests
//! - [`graph`], [`health`], [`metrics`], [`topics`]: drawing, probes, metric names, topic creation
//! - [`kafka_auth`]: the Kafka connection check (a refused SASL login fails fast) and secret masking

pub mod cli;
pub mod config;
pub mod dlq;
pub mod graph;
pub mod health;
pub mod http;
pub mod ingress;
pub mod kafka_auth;
pub mod kafka_client;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod rebuild;
pub mod relay;
pub mod runtime;
pub mod schema;
pub mod source;
pub mod stage;
pub mod store;
pub mod testkit;
pub mod topics;

pub use runtime::{Roles, Runtime, RuntimeBuilder};
