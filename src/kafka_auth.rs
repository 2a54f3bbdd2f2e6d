//! Kafka connection check: the brokers answer, or they refused our SASL credentials or our TLS
//! trust, said clearly.
//!
//! librdkafka treats a refused login or an unverifiable certificate like any broken connection: it
//! logs, backs off and retries for ever, so a wrong password would look like a hang. Every command
//! that starts talking to Kafka (`outflow run`/`serve` through [`crate::topics::ensure`],
//! `validate --online`, `/readyz`, `produce`, `tail`, `dlq`) goes through [`check`] first, which
//! turns the first authentication error into [`KafkaCheckError::Refused`] and a failed TLS
//! handshake into [`KafkaCheckError::Tls`].
//! Secrets: librdkafka property names that hold one are recognised by [`is_secret_key`], and
//! [`redacted_properties`] is the only way the properties are ever shown.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaSettings;

/// Why the Kafka brokers could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaCheckError {
    /// The brokers answered but refused the login: wrong user, password or mechanism.
    #[error(
        "Kafka at {brokers} refused the credentials of user `{user}` (SASL {mechanism}): authentication failed; check sasl.username, sasl.mechanism and the variable behind sasl.password"
    )]
    Refused {
        brokers: String,
        user: String,
        mechanism: String,
    },
    /// The TLS handshake failed: usually a certificate not signed by the CA in `ssl.ca.location`.
    #[error(
        "TLS with the Kafka brokers at {brokers} failed: {reason}; check ssl.ca.location (the CA that signed the brokers' certificates) and that the address matches their certificate"
    )]
    Tls { brokers: String, reason: String },
    #[error(
        "no answer from the Kafka brokers at {brokers} within {seconds} s ({security}): {reason}"
    )]
    Unreachable {
        brokers: String,
        seconds: u64,
        security: String,
        reason: String,
    },
    #[error("cannot create a Kafka client: {0}")]
    Client(String),
}

/// The Kafka client properties that hold secrets (topology.toml must give them as `${VAR}`).
pub fn is_secret_key(key: &str) -> bool {
    ["password", "secret", "key.pem", "token"]
        .iter()
        .any(|s| key.contains(s))
}

/// The properties for display: every secret value replaced by `***`.
pub fn redacted_properties(kafka: &KafkaSettings) -> BTreeMap<String, String> {
    kafka
        .properties
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) { "***" } else { v.as_str() };
            (k.clone(), shown.to_string())
        })
        .collect()
}

/// `security.protocol`, and for SASL the mechanism and user: `SASL_SSL SCRAM-SHA-512 as `app``.
pub fn security(kafka: &KafkaSettings) -> String {
    let protocol = property(kafka, &["security.protocol"]).unwrap_or("PLAINTEXT");
    if protocol.to_ascii_uppercase().starts_with("SASL") {
        let (user, mechanism) = credentials(kafka);
        format!("{protocol} {mechanism} as `{user}`")
    } else {
        protocol.to_string()
    }
}

/// (user, mechanism) as librdkafka will use them; GSSAPI is librdkafka's default mechanism.
fn credentials(kafka: &KafkaSettings) -> (String, String) {
    let user = property(kafka, &["sasl.username"]).unwrap_or("(none)");
    let mechanism = property(kafka, &["sasl.mechanism", "sasl.mechanisms"]).unwrap_or("GSSAPI");
    (user.to_string(), mechanism.to_string())
}

fn property<'a>(kafka: &'a KafkaSettings, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| kafka.properties.get(*k))
        .map(String::as_str)
}

