//! Avro schema files (`schemas/*.avsc`): loading, naming and the canonical text sent to the registry.

use std::path::{Path, PathBuf};

use apache_avro::Schema;

/// One parsed `.avsc` file whose top level is a named record.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    /// The file, as written in the topology (relative to it).
    pub path: PathBuf,
    /// Namespace-qualified record name, e.g. `com.acme.insurance.quote.QuoteRequested`.
    pub full_name: String,
    /// The schema text as in the file (what the registry stores).
    pub text: String,
    pub schema: Schema,
}

/// Why a schema file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AvscError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid Avro schema: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl AvroSchema {
    /// Parses schema text; `path` is only used to name it in errors.
    pub fn parse(path: &Path, text: String) -> Result<Self, AvscError> {
        let invalid = |reason: String| AvscError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let schema = Schema::parse_str(&text).map_err(|e| invalid(e.to_string()))?;
        let full_name = match &schema {
            Schema::Record(record) => record.name.fullname(None),
            other => {
                return Err(invalid(format!(
                    "the top level must be a record, found {:?}",
                    apache_avro::schema::SchemaKind::from(other)
                )));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            full_name,
            text,
            schema,
        })
    }

    /// Reads and parses `base/path`.
    pub fn load(base: &Path, path: &Path) -> Result<Self, AvscError> {
        let full = base.join(path);
        let text = std::fs::read_to_string(&full).map_err(|source| AvscError::Read {
            path: full.clone(),
            source,
        })?;
        Self::parse(path, text)
    }

    /// The record name without its namespace (`QuoteRequested`): the event type.
    pub fn short_name(&self) -> &str {
        self.full_name.rsplit('.').next().unwrap_or(&self.full_name)
    }

    /// Top-level field names, in order.
    pub fn field_names(&self) -> Vec<&str> {
        match &self.schema {
            Schema::Record(record) => record.fields.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_fields() {
        let text = r#"{"type":"record","name":"A","namespace":"x.y","fields":[{"name":"id","type":"string"}]}"#;
        let schema = AvroSchema::parse(Path::new("a.avsc"), text.to_string());
        let schema = match schema {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(schema.full_name, "x.y.A");
        assert_eq!(schema.short_name(), "A");
        assert_eq!(schema.field_names(), vec!["id"]);
    }

    #[test]
    fn a_non_record_is_refused() {
        let err = AvroSchema::parse(Path::new("s.avsc"), r#""string""#.to_string());
        assert!(matches!(err, Err(AvscError::Invalid { .. })));
    }
}
