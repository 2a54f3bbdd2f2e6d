//! Relay checkpoints: one record per outbox shard on a compacted topic, written in each transaction.
//!
//! Each shard has its own partition of the checkpoint topic, written only by that shard's
//! transactional producer: after `init_transactions` (which completes any transaction a previous
//! owner left open) the partition is stable, so read_committed to its end sees the last checkpoint.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::KafkaSettings;

/// The checkpoint value: the last outbox sequence published for a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub shard: String,
    pub seq: i64,
    pub at: i64,
}

/// Reads the last committed checkpoint of `shard` (read_committed, so an aborted or open
/// transaction's checkpoint is never seen). `Ok(0)` when the shard was never published.
pub fn read(
    kafka: &KafkaSettings,
    topic: &str,
    partition: i32,
    shard: &str,
    timeout: Duration,
) -> Result<i64, rdkafka::error::KafkaError> {
    let mut config = crate::health::kafka_config(kafka);
    config
        .set("group.id", "outflow-relay-checkpoint-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    let mut seq = 0;
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        drop(tpl);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if std::time::Instant::now() > deadline {
                return Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::RequestTimedOut,
                ));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if m.key() == Some(shard.as_bytes())
                        && let Some(cp) = m
                            .payload()
                            .and_then(|p| serde_json::from_slice::<Checkpoint>(p).ok())
                    {
                        seq = cp.seq;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }
    drop(consumer);
    Ok(seq)
}