fn is_auth_failure(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

/// What librdkafka said while connecting: a poll result carries only an error's code, and a failed
/// TLS handshake is often only logged (as a broker failure), never raised as an error event.
#[derive(Default)]
struct Watch {
    /// The reason given with the last error event.
    last: Mutex<String>,
    /// The first failed TLS handshake, as logged.
    tls: Mutex<Option<String>>,
}

impl ClientContext for Watch {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let tls_failed = message.contains("SSL handshake failed")
            || message.contains("certificate verify failed");
        if tls_failed && let Ok(mut tls) = self.tls.lock() {
            // `[thrd:ssl://host:port/bootstrap]: ssl://host:port/bootstrap: error: ...`
            let what = message.split_once("]: ").map_or(message, |(_, m)| m);
            tls.get_or_insert_with(|| what.to_string());
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("librdkafka: {error}: {reason}");
        if let Ok(mut last) = self.last.lock() {
            *last = reason.to_string();
        }
    }
}

impl ConsumerContext for Watch {}

impl Watch {
    fn last(&self) -> String {
        self.last.lock().map(|r| r.clone()).unwrap_or_default()
    }
    fn tls(&self) -> Option<String> {
        self.tls.lock().ok().and_then(|t| t.clone())
    }
}

/// Connects with the topology's settings and returns topic name → partition count; fails fast
/// with [`KafkaCheckError::Refused`] on an authentication error, else after `timeout`.
pub async fn check(
    kafka: &KafkaSettings,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>, KafkaCheckError> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || check_blocking(&kafka, timeout))
        .await
        .map_err(|e| KafkaCheckError::Client(format!("the Kafka check crashed: {e}")))?
}

/// [`check`] for synchronous callers (it blocks the thread up to `timeout`).
pub fn check_blocking(
    kafka: &KafkaSettings,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>, KafkaCheckError> {
    // No group.id: the client's own event queue (errors included) is what `poll` serves.
    let consumer: BaseConsumer<Watch> = crate::kafka_client::consumer_config(kafka)
        .create_with_context(Watch::default())
        .map_err(|e| KafkaCheckError::Client(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no broker answered");
    loop {
        while let Some(Err(e)) = consumer.poll(Duration::ZERO) {
            if is_auth_failure(&e) {
                let (user, mechanism) = credentials(kafka);
                return Err(KafkaCheckError::Refused {
                    brokers: kafka.brokers.clone(),
                    user,
                    mechanism,
                });
            }
            let reason = consumer.context().last();
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::SSL) {
                return Err(KafkaCheckError::Tls {
                    brokers: kafka.brokers.clone(),
                    reason,
                });
            }
            last = if reason.is_empty() {
                e.to_string()
            } else {
                reason
            };
        }
        if let Some(reason) = consumer.context().tls() {
            return Err(KafkaCheckError::Tls {
                brokers: kafka.brokers.clone(),
                reason,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaCheckError::Unreachable {
                brokers: kafka.brokers.clone(),
                seconds: timeout.as_secs(),
                security: security(kafka),
                reason: last,
            });
        }
        match consumer.fetch_metadata(None, left.min(Duration::from_millis(500))) {
            Ok(metadata) => {
                return Ok(metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| (t.name().to_string(), t.partitions().len()))
                    .collect());
            }
            Err(e) => last = e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(properties: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            brokers: "b:9092".into(),
            group_id: "g".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn secrets_are_masked_and_the_rest_shown() {
        let k = settings(&[
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "k3y"),
            ("sasl.oauthbearer.client.secret", "s"),
            ("sasl.username", "app"),
        ]);
        let shown = redacted_properties(&k);
        assert_eq!(shown["sasl.password"], "***");
        assert_eq!(shown["ssl.key.password"], "***");
        assert_eq!(shown["sasl.oauthbearer.client.secret"], "***");
        assert_eq!(shown["sasl.username"], "app");
    }

    #[test]
    fn security_names_protocol_mechanism_and_user() {
        assert_eq!(security(&settings(&[])), "PLAINTEXT");
        let sasl = settings(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "app"),
            ("sasl.password", "hunter2"),
        ]);
        assert_eq!(security(&sasl), "SASL_SSL SCRAM-SHA-512 as `app`");
        let refused = KafkaCheckError::Refused {
            brokers: "b:9092".into(),
            user: "app".into(),
            mechanism: "PLAIN".into(),
        };
        assert!(
            refused
                .to_string()
                .contains("refused the credentials of user `app` (SASL PLAIN)")
        );
    }
}
