//! Avro schemas: the files, JSON ↔ Avro, the Confluent wire format and the registry.

pub mod avsc;
pub mod codec;
pub mod compat;
pub mod display;
pub mod json;
pub mod registry;
