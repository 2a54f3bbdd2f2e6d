//! `outflow produce`: JSON lines on stdin → Avro events on a source topic (for demos, tests, scripts).

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use crate::config;
use crate::ingress::EventProducer;
use crate::schema::registry::Registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The source topic to produce to.
    topic: String,
    /// The record type (schema name) of every line; needed when the topic carries several.
    #[arg(long = "type")]
    record_type: Option<String>,
    /// Send each line as it is (raw bytes, no schema, no check): for testing dead-letter handling.
    #[arg(long, conflicts_with = "record_type")]
    raw: bool,
    /// The Kafka key of raw lines.
    #[arg(long, requires = "raw")]
    key: Option<String>,
    /// The topology file.
    #[arg(long, default_value = "topology.toml", env = "OUTFLOW_TOPOLOGY")]
    topology: std::path::PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<u8> {
    let loaded = match config::load(&args.topology) {
        Ok(l) => l,
        Err(e) => return Ok(super::config_failure(&e)),
    };
    let topology = Arc::new(loaded.topology);
    crate::kafka_auth::check(&topology.kafka, Duration::from_secs(30)).await?;
    let registry = Arc::new(Registry::new(
        &topology.registry.url,
        Duration::from_secs(10),
    )?);
    let producer = EventProducer::new(Arc::clone(&topology), registry, Duration::from_secs(30))?;
    let source = topology.source_for_topic(&args.topic).cloned();
    let mut failed = 0;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if args.raw {
            let headers = rdkafka::message::OwnedHeaders::new();
            match producer
                .produce_raw(
                    &args.topic,
                    args.key.as_deref().map(str::as_bytes),
                    line.as_bytes(),
                    headers,
                )
                .await
            {
                Ok((partition, offset)) => {
                    say!(
                        "{}",
                        serde_json::json!({"topic": args.topic, "partition": partition, "offset": offset})
                    )?;
                }
                Err(e) => {
                    eprintln!("stdin:{}: {e}", n + 1);
                    failed += 1;
                }
            }
            continue;
        }
        let event: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("stdin:{}: not JSON: {e}", n + 1);
                failed += 1;
                continue;
            }
        };
        let event_id = source
            .as_ref()
            .and_then(|s| s.event_id_field.as_ref())
            .and_then(|f| event.get(f))
            .and_then(|v| v.as_str())
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
        match producer
            .produce(&args.topic, args.record_type.as_deref(), &event, &event_id)
            .await
        {
            Ok(p) => {
                say!("{}", serde_json::to_string(&p)?)?;
            }
            Err(e) => {
                eprintln!("stdin:{}: {e}", n + 1);
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 {
        super::exit::FAILURE
    } else {
        super::exit::OK
    })
}
