//! JSON ↔ Avro values, directed by the schema, with field-level errors (`path: expected X, got Y`).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, UnionSchema};
use apache_avro::types::Value;
use serde::Serialize;
use serde_json::Value as Json;

/// One field that does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `$.coverageAmount`.
    pub path: String,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.path, self.expected, self.got
        )
    }
}

fn kind_of(json: &Json) -> String {
    match json {
        Json::Null => "null".into(),
        Json::Bool(_) => "boolean".into(),
        Json::Number(n) if n.is_i64() || n.is_u64() => format!("integer {n}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(_) => "string".into(),
        Json::Array(_) => "array".into(),
        Json::Object(_) => "object".into(),
    }
}

/// Converts `json` into an Avro value of `schema`, collecting every misfit field.
pub fn json_to_avro(json: &Json, schema: &Schema) -> Result<Value, Vec<FieldError>> {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let mut errors = Vec::new();
    let value = convert(json, schema, "$", &names, &mut errors);
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(errors)
    }
}

/// Named types by full name, so `Schema::Ref` can be followed.
fn collect_names<'s>(schema: &'s Schema, names: &mut HashMap<Name, &'s Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

fn convert(
    json: &Json,
    schema: &Schema,
    path: &str,
    names: &HashMap<Name, &Schema>,
    errors: &mut Vec<FieldError>,
) -> Value {
    let mut fail = |expected: &str| {
        errors.push(FieldError {
            path: path.to_string(),
            expected: expected.to_string(),
            got: kind_of(json),
        });
        Value::Null
    };
    match (schema, json) {
        (Schema::Null, Json::Null) => Value::Null,
        (Schema::Boolean, Json::Bool(b)) => Value::Boolean(*b),
        (Schema::Int, Json::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map_or_else(|| fail("int (32-bit)"), Value::Int),
        (Schema::Long, Json::Number(n)) => n
            .as_i64()
            .map_or_else(|| fail("long (64-bit integer)"), Value::Long),
        (Schema::Float, Json::Number(n)) => n
            .as_f64()
            .map_or_else(|| fail("float"), |f| Value::Float(f as f32)),
        (Schema::Double, Json::Number(n)) => {
            n.as_f64().map_or_else(|| fail("double"), Value::Double)
        }
        (Schema::String, Json::String(s)) => Value::String(s.clone()),
        (Schema::Bytes, Json::String(s)) => Value::Bytes(s.as_bytes().to_vec()),
        (Schema::Uuid(_), Json::String(s)) => match uuid::Uuid::parse_str(s) {
            Ok(u) => Value::Uuid(u),
            Err(_) => fail("uuid string"),
        },
        (Schema::Date, Json::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map_or_else(|| fail("date (days since epoch)"), Value::Date),
        (Schema::TimeMillis, Json::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map_or_else(|| fail("time-millis"), Value::TimeMillis),
        (Schema::TimeMicros, Json::Number(n)) => n
            .as_i64()
            .map_or_else(|| fail("time-micros"), Value::TimeMicros),
        (Schema::TimestampMillis, Json::Number(n)) => n
            .as_i64()
            .map_or_else(|| fail("timestamp-millis"), Value::TimestampMillis),
        (Schema::TimestampMicros, Json::Number(n)) => n
            .as_i64()
            .map_or_else(|| fail("timestamp-micros"), Value::TimestampMicros),
        (Schema::LocalTimestampMillis, Json::Number(n)) => n.as_i64().map_or_else(
            || fail("local-timestamp-millis"),
            Value::LocalTimestampMillis,
        ),
        (Schema::Enum(e), Json::String(s)) => match e.symbols.iter().position(|x| x == s) {
            Some(i) => Value::Enum(i as u32, s.clone()),
            None => fail(&format!("one of {}", e.symbols.join(", "))),
        },
        (Schema::Fixed(f), Json::String(s)) if s.len() == f.size => {
            Value::Fixed(f.size, s.as_bytes().to_vec())
        }
        (Schema::Array(a), Json::Array(items)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &a.items, &format!("{path}[{i}]"), names, errors))
                .collect(),
        ),
        (Schema::Map(m), Json::Object(obj)) => Value::Map(
            obj.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        convert(v, &m.types, &format!("{path}.{k}"), names, errors),
                    )
                })
                .collect(),
        ),
        (Schema::Record(r), Json::Object(obj)) => {
            let mut fields = Vec::with_capacity(r.fields.len());
            for field in &r.fields {
                let field_path = format!("{path}.{}", field.name);
                let value = match (obj.get(&field.name), &field.default) {
                    (Some(v), _) => convert(v, &field.schema, &field_path, names, errors),
                    (None, Some(default)) => {
                        convert(default, &field.schema, &field_path, names, errors)
                    }
                    (None, None) if accepts_null(&field.schema) => {
                        convert(&Json::Null, &field.schema, &field_path, names, errors)
                    }
                    (None, None) => {
                        errors.push(FieldError {
                            path: field_path,
                            expected: describe(&field.schema),
                            got: "nothing (field missing)".into(),
                        });
                        Value::Null
                    }
                };
                fields.push((field.name.clone(), value));
            }
            for key in obj.keys() {
                if !r.fields.iter().any(|f| &f.name == key) {
                    errors.push(FieldError {
                        path: format!("{path}.{key}"),
                        expected: "no such field".into(),
                        got: kind_of(&obj[key]),
                    });
                }
            }
            Value::Record(fields)
        }
        (Schema::Union(u), _) => union(json, u, path, names, errors),
        (Schema::Ref { name }, _) => match names.get(name) {
            Some(target) => convert(json, target, path, names, errors),
            None => fail(&format!("a value of the unknown type {name}")),
        },
        (other, _) => fail(&describe(other)),
    }
}

