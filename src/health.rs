//! Reachability probes of Kafka, the schema registry and Mongo (for `validate --online` and `/readyz`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{KafkaSettings, MongoSettings, RegistrySettings};

/// What a probe found, or why it could not get an answer.
pub type Probe<T> = Result<T, String>;

/// Topic name → partition count, as the brokers report it.
pub async fn kafka_topics(
    kafka: &KafkaSettings,
    timeout: Duration,
) -> Probe<BTreeMap<String, usize>> {
    crate::kafka_auth::check(kafka, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// The registry's subjects.
pub async fn registry_subjects(
    registry: &RegistrySettings,
    timeout: Duration,
) -> Probe<Vec<String>> {
    let url = format!("{}/subjects", registry.url);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("no answer from the registry at {}: {e}", registry.url))?;
    if !response.status().is_success() {
        return Err(format!(
            "registry answered {} for GET {url}",
            response.status()
        ));
    }
    response
        .json()
        .await
        .map_err(|e| format!("registry's subject list is not JSON: {e}"))
}

/// Pings Mongo and reports whether it can run outflow (a replica set of MongoDB 8.0 or later).
pub async fn mongo_ping(mongo: &MongoSettings, timeout: Duration) -> Probe<String> {
    let mut options = mongodb::options::ClientOptions::parse(&mongo.uri)
        .await
        .map_err(|e| format!("invalid Mongo URI {}: {e}", redact_uri(&mongo.uri)))?;
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    let client = mongodb::Client::with_options(options)
        .map_err(|e| format!("cannot create a Mongo client: {e}"))?;
    let hello = client
        .database("admin")
        .run_command(mongodb::bson::doc! { "hello": 1 })
        .await
        .map_err(|e| format!("no answer from Mongo at {}: {e}", redact_uri(&mongo.uri)))?;
    crate::store::server::fit(&hello)
}

/// Polls `url` every `every` until it answers 2xx or `timeout` passes; whether it did. What the
/// test, bench and fault harnesses wait on (`/readyz`, `/healthz`) before they measure.
pub async fn answers_ok(url: &str, timeout: Duration, every: Duration) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return false;
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let ok = client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// The URI with any password replaced, for logs and output.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn passwords_never_printed() {
        assert_eq!(
            redact_uri("mongodb://app:s3cret@db:27017/?replicaSet=rs0"),
            "mongodb://app:***@db:27017/?replicaSet=rs0"
        );
        assert_eq!(redact_uri("mongodb://db:27017/"), "mongodb://db:27017/");
    }
}
