//! The librdkafka configuration of each kind of outflow client: brokers, then the user's properties
//! that mean something to that kind.

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// The kind of librdkafka handle a configuration is for. An admin client is a producer handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handle {
    Consumer,
    Producer,
}

/// librdkafka's consumer-only properties (`C` in its CONFIGURATION.md, 2.12, global and topic):
/// set on a producer they do nothing, and librdkafka warns (`CONFWARN`) at every producer's
/// creation, several times over for a relay that runs one producer per shard.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.offset.reset",
    "consume.callback.max.messages",
];

/// librdkafka's producer-only properties (`P`), which a consumer warns about likewise.
const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queuing.strategy",
    "produce.offset.report",
    "partitioner",
];

/// Brokers, a reconnect cap, and every user property except those only the other kind reads.
fn client_config(kafka: &KafkaSettings, handle: Handle) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    // librdkafka backs off reconnecting up to 10 s, so after a broker restart a client may wait
    // that much longer for it (in a restart test the group coordinator's connection came up 5 s
    // after the broker answered again): the Java clients' 1 s cap, unless `[kafka] properties`
    // set one
    config.set("reconnect.backoff.max.ms", "1000");
    let other_kinds = match handle {
        Handle::Consumer => PRODUCER_ONLY,
        Handle::Producer => CONSUMER_ONLY,
    };
    for (key, value) in &kafka.properties {
        if !other_kinds.contains(&key.as_str()) {
            config.set(key, value);
        }
    }
    config
}

/// Why librdkafka would refuse `key = value` (an unknown property or a value it cannot take), as
/// `outflow validate` reports it; `None` when it takes it. Nothing connects: this only sets the
/// property on a configuration. A secret's value is never part of the answer.
pub fn refused_property(key: &str, value: &str) -> Option<Refused> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaConfRes;
    match ClientConfig::new().set(key, value).create_native_config() {
        Ok(_) => None,
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => {
            Some(Refused::Unknown)
        }
        // librdkafka's words quote the value
        Err(KafkaError::ClientConfig(..)) if crate::kafka_auth::is_secret_key(key) => {
            Some(Refused::Invalid("not a value it takes".to_string()))
        }
        Err(KafkaError::ClientConfig(_, why, ..)) => Some(Refused::Invalid(why)),
        Err(other) => Some(Refused::Invalid(other.to_string())),
    }
}

/// What librdkafka said about a property it refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such property.
    Unknown,
    /// The property exists; this is why the value does not fit.
    Invalid(String),
}

/// A consumer's configuration: [`client_config`] for a consumer handle.
pub fn consumer_config(kafka: &KafkaSettings) -> ClientConfig {
    client_config(kafka, Handle::Consumer)
}

/// An admin client's configuration (librdkafka runs it on a producer handle).
pub fn admin_config(kafka: &KafkaSettings) -> ClientConfig {
    client_config(kafka, Handle::Producer)
}

/// The configuration of a producer of keyed records, with Kafka's Java partitioner, murmur2,
/// unless `[kafka] properties` names another. librdkafka's own default (CRC32) sends a key to
/// another partition than the Java clients and Kafka Streams do, so events of one entity written
/// by a Java service and by outflow's ingress would be processed by two partitions, and outflow's
/// output would not be co-partitioned with the Java producers' topics.
pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(kafka, Handle::Producer);
    if !kafka.properties.contains_key("partitioner") {
        // `_random`: a record with no key goes to a random partition, as in the Java client
        config.set("partitioner", "murmur2_random");
    }
    config
}

/// Drops a producer that is being replaced off the async runtime, once whatever still uses it is
/// done with it: `rd_kafka_destroy` may block while it winds down. Nobody takes a new handle on
/// a retired producer, and its sends in flight end by `message.timeout.ms`.
pub fn retire_producer(producer: std::sync::Arc<rdkafka::producer::FutureProducer>) {
    tokio::spawn(async move {
        while std::sync::Arc::strong_count(&producer) > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    });
}

/// The client context of readers that set `enable.partition.eof`: librdkafka may also report a
/// partition's end as a global error event, which the default context logs as an ERROR; here it
/// is the news it is (debug), and every other error is still logged.
pub struct PartitionEofIsNews;

impl rdkafka::ClientContext for PartitionEofIsNews {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::debug!("librdkafka: {error}: {reason}");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for PartitionEofIsNews {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn settings(properties: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            brokers: "localhost:9092".to_string(),
            group_id: "g".to_string(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn each_client_gets_the_properties_of_its_kind_and_the_shared_ones() {
        let kafka = settings(&[
            ("session.timeout.ms", "10000"),
            ("compression.type", "zstd"),
            ("security.protocol", "SASL_SSL"),
        ]);
        let consumer = consumer_config(&kafka);
        assert_eq!(consumer.get("session.timeout.ms"), Some("10000"));
        assert_eq!(consumer.get("compression.type"), None);
        assert_eq!(consumer.get("security.protocol"), Some("SASL_SSL"));
        for config in [producer_config(&kafka), admin_config(&kafka)] {
            assert_eq!(config.get("session.timeout.ms"), None);
            assert_eq!(config.get("compression.type"), Some("zstd"));
            assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        }
        assert_eq!(
            producer_config(&kafka).get("partitioner"),
            Some("murmur2_random")
        );
        assert_eq!(admin_config(&kafka).get("partitioner"), None);
    }

    #[test]
    fn librdkafka_refusals_are_told_apart() {
        assert_eq!(refused_property("session.timeout.ms", "10000"), None);
        assert_eq!(
            refused_property("acks", "all"),
            None,
            "a topic-level property"
        );
        assert_eq!(
            refused_property("sesion.timeout.ms", "10000"),
            Some(Refused::Unknown)
        );
        let Some(Refused::Invalid(why)) = refused_property("linger.ms", "abc") else {
            panic!("linger.ms = abc is not a number");
        };
        assert!(why.starts_with("Invalid value"), "{why}");
    }
}
