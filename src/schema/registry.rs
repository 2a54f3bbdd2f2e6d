//! The Confluent-compatible schema registry: writer schemas by id (cached), registration, levels.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_versions, get_schema_by_id, get_schema_by_subject_and_version, post_schema,
};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::config::CompatLevel;
use crate::schema::avsc::AvroSchema;

/// A registry call that failed: `transient` ones are retried, the rest are final.
#[derive(Debug, Clone, thiserror::Error)]
#[error("schema registry: {message}")]
pub struct RegistryError {
    pub message: String,
    /// The registry was unreachable or overloaded; the same call may work later.
    pub transient: bool,
    /// The registry answered that the thing asked for does not exist.
    pub not_found: bool,
}

/// Where decoding finds a writer schema by its id: the registry, or an in-memory map in the testkit.
#[async_trait::async_trait]
pub trait WriterSchemas: Send + Sync {
    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError>;
}

#[async_trait::async_trait]
impl WriterSchemas for Registry {
    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        self.schema_by_id(id).await
    }
}

/// A client of one registry, caching the immutable id → schema mapping.
pub struct Registry {
    url: String,
    settings: SrSettings,
    http: reqwest::Client,
    by_id: RwLock<HashMap<u32, Arc<Schema>>>,
    /// (subject, schema text) → id of what this process registered or looked up already.
    registered: RwLock<HashMap<(String, String), u32>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.url)
    }
}

/// Statuses that say nothing about the request itself (the registry down, overloaded, slow, or
/// refusing our credentials): worth waiting for, never a reason to dead-letter a record.
fn worth_waiting_for(status: u16) -> bool {
    status >= 500 || matches!(status, 401 | 403 | 408 | 429)
}

