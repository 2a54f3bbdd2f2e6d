//! The latency run: a steady producer at a rate, source append → output visible per record.

use std::sync::Arc;
use std::time::Duration;

use crate::process::Running;
use crate::table::Latency;
use crate::{Args, cpu, e2e};

/// The `p` quantile of `values` (-1 when empty).
pub fn quantile(values: &mut [i64], p: f64) -> i64 {
    values.sort_unstable();
    values
        .get(((values.len() as f64 * p) as usize).min(values.len().saturating_sub(1)))
        .copied()
        .unwrap_or(-1)
}

/// Steady load at `rate` events/s: source append → output visible, p50/p95/p99 in ms, and the
/// median batch transaction time. The reader runs while the producer does, so each latency is
/// measured when the record becomes visible.
pub async fn run(args: &Args, knobs: e2e::Knobs, rate: f64) -> anyhow::Result<Latency> {
    let bench = Arc::new(e2e::Bench::new(&knobs).await?);
    let outflow = bench.start()?;
    let measured = measure(args, &bench, &outflow, rate).await;
    outflow.stop();
    bench.remove().await;
    measured
}

/// The latency run proper, on a started outflow; the caller stops it and cleans up.
async fn measure(
    args: &Args,
    bench: &Arc<e2e::Bench>,
    outflow: &Arc<Running>,
    rate: f64,
) -> anyhow::Result<Latency> {
    tokio::time::sleep(Duration::from_secs(5)).await; // joined, partitions assigned
    // a warm-up at the same rate first (the first records meet cold caches, a first fetch of the
    // schema, the relay's first transactions): only records appended after it are measured
    let events = (rate * (args.warmup_seconds + args.latency_seconds) as f64) as usize;
    let measure_from = outflow::source::decode::chrono_millis() + args.warmup_seconds as i64 * 1000;
    let (reading, watched) = (Arc::clone(bench), Arc::clone(outflow));
    let reader = tokio::task::spawn_blocking(move || {
        e2e::read_output(
            &reading,
            events,
            Duration::from_secs(300),
            Some(measure_from),
            (&watched, None),
        )
    });
    // CPU over the measured part of the load: the machine, outflow, and the bench itself
    let pids = [outflow.pid, std::process::id()];
    let warmup = Duration::from_secs(args.warmup_seconds);
    let cpu_from = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        cpu::mark(&pids)
    });
    tokio::select! {
        produced = bench.produce(0, events, args.entities, Some(rate)) => produced?,
        gone = outflow.exited() => anyhow::bail!("{gone}"),
    }
    let cpu = match cpu_from.await {
        Ok(Some(from)) => cpu::since(&from, &pids),
        _ => None,
    };
    let mut seen = reader.await??;
    anyhow::ensure!(
        !seen.latencies.is_empty(),
        "no record appended after the warm-up came out within 300 s; see {}",
        outflow.log.display()
    );
    let median_txn = bench.txn_seconds("0.5").await.unwrap_or(0.0);
    let p99_txn = bench.txn_seconds("0.99").await.unwrap_or(0.0);
    let mut relay_txn = [0.0; 2];
    for (q, slot) in ["0.5", "0.99"].iter().zip(relay_txn.iter_mut()) {
        *slot = bench
            .summary(outflow::metrics::RELAY_TXN_SECONDS, q)
            .await
            .unwrap_or(-1.0);
    }
    let p99_received = bench
        .summary("outflow_source_record_age_seconds", "0.99")
        .await
        .unwrap_or(-1.0);
    let order = [
        "collect", "slot", "decode", "read", "fold", "write", "commit",
    ];
    let mut phases = [Vec::new(), Vec::new()];
    for (q, slot) in ["0.5", "0.99"].iter().zip(phases.iter_mut()) {
        *slot = bench
            .summaries("outflow_batch_phase_seconds", "phase", q)
            .await;
        slot.sort_by_key(|(phase, _)| order.iter().position(|o| o == phase));
    }
    let relay_batches = bench
        .counters(outflow::metrics::RELAY_BATCHES, "from")
        .await;
    write_timeline(bench, &seen)?;
    let l = &mut seen.latencies;
    Ok(Latency {
        p50: quantile(l, 0.50),
        p95: quantile(l, 0.95),
        p99: quantile(l, 0.99),
        median_txn,
        p99_txn,
        relay_txn,
        p99_to_relay: quantile(&mut seen.to_relay, 0.99),
        p99_after_relay: quantile(&mut seen.after_relay, 0.99),
        p99_to_batch: quantile(&mut seen.to_batch, 0.99),
        p99_received,
        phases,
        relay_batches,
        cpu,
    })
}

/// Writes `latency.csv` next to the run's topology: when each measured record became visible
/// (ms since the epoch, to line up with logs) and its latency: a tail spread over the run or a
/// few stalls.
fn write_timeline(bench: &e2e::Bench, seen: &e2e::Seen) -> anyhow::Result<()> {
    let mut csv = String::from("visible_at_ms,latency_ms\n");
    for (at, latency) in seen.seen_at.iter().zip(&seen.latencies) {
        csv.push_str(&format!("{at},{latency}\n"));
    }
    let path = bench.path.with_file_name("latency.csv");
    std::fs::write(&path, csv)?;
    eprintln!("latency timeline: {}", path.display());
    Ok(())
}
