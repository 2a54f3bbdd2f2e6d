//! outflow-bench: exactly-once throughput and latency of outflow against the raw Mongo and Kafka
//! ceilings measured in the same run on the same servers; prints a table and writes JSON to
//! `target/bench/results.json`. Run with the local stack up:
//!
//! ```sh
//! eval "$(deploy/local/stack.sh up)"
//! cargo build --release --bins && target/release/outflow-bench --events 200000
//! ```

mod ceilings;
mod e2e;

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks outflow end to end against the raw Mongo and Kafka ceilings")]
struct Args {
    /// Events for the end-to-end run.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Distinct entities the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    entities: usize,
    /// Records per processor batch in the end-to-end run.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Events for the batch-size-1 baseline (one transaction per event).
    #[arg(long, default_value_t = 3_000)]
    baseline_events: usize,
    /// Seconds of steady load for the latency measurement.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Runs outflow on `events` pre-produced events and returns (events/s, exactly-once ok, rss).
async fn end_to_end(
    args: &Args,
    batch: usize,
    events: usize,
) -> anyhow::Result<(f64, bool, (f64, f64, f64))> {
    let bench = e2e::Bench::new(batch, 20).await?;
    bench.produce(0, events, args.entities, None).await?;
    let started = Instant::now();
    let mut child = bench.start()?;
    let rss = e2e::RssSampler::start(child.id());
    let seen = tokio::task::block_in_place(|| {
        e2e::read_output(&bench, events, Duration::from_secs(1800), false)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let rss = rss.finish();
    // any extra record would show up within a few seconds more
    let settle = tokio::task::block_in_place(|| {
        e2e::read_output(&bench, events + 1, Duration::from_secs(5), false)
    })?;
    let _ = child.kill();
    let _ = child.wait();
    let exactly_once = seen.total == events && seen.distinct == events && settle.total == events;
    if !exactly_once {
        eprintln!(
            "EXACTLY-ONCE CHECK FAILED: {} records, {} distinct event ids, {} after settling, expected {events}",
            seen.total, seen.distinct, settle.total
        );
    }
    ceilings::drop_database(&env("OUTFLOW_MONGO_URI", ""), &bench.prefix).await;
    Ok((events as f64 / elapsed, exactly_once, rss))
}

/// Steady load at `rate` events/s: source append → output visible, p50/p95/p99 in ms, and the
/// median batch transaction time. The reader runs while the producer does, so each latency is
/// measured when the record becomes visible.
async fn latency(args: &Args, rate: f64) -> anyhow::Result<(i64, i64, i64, f64)> {
    let bench = std::sync::Arc::new(e2e::Bench::new(args.batch, 20).await?);
    let mut child = bench.start()?;
    tokio::time::sleep(Duration::from_secs(5)).await; // joined, partitions assigned
    let events = (rate * args.latency_seconds as f64) as usize;
    let reading = std::sync::Arc::clone(&bench);
    let reader = tokio::task::spawn_blocking(move || {
        e2e::read_output(&reading, events, Duration::from_secs(300), true)
    });
    bench.produce(0, events, args.entities, Some(rate)).await?;
    let seen = reader.await??;
    let median_txn = bench.median_txn_seconds().await.unwrap_or(0.0);
    let _ = child.kill();
    let _ = child.wait();
    ceilings::drop_database(&env("OUTFLOW_MONGO_URI", ""), &bench.prefix).await;
    let mut l = seen.latencies;
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    Ok((pct(0.50), pct(0.95), pct(0.99), median_txn))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mongo_uri = env(
        "OUTFLOW_MONGO_URI",
        "mongodb://127.0.0.1:28017/?replicaSet=secantus",
    );
    let brokers = env("OUTFLOW_KAFKA_BROKERS", "127.0.0.1:29092");
    eprintln!("raw Mongo ceiling ...");
    let mongo_100 = ceilings::mongo(&mongo_uri, 100, 20_000).await?;
    let mongo_500 = ceilings::mongo(&mongo_uri, 500, 20_000).await?;
    eprintln!("raw Kafka ceiling ...");
    let kafka = ceilings::kafka(&brokers, 100_000, 1_100).await?;
    eprintln!(
        "outflow end to end, {} events, batch {} ...",
        args.events, args.batch
    );
    let (outflow, exactly_once, rss) = end_to_end(&args, args.batch, args.events).await?;
    eprintln!(
        "per-event baseline (batch size 1), {} events ...",
        args.baseline_events
    );
    let (baseline, baseline_ok, _) = end_to_end(&args, 1, args.baseline_events).await?;
    let rate = (outflow / 2.0).max(100.0);
    eprintln!(
        "latency at {rate:.0} events/s for {} s ...",
        args.latency_seconds
    );
    let (p50, p95, p99, median_txn) = latency(&args, rate).await?;

    let ceiling = mongo_500.min(kafka);
    let rows = [
        (
            "raw Mongo ceiling, batch 100",
            format!("{mongo_100:.0} events/s"),
            String::new(),
        ),
        (
            "raw Mongo ceiling, batch 500",
            format!("{mongo_500:.0} events/s"),
            String::new(),
        ),
        (
            "raw Kafka ceiling, 1000/txn",
            format!("{kafka:.0} records/s"),
            String::new(),
        ),
        (
            "outflow end to end",
            format!("{outflow:.0} events/s"),
            format!(
                "{:.2} × min(ceilings) (target ≥ 0.8); exactly once: {exactly_once}",
                outflow / ceiling
            ),
        ),
        (
            "outflow, batch size 1",
            format!("{baseline:.0} events/s"),
            format!(
                "batching gain {:.1}× (target ≥ 10); exactly once: {baseline_ok}",
                outflow / baseline
            ),
        ),
        (
            "latency p50/p95/p99",
            format!("{p50}/{p95}/{p99} ms"),
            format!(
                "at {rate:.0} events/s; median batch txn {:.1} ms; target p99 ≤ {:.0} ms",
                median_txn * 1000.0,
                2.0 * median_txn * 1000.0 + 50.0
            ),
        ),
        (
            "RSS start/peak/end",
            format!("{:.0}/{:.0}/{:.0} MiB", rss.0, rss.1, rss.2),
            format!("through {} events", args.events),
        ),
    ];
    println!("{:<32} {:>22}  note", "measure", "value");
    for (name, value, note) in &rows {
        println!("{name:<32} {value:>22}  {note}");
    }
    let report = json!({
        "events": args.events, "batch": args.batch, "entities": args.entities,
        "mongo_ceiling_100": mongo_100, "mongo_ceiling_500": mongo_500, "kafka_ceiling": kafka,
        "outflow_events_per_s": outflow, "exactly_once": exactly_once, "ratio_to_ceiling": outflow / ceiling,
        "baseline_events_per_s": baseline, "batching_gain": outflow / baseline,
        "latency_ms": { "p50": p50, "p95": p95, "p99": p99, "rate": rate, "median_txn_ms": median_txn * 1000.0 },
        "rss_mib": { "start": rss.0, "peak": rss.1, "end": rss.2 },
    });
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/results.json",
        serde_json::to_string_pretty(&report)?,
    )?;
    if !exactly_once || !baseline_ok {
        anyhow::bail!("the exactly-once check failed: the figures above are not valid");
    }
    Ok(())
}
