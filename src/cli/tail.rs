//! `outflow tail`: records of a topic as JSON lines (Avro decoded through the registry), with headers.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::config;
use crate::schema::display::value_as_json;
use crate::schema::registry::Registry;
use crate::topics::{PartitionsError, partition_ids};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topic to read (any topic: sources, outputs, dead letters).
    topic: String,
    /// Start at the beginning instead of the end.
    #[arg(long)]
    from_beginning: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// Stop after this long without a new record (default: follow forever).
    #[arg(long, value_parser = humantime_secs)]
    idle_timeout: Option<Duration>,
    /// The topology file (for the brokers and the registry).
    #[arg(long, default_value = "topology.toml", env = "OUTFLOW_TOPOLOGY")]
    topology: std::path::PathBuf,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let hint = "give seconds, e.g. 5 or 2.5s";
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("`{s}`: {e} ({hint})"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}`: not a duration ({hint})"))
}

pub async fn run(args: Args) -> anyhow::Result<u8> {
    let topology = match config::load(&args.topology) {
        Ok(l) => l.topology,
        Err(e) => return Ok(super::config_failure(&e)),
    };
    crate::kafka_auth::check(&topology.kafka, Duration::from_secs(30)).await?;
    let registry = Registry::new(&topology.registry.url, Duration::from_secs(10))?;
    let consumer: BaseConsumer = crate::kafka_client::consumer_config(&topology.kafka)
        .set("group.id", format!("outflow-tail-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let brokers = &topology.kafka.brokers;
    let partitions = match partition_ids(&consumer, &args.topic, Duration::from_secs(10)) {
        Ok(ids) if ids.is_empty() => {
            anyhow::bail!("topic `{}` has no partitions on {brokers}", args.topic)
        }
        Ok(ids) => ids,
        Err(PartitionsError::Topic { error, .. }) => {
            anyhow::bail!("topic `{}` on {brokers}: {error}", args.topic)
        }
        Err(e) => return Err(e.into()),
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions
        .into_iter()
        .filter(|p| args.partition.is_none_or(|only| only == *p))
    {
        tpl.add_partition_offset(
            &args.topic,
            p,
            if args.from_beginning {
                Offset::Beginning
            } else {
                Offset::End
            },
        )?;
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut printed = 0;
    let mut last_seen = Instant::now();
    while args.limit.is_none_or(|l| printed < l) {
        if args.idle_timeout.is_some_and(|t| last_seen.elapsed() > t) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message?;
        last_seen = Instant::now();
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
        if args.key.is_some() && key != args.key {
            continue;
        }
        let headers: serde_json::Map<String, Value> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            json!(h.value.map(|v| String::from_utf8_lossy(v).into_owned())),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let value = match m.payload() {
            None => Value::Null,
            Some(bytes) => value_as_json(&registry, bytes).await,
        };
        let line = json!({ "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
            "timestamp": m.timestamp().to_millis(), "key": key, "headers": headers, "value": value });
        if !say!("{line}")? {
            break; // the reader has gone (`outflow tail … | head`)
        }
        printed += 1;
    }
    Ok(super::exit::OK)
}
