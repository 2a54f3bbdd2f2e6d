//! `outflow dlq list|inspect|replay`: what failed, why, and sending it back once fixed.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::config::{self, Topology};
use crate::dlq::header;
use crate::dlq::read::{self, Filter, StoredDeadLetter};
use crate::dlq::replay::{Outcome, Replayer};
use crate::schema::display::value_as_json;
use crate::schema::registry::Registry;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A table of dead letters: coordinates, time, class, message and where they came from.
    #[command(
        after_help = "Examples:\n  outflow dlq list\n  outflow dlq list --since 2h --error-class stage-error --format json"
    )]
    List(ListArgs),
    /// One dead letter: all headers, and the value decoded to JSON where possible (hex otherwise).
    #[command(after_help = "Example:\n  outflow dlq inspect quote-events.dlq 0:42")]
    Inspect(InspectArgs),
    /// Send dead letters back to their source topic (or --to), once each; resumable after Ctrl-C.
    #[command(
        after_help = "Examples:\n  outflow dlq replay --error-class stage-error --dry-run\n  outflow dlq replay --source-topic quote-events --rate 100"
    )]
    Replay(ReplayArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only this dead-letter topic (default: every DLQ topic of the topology).
    #[arg(long)]
    topic: Option<String>,
    /// Only dead letters that failed since then: 30m, 2h, 7d, or epoch milliseconds.
    #[arg(long)]
    since: Option<String>,
    /// Only this error class (wire-format, unknown-schema, avro-decode, schema-mismatch, stage-error, entity-id, emit-invalid).
    #[arg(long)]
    error_class: Option<String>,
    /// Only dead letters from this source topic.
    #[arg(long)]
    source_topic: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// The topology file.
    #[arg(long, default_value = "topology.toml", env = "OUTFLOW_TOPOLOGY")]
    topology: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The dead-letter topic.
    topic: String,
    /// `partition:offset` of the record.
    at: String,
    #[arg(long, default_value = "topology.toml", env = "OUTFLOW_TOPOLOGY")]
    topology: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Send to this topic instead of each record's source topic.
    #[arg(long)]
    to: Option<String>,
    /// Show what would be sent; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// At most this many records per second.
    #[arg(long, value_parser = records_per_second)]
    rate: Option<f64>,
}

