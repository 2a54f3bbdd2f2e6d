//! Ingress: JSON business events → checked against the topic's Avro schema → produced to Kafka.

pub mod http;
mod renewing;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value as Json;

use crate::config::{Source, Topology};
use crate::schema::codec;
use crate::schema::json::{FieldError, json_to_avro};
use crate::schema::registry::{Registry, RegistryError};
use renewing::RenewingProducer;

/// Why an event was not produced. Nothing was written, except perhaps on a Kafka timeout (see
/// [`ProduceError::may_be_written`]).
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("no source reads topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{topic}` carries no record type `{wanted}` (it carries: {known})")]
    UnknownType {
        topic: String,
        wanted: String,
        known: String,
    },
    #[error("event does not fit `{schema}`: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        schema: String,
        errors: Vec<FieldError>,
    },
    #[error("the key field `{0}` is missing or not a string/number")]
    MissingKey(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("kafka did not acknowledge: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Encode(#[from] codec::CodecError),
}

impl ProduceError {
    /// Whether the event may be on the topic after all: a send that timed out in flight can still
    /// have been written by the broker (librdkafka's `message.timeout.ms`), so the caller must
    /// send it again with the same event id, which outflow processes once.
    pub fn may_be_written(&self) -> bool {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        matches!(
            self,
            Self::Kafka(
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut
                ) | KafkaError::Canceled
            )
        )
    }
}

/// Where an acknowledged event landed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Produced {
    #[serde(rename = "eventId")]
    pub event_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// An idempotent producer (acks=all) of Avro events onto a topology's source topics.
pub struct EventProducer {
    topology: Arc<Topology>,
    registry: Arc<Registry>,
    producer: RenewingProducer,
}

impl EventProducer {
    /// `deadline`: how long librdkafka may try to deliver before the event counts as not written.
    pub fn new(
        topology: Arc<Topology>,
        registry: Arc<Registry>,
        deadline: Duration,
    ) -> Result<Self, ProduceError> {
        let mut config = crate::kafka_client::producer_config(&topology.kafka);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                deadline.as_millis().max(1000).to_string(),
            );
        let producer = RenewingProducer::new(config)?;
        Ok(Self {
            topology,
            registry,
            producer,
        })
    }

    fn source(&self, topic: &str) -> Result<&Source, ProduceError> {
        self.topology
            .source_for_topic(topic)
            .ok_or_else(|| ProduceError::UnknownTopic(topic.to_string()))
    }

    /// Validates `event` as `record_type` (or the topic's only type), encodes and produces it; returns
    /// once the broker acknowledged.
    pub async fn produce(
        &self,
        topic: &str,
        record_type: Option<&str>,
        event: &Json,
        event_id: &str,
    ) -> Result<Produced, ProduceError> {
        self.produce_keyed(topic, record_type, event, event_id, None)
            .await
    }

    /// Like [`Self::produce`], with the Kafka key given (`None`: the source's key field).
    pub async fn produce_keyed(
        &self,
        topic: &str,
        record_type: Option<&str>,
        event: &Json,
        event_id: &str,
        key: Option<String>,
    ) -> Result<Produced, ProduceError> {
        let source = self.source(topic)?;
        let schema = match record_type {
            Some(t) => source.schema_for(t),
            None if source.schemas.len() == 1 => source.schemas.first(),
            None => None,
        }
        .ok_or_else(|| ProduceError::UnknownType {
            topic: topic.to_string(),
            wanted: record_type.unwrap_or("(none given)").to_string(),
            known: source
                .schemas
                .iter()
                .map(|s| s.short_name())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let avro = json_to_avro(event, &schema.schema).map_err(|errors| ProduceError::Invalid {
            schema: schema.full_name.clone(),
            errors,
        })?;
        let key = match (key, &source.key_field) {
            (Some(k), _) => k,
            (None, Some(field)) => match event.get(field) {
                Some(Json::String(s)) if !s.is_empty() => s.clone(),
                Some(Json::Number(n)) => n.to_string(),
                _ => return Err(ProduceError::MissingKey(field.clone())),
            },
            (None, None) => event_id.to_string(),
        };
        let id = self
            .registry
            .register(&source.subject_for(schema), schema)
            .await?;
        let payload = codec::encode(id, &schema.schema, avro)?;
        let headers = OwnedHeaders::new().insert(Header {
            key: crate::dlq::header::EVENT_ID,
            value: Some(event_id),
        });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        let delivery = self.send(record).await?;
        Ok(Produced {
            event_id: event_id.to_string(),
            topic: topic.to_string(),
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    /// Produces raw bytes as they are (for replays and tests of poison records).
    pub async fn produce_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(i32, i64), ProduceError> {
        let mut record = FutureRecord::to(topic).payload(value).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        let delivery = self.send(record).await?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Sends `record` and waits for the broker's acknowledgement; a send that timed out gives
    /// the sends after it a new producer (see [`RenewingProducer`]).
    async fn send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
    ) -> Result<rdkafka::producer::future_producer::Delivery, ProduceError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let producer = self.producer.current();
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(delivery) => Ok(delivery),
            Err((e, _)) => {
                self.producer.after_failure(&producer, &e);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProduceError;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn only_a_send_that_timed_out_may_have_been_written() {
        let kafka = |code| ProduceError::Kafka(KafkaError::MessageProduction(code));
        assert!(kafka(RDKafkaErrorCode::MessageTimedOut).may_be_written());
        assert!(kafka(RDKafkaErrorCode::RequestTimedOut).may_be_written());
        assert!(!kafka(RDKafkaErrorCode::QueueFull).may_be_written());
        assert!(!kafka(RDKafkaErrorCode::UnknownTopicOrPartition).may_be_written());
        assert!(!ProduceError::MissingKey("quoteId".into()).may_be_written());
    }
}
