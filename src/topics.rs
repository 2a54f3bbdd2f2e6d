//! Creates the Kafka topics a topology needs (sources, outputs, dead letters, relay checkpoints).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication, TopicResult,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::{KafkaSettings, Topology};

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
    #[error("cannot read the partitions of topic `{topic}`: {reason}")]
    Metadata { topic: String, reason: String },
    /// The relay publishes one outbox shard per configured partition: a partition past them
    /// would be processed and never published.
    #[error(
        "source `{source_name}`: topic `{topic}` has {actual} partition(s) on the brokers but \
         `partitions = {configured}`; set it to {actual} (Kafka never removes partitions)"
    )]
    Partitions {
        source_name: String,
        topic: String,
        configured: i32,
        actual: i32,
    },
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
    // a relay reads its shard's partition from the start when it takes the shard over: short
    // segments let compaction keep that to about one record per shard (the active segment is
    // never compacted, and the default one rolls after 1 GiB or 7 days)
    add(TopicSpec::new(&topology.relay.checkpoint_topic, shards)
        .with("cleanup.policy", "compact")
        .with("segment.ms", "600000"));
    topics
}

/// Creates what is missing; existing topics are left as they are, but a source topic whose
/// partitions differ from its `partitions` setting is refused (see [`TopicError::Partitions`]).
pub async fn ensure(topology: &Topology, replication: i32) -> Result<(), TopicError> {
    // outflow's first contact with Kafka at start-up: a wrong password ends here, clearly
    let existing = crate::kafka_auth::check(&topology.kafka, CONNECT_TIMEOUT).await?;
    if let Some(mismatch) = partition_mismatches(topology, &existing).into_iter().next() {
        return Err(mismatch);
    }
    let admin: AdminClient<DefaultClientContext> =
        crate::kafka_client::admin_config(&topology.kafka)
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
    refusal(results, RDKafkaErrorCode::TopicAlreadyExists)
}

/// The first topic an admin call refused, with a code other than `harmless` (the one a concurrent
/// process causes by getting there first).
fn refusal(results: Vec<TopicResult>, harmless: RDKafkaErrorCode) -> Result<(), TopicError> {
    match results
        .into_iter()
        .find_map(|r| r.err().filter(|(_, code)| *code != harmless))
    {
        Some((topic, code)) => Err(TopicError::Create {
            topic,
            reason: code.to_string(),
        }),
        None => Ok(()),
    }
}

/// The sources whose topic exists with another partition count than their `partitions` setting;
/// `existing` is topic → partition count, as [`crate::kafka_auth::check`] lists them.
pub fn partition_mismatches(
    topology: &Topology,
    existing: &BTreeMap<String, usize>,
) -> Vec<TopicError> {
    topology
        .sources
        .iter()
        .filter_map(|source| {
            let actual = i32::try_from(*existing.get(&source.topic)?).unwrap_or(i32::MAX);
            (actual != source.partitions).then(|| TopicError::Partitions {
                source_name: source.name.clone(),
                topic: source.topic.clone(),
                configured: source.partitions,
                actual,
            })
        })
        .collect()
}

/// How many partitions `topic` has on the brokers (a metadata call, off the runtime: it blocks).
async fn count_partitions(kafka: &KafkaSettings, topic: &str) -> Result<i32, TopicError> {
    let failed = |reason: String| TopicError::Metadata {
        topic: topic.to_string(),
        reason,
    };
    let (settings, name) = (kafka.clone(), topic.to_string());
    let ids = tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer =
            crate::kafka_client::consumer_config(&settings)
                .create()
                .map_err(|e| e.to_string())?;
        partition_ids(&consumer, &name, Duration::from_secs(30)).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(failed)?;
    Ok(i32::try_from(ids.len()).unwrap_or(i32::MAX))
}

/// Adds partitions to `topic` until it has `partitions` (Kafka never takes any away).
pub async fn grow(kafka: &KafkaSettings, topic: &str, partitions: i32) -> Result<(), TopicError> {
    let have = count_partitions(kafka, topic).await?;
    if have >= partitions {
        return Ok(());
    }
    tracing::info!(topic, from = have, to = partitions, "adding partitions");
    let admin: AdminClient<DefaultClientContext> = crate::kafka_client::admin_config(kafka)
        .create()
        .map_err(|e| TopicError::Admin(e.to_string()))?;
    let wanted = NewPartitions::new(topic, usize::try_from(partitions).unwrap_or(0));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_partitions([&wanted], &options)
        .await
        .map_err(|e| TopicError::Admin(e.to_string()))?;
    // InvalidPartitions: another process grew it first
    refusal(results, RDKafkaErrorCode::InvalidPartitions)
}
