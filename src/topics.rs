//! Creates the Kafka topics a topology needs (sources, outputs, dead letters, relay checkpoints).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::Topology;

/// Why the topics could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The brokers did not answer, or refused the credentials.
    #[error(transparent)]
    Kafka(#[from] crate::kafka_auth::KafkaCheckError),
    #[error("cannot create topics: {0}")]
    Admin(String),
    #[error("cannot create topic `{topic}`: {reason}")]
    Create { topic: String, reason: String },
}

/// How long start-up waits for the brokers before giving up (a refused login fails at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// (name, partitions, compacted) of every topic the topology reads or writes.
pub fn wanted(topology: &Topology) -> Vec<(String, i32, bool)> {
    let mut topics: Vec<(String, i32, bool)> = Vec::new();
    let mut add = |name: &str, partitions: i32, compacted: bool| {
        if !topics.iter().any(|(n, _, _)| n == name) {
            topics.push((name.to_string(), partitions, compacted));
        }
    };
    for s in &topology.sources {
        add(&s.topic, s.partitions, false);
        add(&s.dlq_topic, s.partitions, false);
    }
    for t in &topology.topics {
        add(&t.name, t.partitions, false);
    }
    let shards = crate::relay::shards(topology).len().max(1) as i32;
    add(&topology.relay.checkpoint_topic, shards, true);
    topics
}

/// Creates what is missing; existing topics are left as they are.
pub async fn ensure(topology: &Topology, replication: i32) -> Result<(), TopicError> {
    // outflow's first contact with Kafka at start-up: a wrong password ends here, clearly
    crate::kafka_auth::check(&topology.kafka, CONNECT_TIMEOUT).await?;
    let admin: AdminClient<DefaultClientContext> = crate::health::kafka_config(&topology.kafka)
        .create()
        .map_err(|e| TopicError::Admin(e.to_string()))?;
    let wanted = wanted(topology);
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, partitions, compacted)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(replication));
            if *compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(|e| TopicError::Admin(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
