//! Creates the Kafka topics a topology needs (sources, outputs, dead letters, relay checkpoints).

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

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

/// Why a topic's partitions could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionsError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The brokers answered with an error for the topic: unknown, not authorised.
    #[error("`{topic}`: {error}")]
    Topic { topic: String, error: String },
}

/// The partition ids of `topic` from the brokers' metadata (empty for a topic with none).
pub fn partition_ids<X: ConsumerContext + ClientContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, PartitionsError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    if let Some(error) = metadata.topics().iter().find_map(|t| t.error()) {
        return Err(PartitionsError::Topic {
            topic: topic.to_string(),
            error: RDKafkaErrorCode::from(error).to_string(),
        });
    }
    Ok(metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// How long start-up waits for the brokers before giving up (a refused login fails at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A topic to create: its name, partitions and topic-level configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(&'static str, &'static str)>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            configs: Vec::new(),
        }
    }

    /// The same topic with one more topic-level config.
    pub fn with(mut self, key: &'static str, value: &'static str) -> Self {
        self.configs.push((key, value));
        self
    }
}

/// Every topic the topology reads or writes, each once.
pub fn wanted(topology: &Topology) -> Vec<TopicSpec> {
    let mut topics: Vec<TopicSpec> = Vec::new();
    let mut add = |spec: TopicSpec| {
        if !topics.iter().any(|t| t.name == spec.name) {
            topics.push(spec);
        }
    };
    for s in &topology.sources {
        add(TopicSpec::new(&s.topic, s.partitions));
        add(TopicSpec::new(&s.dlq_topic, s.partitions));
    }
    for t in &topology.topics {
        add(TopicSpec::new(&t.name, t.partitions));
    }
    let shards = crate::relay::shards(topology).len().max(1) as i32;
    add(TopicSpec::new(&topology.relay.checkpoint_topic, shards).with("cleanup.policy", "compact"));
    topics
}

/// Creates what is missing; existing topics are left as they are.
pub async fn ensure(topology: &Topology, replication: i32) -> Result<(), TopicError> {
    // outflow's first contact with Kafka at start-up: a wrong password ends here, clearly
    crate::kafka_auth::check(&topology.kafka, CONNECT_TIMEOUT).await?;
    let admin: AdminClient<DefaultClientContext> = crate::health::kafka_config(&topology.kafka)
        .create()
        .map_err(|e| TopicError::Admin(e.to_string()))?;
    create(&admin, &wanted(topology), replication).await
}

/// Creates each of `specs` that does not exist yet; an existing topic is left as it is.
pub async fn create(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<(), TopicError> {
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.configs.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(replication),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
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
