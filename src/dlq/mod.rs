//! Dead letters: records that cannot be decoded or handled, with headers that say why and where from.
//!
//! Key and value are the original bytes, so a replay re-produces exactly what failed. Header names
//! follow Kafka's KIP-1034 where it has one, under the `outflow.` prefix.

pub mod read;
pub mod replay;

/// Header names, written once here and read back by `dlq` commands.
pub mod header {
    pub const ERROR_CLASS: &str = "outflow.error.class";
    pub const ERROR_MESSAGE: &str = "outflow.error.message";
    pub const ERROR_STAGE: &str = "outflow.error.stage";
    pub const SOURCE_TOPIC: &str = "outflow.source.topic";
    pub const SOURCE_PARTITION: &str = "outflow.source.partition";
    pub const SOURCE_OFFSET: &str = "outflow.source.offset";
    pub const EVENT_ID: &str = "outflow.event-id";
    pub const ATTEMPTS: &str = "outflow.attempts";
    pub const FAILED_AT: &str = "outflow.failed-at";
    /// Set when the value (and a huge key) was left out of the dead letter, too large to publish:
    /// says where the original record is.
    pub const VALUE_OMITTED: &str = "outflow.value.omitted";

    /// A record's headers as text, into any map (a header without a value reads as empty).
    pub fn as_text<M: FromIterator<(String, String)>>(message: &impl rdkafka::Message) -> M {
        use rdkafka::message::Headers;
        message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_string(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_else(|| std::iter::empty().collect())
    }
}

/// The largest record (key, value and headers) the relay publishes: librdkafka's default
/// `message.max.bytes` (1,000,000) less room for record framing. A bigger record would fail its
/// Kafka transaction on every retry and stall the shard, so stages refuse to emit one (class
/// `too-large`) and a dead letter that big goes out without its value.
pub const MAX_RECORD_BYTES: usize = 1_000_000 - 8 * 1024;

/// Why a record is dead, by class (stable words, used in headers and metric labels).
#[derive(Debug, Clone)]
pub struct Failure {
    /// `wire-format`, `unknown-schema`, `avro-decode`, `schema-mismatch`, `stage-error`,
    /// `entity-id`, `emit-invalid`, `too-large`.
    pub class: &'static str,
    pub message: String,
    /// The stage that failed, or `source` for decode failures.
    pub stage: String,
}

/// Where the failed record came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A dead letter ready for the outbox.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub event_id: String,
    pub headers: Vec<(String, String)>,
    pub class: &'static str,
}

/// The longest error message kept in a header; longer ones are cut (records have a size limit).
const MAX_MESSAGE: usize = 2048;

impl DeadLetter {
    pub fn new(
        dlq_topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        event_id: &str,
        origin: &Origin,
        failure: &Failure,
        failed_at_millis: i64,
    ) -> Self {
        let mut message = failure.message.clone();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let mut headers = vec![
            (header::ERROR_CLASS.to_string(), failure.class.to_string()),
            (header::ERROR_MESSAGE.to_string(), message),
            (header::ERROR_STAGE.to_string(), failure.stage.clone()),
            (header::SOURCE_TOPIC.to_string(), origin.topic.clone()),
            (
                header::SOURCE_PARTITION.to_string(),
                origin.partition.to_string(),
            ),
            (header::SOURCE_OFFSET.to_string(), origin.offset.to_string()),
            (header::EVENT_ID.to_string(), event_id.to_string()),
            (header::ATTEMPTS.to_string(), "1".to_string()),
            (header::FAILED_AT.to_string(), failed_at_millis.to_string()),
        ];
        let size = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        let (key_len, value_len) = (size(&key), size(&value));
        let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let (mut key, mut value) = (key, value);
        if key_len + value_len + header_bytes > MAX_RECORD_BYTES {
            value = None;
            let mut what = format!("the {value_len}-byte value");
            if key_len + header_bytes + 1024 > MAX_RECORD_BYTES {
                key = None;
                what.push_str(&format!(" and the {key_len}-byte key"));
            }
            let omitted = format!(
                "{what} left out (too large for a dead letter); the original is {}[{}]@{}",
                origin.topic, origin.partition, origin.offset
            );
            headers.push((header::VALUE_OMITTED.to_string(), omitted));
        }
        Self {
            topic: dlq_topic.to_string(),
            key,
            value,
            event_id: event_id.to_string(),
            headers,
            class: failure.class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(key: usize, value: usize) -> DeadLetter {
        let origin = Origin {
            topic: "t".into(),
            partition: 2,
            offset: 9,
        };
        let failure = Failure {
            class: "avro-decode",
            message: "bad".into(),
            stage: "source".into(),
        };
        DeadLetter::new(
            "t.dlq",
            Some(vec![b'k'; key]),
            Some(vec![b'v'; value]),
            "e",
            &origin,
            &failure,
            0,
        )
    }

    fn omitted(d: &DeadLetter) -> Option<&str> {
        d.headers
            .iter()
            .find(|(k, _)| k == header::VALUE_OMITTED)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_dead_letter_keeps_its_bytes_unless_too_large_to_publish() {
        let small = letter(3, 1000);
        assert_eq!(small.value.as_ref().map(Vec::len), Some(1000));
        assert_eq!(omitted(&small), None);
        let huge = letter(3, MAX_RECORD_BYTES);
        assert_eq!(huge.value, None);
        assert_eq!(huge.key.as_ref().map(Vec::len), Some(3));
        assert_eq!(
            omitted(&huge),
            Some(
                "the 991808-byte value left out (too large for a dead letter); the original is t[2]@9"
            )
        );
        let huge_key = letter(MAX_RECORD_BYTES, 10);
        assert_eq!((huge_key.key.clone(), huge_key.value.clone()), (None, None));
        assert!(omitted(&huge_key).is_some_and(|m| m.contains("991808-byte key")));
    }
}
