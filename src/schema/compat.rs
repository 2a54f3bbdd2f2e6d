//! Schema compatibility: a new schema against earlier versions under a level, with reasons people read.

use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::config::CompatLevel;

/// One way the new schema breaks one earlier version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Incompatibility {
    /// The earlier version it breaks (1-based, as the registry numbers them).
    pub version: usize,
    /// `backward` (new readers cannot read old records) or `forward` (old readers cannot read new records).
    pub direction: &'static str,
    pub reason: String,
}

fn explain(error: &CompatibilityError, direction: &'static str, version: usize) -> String {
    match error {
        CompatibilityError::MissingDefaultValue(field) if direction == "backward" => {
            format!(
                "field `{field}` added without a default: records written with version {version} have no value for it, so new readers fail"
            )
        }
        CompatibilityError::MissingDefaultValue(field) => {
            format!(
                "field `{field}` removed, but readers of version {version} need it and it has no default there"
            )
        }
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            format!(
                "field `{field}` changed type incompatibly since version {version}: {}",
                inner
                    .to_string()
                    .trim_start_matches("Incompatible schema types! ")
            )
        }
        CompatibilityError::MissingSymbols => format!(
            "enum symbols removed since version {version}: records with them cannot be read"
        ),
        other => format!("{other} (against version {version})"),
    }
}

/// Checks `new` against `earlier` (oldest first) under `level`; empty when compatible.
pub fn check(level: CompatLevel, new: &Schema, earlier: &[Schema]) -> Vec<Incompatibility> {
    let (backward, forward, transitive) = match level {
        CompatLevel::None => return Vec::new(),
        CompatLevel::Backward => (true, false, false),
        CompatLevel::BackwardTransitive => (true, false, true),
        CompatLevel::Forward => (false, true, false),
        CompatLevel::ForwardTransitive => (false, true, true),
        CompatLevel::Full => (true, true, false),
        CompatLevel::FullTransitive => (true, true, true),
    };
    let first = if transitive {
        0
    } else {
        earlier.len().saturating_sub(1)
    };
    let mut found = Vec::new();
    for (i, old) in earlier.iter().enumerate().skip(first) {
        let version = i + 1;
        if backward && let Err(e) = SchemaCompatibility::can_read(old, new) {
            found.push(Incompatibility {
                version,
                direction: "backward",
                reason: explain(&e, "backward", version),
            });
        }
        if forward && let Err(e) = SchemaCompatibility::can_read(new, old) {
            found.push(Incompatibility {
                version,
                direction: "forward",
                reason: explain(&e, "forward", version),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        match Schema::parse_str(&format!(
            r#"{{"type":"record","name":"Q","fields":[{fields}]}}"#
        )) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_field_with_a_default_is_backward_compatible() {
        let v1 = schema(r#"{"name":"id","type":"string"}"#);
        let v2 = schema(
            r#"{"name":"id","type":"string"},{"name":"venue","type":"string","default":"X"}"#,
        );
        assert!(check(CompatLevel::Backward, &v2, &[v1]).is_empty());
    }

    #[test]
    fn a_field_without_a_default_is_named() {
        let v1 = schema(r#"{"name":"id","type":"string"}"#);
        let v2 = schema(r#"{"name":"id","type":"string"},{"name":"premium","type":"double"}"#);
        let found = check(CompatLevel::Backward, &v2, &[v1]);
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .reason
                .starts_with("field `premium` added without a default"),
            "{}",
            found[0].reason
        );
    }

    #[test]
    fn transitive_levels_look_further_back() {
        let v1 = schema(r#"{"name":"id","type":"string"},{"name":"x","type":"string"}"#);
        let v2 = schema(r#"{"name":"id","type":"string"}"#);
        let v3 = schema(r#"{"name":"id","type":"string"},{"name":"x","type":"int","default":0}"#);
        let earlier = [v1, v2];
        assert!(check(CompatLevel::Backward, &v3, &earlier).is_empty());
        let found = check(CompatLevel::BackwardTransitive, &v3, &earlier);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].version, 1);
        assert!(found[0].reason.contains("field `x`"), "{}", found[0].reason);
    }
}
