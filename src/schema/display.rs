//! Record values shown to people: Avro decoded through the registry where possible, else text or hex.

use serde_json::{Value as Json, json};

use super::codec;
use super::json::avro_to_json;
use super::registry::WriterSchemas;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value as JSON: the decoded record when it is framed Avro the registry knows, otherwise
/// `{"undecodable": why, "text": ..., "hex": ...}` (text only when the bytes are UTF-8).
pub async fn value_as_json(registry: &dyn WriterSchemas, bytes: &[u8]) -> Json {
    let why = match codec::split_frame(bytes) {
        Ok((id, body)) => match registry.writer_schema(id).await {
            Ok(schema) => match codec::decode(id, &schema, &schema, body) {
                Ok(v) => return avro_to_json(&v),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "undecodable": why, "text": text, "hex": hex(bytes) }),
        Err(_) => json!({ "undecodable": why, "hex": hex(bytes) }),
    }
}
