//! Stages: one event plus the current entity state in, new state and outgoing events out; no I/O.
//!
//! Declarative stages are jq programs from `topology.toml`; custom stages implement [`Stage`] and are
//! registered by name on the runtime builder. Either way the store writes everything a stage returns
//! in the batch's one transaction.

pub mod fold;
pub mod jq;
mod runner;

use serde_json::Value as Json;

pub use runner::{Applied, OutboxDraft, Routed, StageFailure, StageRunner};

/// What a stage sees of one event.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    /// The decoded event payload.
    pub event: &'a Json,
    /// The entity's state before this event (`None` for a new entity).
    pub state: Option<&'a Json>,
    /// Event metadata: type, eventId, topic, partition, offset, key, timestamp, version, entity.
    pub meta: &'a Json,
}

/// One event a custom stage wants published (validated against the topic's schema by the runner).
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub topic: String,
    pub key: String,
    pub value: Json,
}

/// What a custom stage returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StageOutput {
    pub state: Json,
    pub emits: Vec<Emitted>,
}

/// A custom stage failed on this event: it becomes a dead letter with this message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StageError(pub String);

/// What a caught panic said (its `&str` or `String` payload).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// A stage written in Rust. Must be pure: no I/O, same output for the same input.
pub trait Stage: Send + Sync + 'static {
    fn apply(&self, input: StageInput<'_>) -> Result<StageOutput, StageError>;
}

impl<F> Stage for F
where
    F: Fn(StageInput<'_>) -> Result<StageOutput, StageError> + Send + Sync + 'static,
{
    fn apply(&self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        self(input)
    }
}
