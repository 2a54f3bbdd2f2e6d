//! Replaying dead letters to their source topic (or another), once each, resumable.
//!
//! A replayed record keeps its original key, value and `outflow.event-id`, so replaying something
//! already processed changes nothing downstream. Each replay is recorded in Mongo (`dlq_replays`,
//! keyed by the dead letter's coordinates) after the broker acknowledged it, so running the same
//! replay again, or resuming one that was interrupted, sends nothing twice.

use std::time::Duration;

use mongodb::bson::{DateTime, Document, doc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::header;
use super::read::StoredDeadLetter;
use crate::store::Store;

/// The Mongo collection of replay markers.
pub const REPLAYS: &str = "dlq_replays";

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter {0} names no source topic; give --to")]
    NoTarget(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("mongo: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

/// What happens to one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        to: String,
    },
    AlreadyReplayed,
    WouldSend {
        to: String,
    },
    /// The dead letter kept no value (it was too large for Kafka): there is nothing to send back;
    /// `why` is its `outflow.value.omitted` header, which says where the original is.
    ValueOmitted {
        why: String,
    },
}

/// Sends dead letters back, one at a time, recording each.
pub struct Replayer {
    store: Store,
    producer: FutureProducer,
    to: Option<String>,
    dry_run: bool,
}

impl Replayer {
    pub fn new(
        kafka: &crate::config::KafkaSettings,
        store: Store,
        to: Option<String>,
        dry_run: bool,
    ) -> Result<Self, ReplayError> {
        let producer = crate::kafka_client::producer_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Self {
            store,
            producer,
            to,
            dry_run,
        })
    }

    fn marker_id(d: &StoredDeadLetter) -> String {
        d.coordinates()
    }

    /// Replays `d` unless it was replayed before.
    pub async fn replay(&self, d: &StoredDeadLetter) -> Result<Outcome, ReplayError> {
        let markers = self.store.database().collection::<Document>(REPLAYS);
        if markers
            .find_one(doc! { "_id": Self::marker_id(d) })
            .await?
            .is_some()
        {
            return Ok(Outcome::AlreadyReplayed);
        }
        let omitted = d.header(header::VALUE_OMITTED);
        if !omitted.is_empty() {
            // sending its missing value back would only make a tombstone and a new dead letter
            return Ok(Outcome::ValueOmitted {
                why: omitted.to_string(),
            });
        }
        let to = match (&self.to, d.header(header::SOURCE_TOPIC)) {
            (Some(t), _) => t.clone(),
            (None, "") => return Err(ReplayError::NoTarget(d.coordinates())),
            (None, source) => source.to_string(),
        };
        if self.dry_run {
            return Ok(Outcome::WouldSend { to });
        }
        let event_id = d.header(header::EVENT_ID).to_string();
        let replay_of = d.coordinates();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: header::EVENT_ID,
                value: Some(&event_id),
            })
            .insert(Header {
                key: "outflow.replay-of",
                value: Some(&replay_of),
            });
        let mut record = FutureRecord::to(&to).headers(headers);
        if let Some(k) = &d.key {
            record = record.key(k);
        }
        if let Some(v) = &d.value {
            record = record.payload(v);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        markers
            .insert_one(doc! { "_id": Self::marker_id(d), "to": &to, "eventId": &event_id, "replayedAt": DateTime::now() })
            .await?;
        Ok(Outcome::Sent { to })
    }
}
