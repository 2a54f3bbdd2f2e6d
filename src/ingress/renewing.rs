//! The ingress producer, replaced by a fresh one when a send times out.

use std::sync::{Arc, RwLock};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::kafka_client::retire_producer;

/// A producer that a timed-out send replaces.
///
/// A send that times out can mean a partition this producer will never deliver to again:
/// librdkafka 2.12 (its issue #5430) can keep a partition without a leader after a broker
/// restart, when the broker answered "no leader" while it shut down, and every later send to that
/// partition times out too. Seen in CI: a producer kept across a broker restart delivered nothing
/// for two minutes, while the relay's producers, rebuilt after their first timeout, went on.
/// A new producer starts from fresh metadata.
pub struct RenewingProducer {
    config: ClientConfig,
    current: RwLock<Arc<FutureProducer>>,
}

impl RenewingProducer {
    pub fn new(config: ClientConfig) -> Result<Self, KafkaError> {
        let producer = Arc::new(config.create()?);
        Ok(Self {
            config,
            current: RwLock::new(producer),
        })
    }

    /// The producer to send with now.
    pub fn current(&self) -> Arc<FutureProducer> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// After a send with `used` failed with `error`: replaces `used` if the send timed out, once
    /// however many sends saw it time out.
    pub fn after_failure(&self, used: &Arc<FutureProducer>, error: &KafkaError) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::MessageTimedOut)
            || !Arc::ptr_eq(&self.current(), used)
        {
            return;
        }
        let fresh = match self.config.create() {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::warn!("a send timed out, and no new producer could be made: {e}");
                return;
            }
        };
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !Arc::ptr_eq(&current, used) {
            // another timed-out send replaced it first
            retire_producer(fresh);
            return;
        }
        retire_producer(std::mem::replace(&mut *current, fresh));
        drop(current);
        tracing::warn!(
            "a send timed out: producing with a new Kafka producer from now on (the old one may \
             hold a partition without a leader after a broker restart)"
        );
        crate::metrics::ingress_producer_renewed();
    }
}
