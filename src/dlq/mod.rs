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
}

/// Why a record is dead, by class (stable words, used in headers and metric labels).
#[derive(Debug, Clone)]
pub struct Failure {
    /// `wire-format`, `unknown-schema`, `avro-decode`, `schema-mismatch`, `stage-error`,
    /// `entity-id`, `emit-invalid`.
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
        let headers = vec![
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
