//! The one place where Kafka producer and transaction errors are sorted into what to do next.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What the relay does after a Kafka error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Try the same call again (after a pause).
    Retry,
    /// Abort the transaction and publish the batch again in a new one.
    AbortAndRetry,
    /// The producer is unusable: build a new one (init_transactions fences any zombie).
    Reinit,
    /// A newer producer owns this shard: stop publishing it.
    Fenced,
}

/// Sorts `error` by librdkafka's own transaction-error flags, falling back on the error code.
pub fn classify(error: &KafkaError) -> Recovery {
    if let KafkaError::Transaction(e) = error {
        if e.code() == RDKafkaErrorCode::Fenced || e.code() == RDKafkaErrorCode::ProducerFenced {
            return Recovery::Fenced;
        }
        if e.is_fatal() {
            return Recovery::Reinit;
        }
        if e.txn_requires_abort() {
            return Recovery::AbortAndRetry;
        }
        if e.is_retriable() {
            return Recovery::Retry;
        }
        return Recovery::AbortAndRetry;
    }
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch,
        ) => Recovery::Fenced,
        // not delivered in time: this producer's view of the cluster may be stale (seen after a
        // broker restart), and a new one starts from fresh metadata and connections
        Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::MessageTimedOut) => Recovery::Reinit,
        _ => Recovery::AbortAndRetry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_not_delivered_in_time_rebuilds_the_producer() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(classify(&timed_out), Recovery::Reinit);
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch);
        assert_eq!(classify(&fenced), Recovery::Fenced);
        let other = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&other), Recovery::AbortAndRetry);
    }
}
