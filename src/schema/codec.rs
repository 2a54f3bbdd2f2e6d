//! The Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) and Avro datums.

use apache_avro::Schema;
use apache_avro::types::Value;

/// Why bytes could not be decoded or a value encoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    #[error("record is {0} bytes long: too short for the Confluent wire format (5-byte header)")]
    TooShort(usize),
    #[error("magic byte is {0:#04x}, expected 0x00: not Confluent-framed Avro")]
    BadMagic(u8),
    #[error("Avro body does not decode with writer schema id {id}: {reason}")]
    Decode { id: u32, reason: String },
    #[error("record of schema id {id} cannot be read as `{reader}`: {reason}")]
    Resolve {
        id: u32,
        reader: String,
        reason: String,
    },
    #[error("value does not encode as `{schema}`: {reason}")]
    Encode { schema: String, reason: String },
}

/// Splits a framed record into its schema id and Avro body.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if bytes.len() < 5 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[0] != 0 {
        return Err(CodecError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// Frames an Avro body with its schema id.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes `body` written with `writer` and resolves it to `reader` (defaults filled, fields dropped).
pub fn decode(id: u32, writer: &Schema, reader: &Schema, body: &[u8]) -> Result<Value, CodecError> {
    let mut cursor = body;
    let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .build()
        .and_then(|r| r.read_value(&mut cursor))
        .map_err(|e| CodecError::Decode {
            id,
            reason: e.to_string(),
        })?;
    // apache-avro reads a string cut short as Null instead of failing: check the value's shape
    if !value.validate(writer) {
        return Err(CodecError::Decode {
            id,
            reason: "the body ends early or does not match the writer schema".to_string(),
        });
    }
    if !cursor.is_empty() {
        return Err(CodecError::Decode {
            id,
            reason: format!("{} trailing bytes after the record", cursor.len()),
        });
    }
    if writer == reader {
        return Ok(value);
    }
    value.resolve(reader).map_err(|e| CodecError::Resolve {
        id,
        reader: reader
            .name()
            .map_or_else(|| "?".into(), |n| n.fullname(None)),
        reason: e.to_string(),
    })
}

/// Encodes `value` (already shaped by `schema`) and frames it with `id`.
pub fn encode(id: u32, schema: &Schema, value: Value) -> Result<Vec<u8>, CodecError> {
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| CodecError::Encode {
            schema: schema
                .name()
                .map_or_else(|| "?".into(), |n| n.fullname(None)),
            reason: e.to_string(),
        })?;
    Ok(frame(id, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame(42, &[1, 2, 3]);
        assert_eq!(framed, vec![0, 0, 0, 0, 42, 1, 2, 3]);
        assert!(matches!(split_frame(&framed), Ok((42, [1, 2, 3]))));
    }

    #[test]
    fn bad_frames_say_why() {
        assert!(matches!(split_frame(&[0, 1]), Err(CodecError::TooShort(2))));
        assert!(matches!(
            split_frame(b"{\"json\":1}"),
            Err(CodecError::BadMagic(b'{'))
        ));
    }

    #[test]
    fn truncated_body_is_an_error_not_a_panic() {
        let schema = match Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}"#,
        ) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let value = Value::Record(vec![("s".into(), Value::String("hello".into()))]);
        let framed = match encode(7, &schema, value) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let (id, body) = match split_frame(&framed) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        assert!(decode(id, &schema, &schema, body).is_ok());
        let truncated = decode(id, &schema, &schema, &body[..3]);
        assert!(
            matches!(truncated, Err(CodecError::Decode { .. })),
            "{truncated:?}"
        );
    }
}
