//! Reading dead-letter topics back: every record up to the end, with its headers, filtered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::header;
use crate::config::KafkaSettings;
use crate::kafka_client::PartitionEofIsNews;
use crate::topics::PartitionsError;

/// A dead letter as read from its topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredDeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl StoredDeadLetter {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// `failed-at` in milliseconds since the epoch (0 when absent).
    pub fn failed_at(&self) -> i64 {
        self.header(header::FAILED_AT).parse().unwrap_or(0)
    }

    /// A stable name for the record: `topic:partition:offset`.
    pub fn coordinates(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// Which dead letters a command works on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only those that failed at or after this time (ms since the epoch).
    pub since: Option<i64>,
    pub error_class: Option<String>,
    pub source_topic: Option<String>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn accepts(&self, d: &StoredDeadLetter) -> bool {
        self.since.is_none_or(|s| d.failed_at() >= s)
            && self
                .error_class
                .as_deref()
                .is_none_or(|c| d.header(header::ERROR_CLASS) == c)
            && self
                .source_topic
                .as_deref()
                .is_none_or(|t| d.header(header::SOURCE_TOPIC) == t)
    }
}

/// Why a dead-letter topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("`{topic}`: {error} (a typo in --topic, or has `outflow run` not created it yet?)")]
    Topic { topic: String, error: String },
    /// A list that silently missed records would be worse than none: an operator would replay
    /// part of the dead letters and believe it was all of them.
    #[error(
        "`{topic}`: partition(s) {pending:?} did not reach their end within {}s (read {read} record(s) so far); \
         is the broker up, or a transaction on the topic left open?",
        waited.as_secs()
    )]
    Incomplete {
        topic: String,
        pending: Vec<i32>,
        read: usize,
        waited: Duration,
    },
}

/// Reads `topic` from the beginning to its end (read_committed) and returns what `filter` accepts,
/// in partition then offset order; fails rather than return part of it.
pub fn read(
    kafka: &KafkaSettings,
    topic: &str,
    filter: &Filter,
    timeout: Duration,
) -> Result<Vec<StoredDeadLetter>, ReadError> {
    let consumer: BaseConsumer<PartitionEofIsNews> = crate::kafka_client::consumer_config(kafka)
        .set(
            "group.id",
            format!("outflow-dlq-reader-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(PartitionEofIsNews)?;
    let partitions =
        crate::topics::partition_ids(&consumer, topic, timeout).map_err(|e| match e {
            PartitionsError::Kafka(e) => ReadError::Kafka(e),
            PartitionsError::Topic { topic, error } => ReadError::Topic { topic, error },
        })?;
    let mut out = Vec::new();
    if partitions.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut at_end = std::collections::HashSet::new();
    let mut read = 0;
    let deadline = Instant::now() + timeout;
    while at_end.len() < partitions.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                read += 1;
                let headers = super::header::as_text(&m);
                let d = StoredDeadLetter {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                };
                if filter.accepts(&d) {
                    out.push(d);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    drop(consumer);
    if at_end.len() < partitions.len() {
        return Err(ReadError::Incomplete {
            topic: topic.to_string(),
            pending: partitions
                .into_iter()
                .filter(|p| !at_end.contains(p))
                .collect(),
            read,
            waited: timeout,
        });
    }
    out.sort_by_key(|d| (d.partition, d.offset));
    if let Some(limit) = filter.limit {
        out.truncate(limit);
    }
    Ok(out)
}

/// `2h`, `30m`, `45s`, `7d` ago, or milliseconds since the epoch, as milliseconds since the epoch.
pub fn parse_since(text: &str, now_millis: i64) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number.parse().map_err(|_| {
        format!("`{text}`: give a duration like 30m, 2h, 7d, or epoch milliseconds")
    })?;
    let unit_ms = match unit {
        "" => return Ok(n),
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("`{text}`: unknown unit `{other}` (s, m, h, d)")),
    };
    Ok(now_millis - n * unit_ms)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_accepts_durations_and_epochs() {
        assert_eq!(parse_since("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert_eq!(parse_since("1700000000000", 0), Ok(1_700_000_000_000));
        assert!(parse_since("2 weeks", 0).is_err());
    }
}