fn records_per_second(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if rate > 0.0 && Duration::try_from_secs_f64(1.0 / rate).is_ok() {
        Ok(rate)
    } else {
        Err(format!(
            "`{s}`: give a number of records per second above 0, e.g. 100 or 0.5"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

fn load(path: &std::path::Path) -> Result<Topology, u8> {
    config::load(path)
        .map(|l| l.topology)
        .map_err(|e| super::config_failure(&e))
}

fn collect(t: &Topology, f: &FilterArgs) -> anyhow::Result<Vec<StoredDeadLetter>> {
    let now = crate::source::decode::chrono_millis();
    let since = f
        .since
        .as_deref()
        .map(|s| read::parse_since(s, now))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let filter = Filter {
        since,
        error_class: f.error_class.clone(),
        source_topic: f.source_topic.clone(),
        limit: None,
    };
    let topics: Vec<String> = match &f.topic {
        Some(t) => vec![t.clone()],
        None => {
            let mut all: Vec<String> = t.sources.iter().map(|s| s.dlq_topic.clone()).collect();
            all.dedup();
            all
        }
    };
    crate::kafka_auth::check_blocking(&t.kafka, Duration::from_secs(30))?;
    let mut out = Vec::new();
    for topic in topics {
        out.extend(read::read(
            &t.kafka,
            &topic,
            &filter,
            Duration::from_secs(30),
        )?);
    }
    if let Some(limit) = f.limit {
        out.truncate(limit);
    }
    Ok(out)
}

pub async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::List(args) => list(args),
        Command::Inspect(args) => inspect(args).await,
        Command::Replay(args) => replay(args).await,
    }
}

fn list(args: ListArgs) -> anyhow::Result<u8> {
    let t = match load(&args.filter.topology) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let letters = collect(&t, &args.filter)?;
    if args.format == Format::Json {
        say!("{}", serde_json::to_string_pretty(&letters)?)?;
        return Ok(super::exit::OK);
    }
    say!(
        "{:<28} {:<24} {:<16} {:<28} MESSAGE",
        "DEAD LETTER",
        "FAILED AT",
        "CLASS",
        "SOURCE"
    )?;
    for d in &letters {
        let failed = mongodb::bson::DateTime::from_millis(d.failed_at())
            .try_to_rfc3339_string()
            .unwrap_or_default();
        let source = format!(
            "{}:{}:{}",
            d.header(header::SOURCE_TOPIC),
            d.header(header::SOURCE_PARTITION),
            d.header(header::SOURCE_OFFSET)
        );
        let message: String = d.header(header::ERROR_MESSAGE).chars().take(100).collect();
        let printed = say!(
            "{:<28} {:<24} {:<16} {:<28} {}",
            d.coordinates(),
            failed,
            d.header(header::ERROR_CLASS),
            source,
            message
        )?;
        if !printed {
            return Ok(super::exit::OK); // the reader has gone (`outflow dlq list | head`)
        }
    }
    say!("{} dead letter(s)", letters.len())?;
    Ok(super::exit::OK)
}

async fn inspect(args: InspectArgs) -> anyhow::Result<u8> {
    let t = match load(&args.topology) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let Some((partition, offset)) = args
        .at
        .split_once(':')
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
    else {
        eprintln!("error: `{}` is not partition:offset (e.g. 0:42)", args.at);
        return Ok(super::exit::USAGE);
    };
    crate::kafka_auth::check(&t.kafka, Duration::from_secs(30)).await?;
    let all = read::read(
        &t.kafka,
        &args.topic,
        &Filter::default(),
        Duration::from_secs(30),
    )?;
    let Some(d) = all
        .into_iter()
        .find(|d| d.partition == partition && d.offset == offset)
    else {
        eprintln!("error: no record at {}:{partition}:{offset}", args.topic);
        return Ok(super::exit::FAILURE);
    };
    let registry = Registry::new(&t.registry.url, Duration::from_secs(10))?;
    let value = match &d.value {
        Some(bytes) => value_as_json(&registry, bytes).await,
        None => serde_json::Value::Null,
    };
    let key = d
        .key
        .as_deref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    say!(
        "{}",
        serde_json::to_string_pretty(
            &json!({ "topic": d.topic, "partition": d.partition, "offset": d.offset, "key": key, "headers": d.headers, "value": value })
        )?
    )?;
    Ok(super::exit::OK)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<u8> {
    let t = match load(&args.filter.topology) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let letters = collect(&t, &args.filter)?;
    let store = Store::connect(&t.mongo.uri, &t.mongo.database).await?;
    let replayer = Replayer::new(&t.kafka, store, args.to.clone(), args.dry_run)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        indicatif::ProgressBar::new(letters.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} dead letters  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let pause = args
        .rate
        .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok());
    let (mut sent, mut skipped, mut would, mut unsendable) = (0usize, 0usize, 0usize, 0usize);
    for (i, d) in letters.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            bar.abandon();
            eprintln!(
                "interrupted after {i} of {}: run the same command again to resume",
                letters.len()
            );
            say!("sent {sent}, already replayed {skipped}")?;
            return Ok(super::exit::FAILURE);
        }
        match replayer.replay(d).await? {
            Outcome::Sent { to } => {
                sent += 1;
                if !tty {
                    eprintln!(
                        "replayed {} → {to} ({}/{})",
                        d.coordinates(),
                        i + 1,
                        letters.len()
                    );
                }
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
            Outcome::AlreadyReplayed => skipped += 1,
            Outcome::ValueOmitted { why } => {
                unsendable += 1;
                eprintln!(
                    "not replayed {}: its value was not kept ({why}); produce the fixed record again",
                    d.coordinates()
                );
            }
            Outcome::WouldSend { to } => {
                would += 1;
                say!(
                    "would replay {} → {to} ({}: {})",
                    d.coordinates(),
                    d.header(header::ERROR_CLASS),
                    d.header(header::ERROR_MESSAGE)
                )?;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.dry_run {
        say!(
            "dry run: would send {would}, already replayed {skipped}, without a value {unsendable}"
        )?;
    } else {
        say!("sent {sent}, already replayed {skipped}, without a value {unsendable}")?;
    }
    // not everything asked for can go back: say so to the script that ran the replay
    if unsendable > 0 {
        return Ok(super::exit::FAILURE);
    }
    Ok(super::exit::OK)
}