/// The status in the converter's message (`... failed with status 404 Not Found`).
fn answered_status(error: &str) -> Option<u16> {
    let (_, rest) = error.split_once("failed with status ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The registry's own error code in the converter's cause (`error_code: 40403, message: ...`).
fn registry_code(cause: Option<&str>) -> Option<u32> {
    let (_, rest) = cause?.split_once("error_code: ")?;
    rest.split(',').next()?.trim().parse().ok()
}

fn from_src(e: schema_registry_converter::error::SRCError) -> RegistryError {
    let status = answered_status(&e.error);
    // only the registry's own code (40401 subject, 40402 version, 40403 schema) says a thing does
    // not exist; a bare 404 is a wrong path or a proxy in the way
    let not_found =
        status == Some(404) && registry_code(e.cause.as_deref()).is_some_and(|c| c / 100 == 404);
    let transient = match status {
        Some(404) => !not_found,
        Some(status) => worth_waiting_for(status),
        None => true, // no answer at all: the network, a timeout
    };
    RegistryError {
        message: match e.cause {
            Some(cause) => format!("{}: {cause}", e.error),
            None => e.error,
        },
        transient,
        not_found,
    }
}

impl Registry {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        let settings = SrSettings::new_builder(url.to_string())
            .set_timeout(timeout)
            .build()
            .map_err(from_src)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RegistryError {
                message: format!("cannot build an HTTP client: {e}"),
                transient: false,
                not_found: false,
            })?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            settings,
            http,
            by_id: RwLock::new(HashMap::new()),
            registered: RwLock::new(HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The writer schema of `id` (ids are immutable, so the cache never expires).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.by_id.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let registered = get_schema_by_id(id, &self.settings)
            .await
            .map_err(from_src)?;
        let schema = Schema::parse_str(&registered.schema).map_err(|e| RegistryError {
            message: format!("schema id {id} is not valid Avro: {e}"),
            transient: false,
            not_found: false,
        })?;
        let schema = Arc::new(schema);
        if let Ok(mut map) = self.by_id.write() {
            map.insert(id, Arc::clone(&schema));
        }
        Ok(schema)
    }

    /// Registers `schema` under `subject` (a no-op returning the id if it is there already).
    pub async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<u32, RegistryError> {
        let cache_key = (subject.to_string(), schema.text.clone());
        if let Some(id) = self
            .registered
            .read()
            .ok()
            .and_then(|m| m.get(&cache_key).copied())
        {
            return Ok(id);
        }
        let supplied = SuppliedSchema::new(
            Some(schema.full_name.clone()),
            SchemaType::Avro,
            schema.text.clone(),
        );
        let registered = post_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map_err(from_src)?;
        if let Ok(mut map) = self.by_id.write() {
            map.insert(registered.id, Arc::new(schema.schema.clone()));
        }
        if let Ok(mut map) = self.registered.write() {
            map.insert(cache_key, registered.id);
        }
        Ok(registered.id)
    }

    /// Sets the subject's compatibility level explicitly (registries differ in their defaults).
    pub async fn set_level(&self, subject: &str, level: CompatLevel) -> Result<(), RegistryError> {
        let url = format!("{}/config/{subject}", self.url);
        let response = self
            .http
            .put(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level.as_str() }))
            .send()
            .await
            .map_err(|e| RegistryError {
                message: format!("PUT {url}: {e}"),
                transient: true,
                not_found: false,
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(RegistryError {
                message: format!("PUT {url} answered {}", response.status()),
                transient: worth_waiting_for(response.status().as_u16()),
                not_found: false,
            })
        }
    }

    /// Every registered version of `subject`, oldest first (empty when the subject does not exist).
    pub async fn versions(&self, subject: &str) -> Result<Vec<(u32, Schema)>, RegistryError> {
        let numbers = match get_all_versions(&self.settings, subject.to_string())
            .await
            .map_err(from_src)
        {
            Ok(n) => n,
            Err(e) if e.not_found => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for n in numbers {
            let registered = get_schema_by_subject_and_version(&self.settings, subject, Some(n))
                .await
                .map_err(from_src)?;
            let schema = Schema::parse_str(&registered.schema).map_err(|e| RegistryError {
                message: format!("{subject} version {n} is not valid Avro: {e}"),
                transient: false,
                not_found: false,
            })?;
            out.push((n, schema));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// The id of `schema` under `subject` if it is registered there already.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &AvroSchema,
    ) -> Result<Option<u32>, RegistryError> {
        let url = format!("{}/subjects/{subject}", self.url);
        let response = self
            .http
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema.text }))
            .send()
            .await
            .map_err(|e| RegistryError {
                message: format!("POST {url}: {e}"),
                transient: true,
                not_found: false,
            })?;
        match response.status().as_u16() {
            200 => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Ok(body["id"].as_u64().map(|id| id as u32))
            }
            404 => Ok(None),
            status => Err(RegistryError {
                message: format!("POST {url} answered {status}"),
                transient: worth_waiting_for(status),
                not_found: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema_registry_converter::error::SRCError;

    fn answered(status: &str, cause: Option<&str>) -> RegistryError {
        from_src(SRCError::new(
            &format!("HTTP request to schema registry failed with status {status}"),
            cause.map(str::to_string),
            false,
        ))
    }

    #[test]
    fn only_the_registrys_not_found_code_makes_a_schema_unknown() {
        let unknown = answered(
            "404 Not Found",
            Some("error_code: 40403, message: Schema not found"),
        );
        assert!(unknown.not_found && !unknown.transient);
        let bare = answered(
            "404 Not Found",
            Some("error_code: 0, message: couldn't parse schema registry error json"),
        );
        assert!(
            !bare.not_found && bare.transient,
            "a wrong path waits: {bare:?}"
        );
    }

    #[test]
    fn an_unavailable_or_refusing_registry_is_waited_for() {
        for status in [
            "500 Internal Server Error",
            "503 Service Unavailable",
            "504 Gateway Timeout",
            "429 Too Many Requests",
            "401 Unauthorized",
            "403 Forbidden",
        ] {
            let e = answered(status, None);
            assert!(e.transient && !e.not_found, "{status}: {e:?}");
        }
        let invalid = answered(
            "422 Unprocessable Entity",
            Some("error_code: 42201, message: bad"),
        );
        assert!(!invalid.transient && !invalid.not_found);
    }

    #[test]
    fn a_404_in_a_url_or_an_id_is_not_an_answer() {
        let e = from_src(SRCError::new(
            "error sending request for url (http://registry:8081/404/schemas/ids/404)",
            Some("connection refused".into()),
            true,
        ));
        assert!(e.transient && !e.not_found, "{e:?}");
    }
}
