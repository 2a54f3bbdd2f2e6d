//! Relay checkpoints: one record per outbox shard on a compacted topic, written in each transaction.
//!
//! Each shard has its own partition of the checkpoint topic, written only by that shard's
//! transactional producer: after `init_transactions` (which completes any transaction a previous
//! owner left open) the partition is stable, so read_committed to its end sees the last checkpoint.
//!
//! A checkpoint names the database whose outbox it counts ([`crate::store::Store::database_id`]):
//! the checkpoint topic is named after the topology and outlives a database, while a new database
//! numbers its outbox from 1 again. Another database's checkpoint counts nothing of this one's.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::KafkaSettings;
use crate::kafka_client::PartitionEofIsNews;

/// The checkpoint value: the last outbox sequence published for a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub shard: String,
    pub seq: i64,
    pub at: i64,
    /// The id of the database whose outbox `seq` counts; absent in checkpoints written before
    /// databases had ids, which count the database the relay finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl Checkpoint {
    /// How far this checkpoint says `database`'s outbox shard is published.
    fn published_in(&self, database: &str) -> i64 {
        match &self.database {
            Some(other) if other != database => 0,
            _ => self.seq,
        }
    }
}

/// Why a shard's checkpoint could not be read: the shard is not published until it can be.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// `at`: the shard and its checkpoint partition.
    #[error("reading the checkpoint of {at}: {source}")]
    Kafka { at: String, source: KafkaError },
    /// Resuming from an older checkpoint would publish again what this one covers.
    #[error("the checkpoint of {at} at offset {offset} cannot be read ({reason})")]
    Undecodable {
        at: String,
        offset: i64,
        reason: String,
    },
}

/// Reads the last committed checkpoint of `shard` (read_committed, so an aborted or open
/// transaction's checkpoint is never seen): how far the shard of `database` is published. `Ok(0)`
/// when it never was, or the last checkpoint is of another database.
///
/// It returns only once the partition is stable: its read_committed end (where PartitionEOF
/// comes) has reached the high watermark. A transaction a previous owner left undecided (seen
/// when a broker restarted under a transaction) hides its checkpoint until the coordinator
/// commits or aborts it; resuming before that would publish its records a second time.
pub fn read(
    kafka: &KafkaSettings,
    topic: &str,
    partition: i32,
    (shard, database): (&str, &str),
    timeout: Duration,
) -> Result<i64, CheckpointError> {
    let at = format!("shard {shard} on {topic}[{partition}]");
    let last = read_last(kafka, (topic, partition), shard, timeout).map_err(|e| match e {
        Read::Kafka(source) => CheckpointError::Kafka { at, source },
        Read::Undecodable { offset, reason } => CheckpointError::Undecodable { at, offset, reason },
    })?;
    let Some(last) = last else { return Ok(0) };
    let published = last.published_in(database);
    if published != last.seq {
        let age = crate::source::decode::chrono_millis().saturating_sub(last.at) / 1000;
        tracing::warn!(
            shard,
            database,
            written_from = last.database.as_deref().unwrap_or_default(),
            seq = last.seq,
            "the shard's last checkpoint was written from another database {age} s ago: none of \
             this database's outbox counts as published (expected once after moving to a new \
             database; if it was seconds ago, another deployment with this topology name runs \
             on the same Kafka cluster and the two fence each other's relays)"
        );
    }
    Ok(published)
}

/// What [`read_seq`] ran into, before the shard and the partition are added.
enum Read {
    Kafka(KafkaError),
    Undecodable { offset: i64, reason: String },
}

impl From<KafkaError> for Read {
    fn from(e: KafkaError) -> Self {
        Read::Kafka(e)
    }
}

/// The shard's last committed checkpoint, once its partition is stable.
fn read_last(
    kafka: &KafkaSettings,
    (topic, partition): (&str, i32),
    shard: &str,
    timeout: Duration,
) -> Result<Option<Checkpoint>, Read> {
    let mut config = crate::kafka_client::consumer_config(kafka);
    config
        .set("group.id", "outflow-relay-checkpoint-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<PartitionEofIsNews> =
        config.create_with_context(PartitionEofIsNews)?;
    let deadline = Instant::now() + timeout;
    let timed_out = || KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut);
    let mut last = None;
    let mut assigned = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (low, high) = consumer.fetch_watermarks(topic, partition, left)?;
        if high <= low {
            break;
        }
        if !assigned {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            drop(tpl);
            assigned = true;
        }
        loop {
            if Instant::now() > deadline {
                return Err(timed_out().into());
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.key() == Some(shard.as_bytes()) => {
                    let payload = m.payload().unwrap_or_default();
                    match serde_json::from_slice::<Checkpoint>(payload) {
                        Ok(cp) => last = Some(cp),
                        Err(e) => {
                            return Err(Read::Undecodable {
                                offset: m.offset(),
                                reason: e.to_string(),
                            });
                        }
                    }
                }
                Some(Ok(_)) => {} // another shard's, sharing the partition
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        if position(&consumer, topic, partition)? >= high {
            break;
        }
        if Instant::now() > deadline {
            return Err(timed_out().into());
        }
        tracing::info!(
            topic,
            partition,
            high,
            "checkpoint partition has an undecided transaction; waiting for it"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(consumer);
    Ok(last)
}

/// The consumer's next offset in `partition` (the list is dropped before the consumer can be).
fn position(
    consumer: &BaseConsumer<PartitionEofIsNews>,
    topic: &str,
    partition: i32,
) -> Result<i64, KafkaError> {
    let positions = consumer.position()?;
    let offset = positions
        .find_partition(topic, partition)
        .map(|p| p.offset());
    drop(positions);
    Ok(match offset {
        Some(Offset::Offset(n)) => n,
        _ => -1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Checkpoint {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn a_checkpoint_counts_only_the_outbox_of_its_own_database() {
        let ours = parsed(r#"{"shard":"q:0","seq":42,"at":1,"database":"db-a"}"#);
        assert_eq!(ours.published_in("db-a"), 42);
        assert_eq!(ours.published_in("db-b"), 0);
    }

    #[test]
    fn a_checkpoint_written_before_databases_had_ids_counts_the_database_found() {
        let legacy = parsed(r#"{"shard":"q:0","seq":42,"at":1}"#);
        assert_eq!(legacy.published_in("db-a"), 42);
        let written = serde_json::to_string(&Checkpoint {
            database: Some("db-a".into()),
            ..legacy
        })
        .unwrap_or_default();
        assert!(written.contains(r#""database":"db-a""#), "{written}");
    }
}
