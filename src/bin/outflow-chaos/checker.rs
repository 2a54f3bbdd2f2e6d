//! The checker: source topic, event log, entity versions and output topic compared after the run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use outflow::config::Topology;
use outflow::schema::codec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::traffic::{Shape, event_number};

/// One decoded output record.
pub struct Update {
    pub key: String,
    pub event_id: String,
    pub version: i64,
    pub seq: i64,
}

/// Decodes a `ChaosUpdated` (or the `eventId`, `key` and `seq` of a `ChaosEvent`) from framed bytes.
pub fn decode_update(schema: &Schema, bytes: &[u8]) -> Option<Update> {
    let (id, body) = codec::split_frame(bytes).ok()?;
    let Ok(Value::Record(fields)) = codec::decode(id, schema, schema, body) else {
        return None;
    };
    let text = |name: &str| {
        fields.iter().find_map(|(k, v)| match v {
            Value::String(s) if k == name => Some(s.clone()),
            _ => None,
        })
    };
    let long = |name: &str| {
        fields.iter().find_map(|(k, v)| match v {
            Value::Long(l) if k == name => Some(*l),
            _ => None,
        })
    };
    Some(Update {
        key: text("key")?,
        event_id: text("eventId")?,
        version: long("version").unwrap_or(0),
        seq: long("seq")?,
    })
}

/// Every record of `topic` read_committed, in (partition, offset) order: (partition, value).
fn read_topic(
    topology: &Topology,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<(i32, Option<Vec<u8>>)>> {
    let consumer: BaseConsumer = outflow::kafka_client::consumer_config(&topology.kafka)
        .set(
            "group.id",
            format!("chaos-checker-{}", uuid::Uuid::now_v7()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    drop(assignment);
    let mut by_partition: BTreeMap<i32, Vec<Option<Vec<u8>>>> = BTreeMap::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while at_end.len() < partitions as usize {
        if Instant::now() > deadline {
            anyhow::bail!("{topic}: the end of every partition was not reached within 180 s");
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                by_partition
                    .entry(m.partition())
                    .or_default()
                    .push(m.payload().map(<[u8]>::to_vec));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("chaos: reading {topic}: {e}"),
            None => {}
        }
    }
    drop(consumer);
    Ok(by_partition
        .into_iter()
        .flat_map(|(p, values)| values.into_iter().map(move |v| (p, v)))
        .collect())
}

/// What the checker found; any lost, duplicated or out-of-order event fails the run.
#[derive(Debug, Default)]
pub struct Report {
    pub produced: usize,
    pub source_records: usize,
    pub source_distinct: usize,
    pub event_log: usize,
    pub event_log_missing: usize,
    pub entities: usize,
    pub entities_wrong: usize,
    pub output_records: usize,
    pub output_distinct: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub dead_letters: usize,
    pub examples: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.event_log_missing == 0
            && self.entities_wrong == 0
            && self.source_distinct == self.produced
    }

    pub fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("events produced", self.produced.to_string()),
            (
                "source topic records (distinct ids)",
                format!("{} ({})", self.source_records, self.source_distinct),
            ),
            (
                "event log documents (missing)",
                format!("{} ({})", self.event_log, self.event_log_missing),
            ),
            (
                "entities (wrong version/count)",
                format!("{} ({})", self.entities, self.entities_wrong),
            ),
            (
                "output records (distinct ids)",
                format!("{} ({})", self.output_records, self.output_distinct),
            ),
            ("lost", self.lost.to_string()),
            ("duplicated", self.duplicated.to_string()),
            ("out of order per key", self.out_of_order.to_string()),
            ("dead letters", self.dead_letters.to_string()),
        ]
    }
}