/// The first union branch the value fits (null only for JSON null).
fn union(
    json: &Json,
    u: &UnionSchema,
    path: &str,
    names: &HashMap<Name, &Schema>,
    errors: &mut Vec<FieldError>,
) -> Value {
    for (i, variant) in u.variants().iter().enumerate() {
        let mut trial = Vec::new();
        let value = convert(json, variant, path, names, &mut trial);
        if trial.is_empty() {
            return Value::Union(i as u32, Box::new(value));
        }
    }
    let expected: Vec<String> = u.variants().iter().map(describe).collect();
    errors.push(FieldError {
        path: path.to_string(),
        expected: format!("one of [{}]", expected.join(", ")),
        got: kind_of(json),
    });
    Value::Null
}

fn accepts_null(schema: &Schema) -> bool {
    matches!(schema, Schema::Null)
        || matches!(schema, Schema::Union(u) if u.variants().iter().any(|v| matches!(v, Schema::Null)))
}

/// A short human name of a schema type, for error messages.
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.name()),
        Schema::Enum(e) => format!("enum {}", e.name.name()),
        Schema::Fixed(f) => format!("fixed {} ({} bytes)", f.name.name(), f.size),
        Schema::Array(a) => format!("array of {}", describe(&a.items)),
        Schema::Map(m) => format!("map of {}", describe(&m.types)),
        Schema::Union(u) => u
            .variants()
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join(" | "),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// An Avro value as plain JSON: records → objects, enums → strings, unions → their value.
pub fn avro_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Json::from(*i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => Json::from(*i),
        Value::Float(f) => Json::from(f64::from(*f)),
        Value::Double(f) => Json::from(*f),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            Json::String(String::from_utf8_lossy(b).into_owned())
        }
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => avro_to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(avro_to_json).collect()),
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_to_json(v)))
                .collect(),
        ),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Decimal(_) | Value::BigDecimal(_) | Value::Duration(_) => {
            Json::String(format!("{value:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        let text = r#"{"type":"record","name":"Q","fields":[
            {"name":"id","type":"string"},
            {"name":"amount","type":"double"},
            {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
            {"name":"note","type":["null","string"],"default":null},
            {"name":"currency","type":"string","default":"EUR"}]}"#;
        match Schema::parse_str(text) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn round_trip_with_defaults() {
        let value = json_to_avro(&json!({"id": "q1", "amount": 10, "kind": "B"}), &schema());
        let value = match value {
            Ok(v) => v,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(
            avro_to_json(&value),
            json!({"id": "q1", "amount": 10.0, "kind": "B", "note": null, "currency": "EUR"})
        );
    }

    #[test]
    fn every_field_error_at_once() {
        let errors = json_to_avro(
            &json!({"amount": "ten", "kind": "C", "extra": 1}),
            &schema(),
        )
        .err();
        let paths: Vec<String> = errors
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, vec!["$.id", "$.amount", "$.kind", "$.extra"]);
    }
}