/// Compares the four places an event leaves a trace in.
pub async fn check(
    topology: &Topology,
    prefix: &str,
    shape: Shape,
    produced: usize,
) -> anyhow::Result<Report> {
    let mut report = Report {
        produced,
        ..Report::default()
    };
    let source = &topology.sources[0];
    let output = &topology.topics[0];
    let (topology_c, source_topic, partitions) =
        (topology.clone(), source.topic.clone(), source.partitions);
    let source_records =
        tokio::task::spawn_blocking(move || read_topic(&topology_c, &source_topic, partitions))
            .await??;
    let source_schema = &source.schemas[0].schema;
    let mut source_ids = HashSet::new();
    for (_, value) in &source_records {
        let n = value
            .as_deref()
            .and_then(|v| decode_update(source_schema, v))
            .and_then(|u| event_number(prefix, &u.event_id));
        source_ids.extend(n);
    }
    report.source_records = source_records.len();
    report.source_distinct = source_ids.len();

    let db = mongodb::Client::with_uri_str(&topology.mongo.uri)
        .await?
        .database(&topology.mongo.database);
    let mut logged = HashSet::new();
    let mut cursor = db
        .collection::<Document>("event_log")
        .find(doc! {})
        .projection(doc! { "_id": 1 })
        .await?;
    while let Some(d) = cursor.try_next().await? {
        report.event_log += 1;
        logged.extend(
            d.get_str("_id")
                .ok()
                .and_then(|id| event_number(prefix, id)),
        );
    }
    report.event_log_missing = source_ids.difference(&logged).count();

    let mut expected: HashMap<String, i64> = HashMap::new();
    for &n in &source_ids {
        *expected.entry(shape.key(n)).or_default() += 1;
    }
    let mut cursor = db
        .collection::<Document>(&topology.entities[0].collection)
        .find(doc! {})
        .await?;
    while let Some(d) = cursor.try_next().await? {
        report.entities += 1;
        let key = d.get_str("_id").unwrap_or_default();
        let want = expected.get(key).copied().unwrap_or(0);
        let version = d.get_i64("version").unwrap_or(-1);
        let count = d
            .get_document("state")
            .ok()
            .and_then(|s| s.get("count"))
            .and_then(|c| c.as_i64().or_else(|| c.as_i32().map(i64::from)))
            .unwrap_or(-1);
        if version != want || count != want {
            report.entities_wrong += 1;
            if report.examples.len() < 5 {
                report.examples.push(format!(
                    "entity {key}: version {version}, count {count}, expected {want}"
                ));
            }
        }
    }
    report.entities_wrong += expected.len().saturating_sub(report.entities);

    let (topology_c, output_topic, partitions) =
        (topology.clone(), output.name.clone(), output.partitions);
    let outputs =
        tokio::task::spawn_blocking(move || read_topic(&topology_c, &output_topic, partitions))
            .await??;
    let output_schema = &output.schema.schema;
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    let mut disordered = HashSet::new();
    for (_, value) in &outputs {
        report.output_records += 1;
        let Some(u) = value
            .as_deref()
            .and_then(|v| decode_update(output_schema, v))
        else {
            report
                .examples
                .push("an output record does not decode".into());
            continue;
        };
        let fresh = event_number(prefix, &u.event_id).is_some_and(|n| seen.insert(n));
        if !fresh {
            continue; // a duplicate is counted once, as a duplicate, not also as disorder
        }
        // per key the output must carry seq 1, 2, 3... in that order, each as the next version
        let previous = last_seq.insert(u.key.clone(), u.seq).unwrap_or(0);
        if (u.seq <= previous || u.version != u.seq)
            && disordered.insert(u.key.clone())
            && report.examples.len() < 5
        {
            report.examples.push(format!(
                "key {}: seq {} (version {}) after seq {previous}",
                u.key, u.seq, u.version
            ));
        }
    }
    report.output_distinct = seen.len();
    report.lost = source_ids.difference(&seen).count();
    report.duplicated = report.output_records - report.output_distinct;
    report.out_of_order = disordered.len();

    let (topology_c, dlq, partitions) = (
        topology.clone(),
        source.dlq_topic.clone(),
        source.partitions,
    );
    report.dead_letters =
        tokio::task::spawn_blocking(move || read_topic(&topology_c, &dlq, partitions))
            .await??
            .len();
    Ok(report)
}
