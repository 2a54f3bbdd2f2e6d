//! The bench's printed table: one row per measure, with its target's verdict where it has one.

/// measure, value, note (with the target), and whether the target was met (`None`: no target).
pub type Row = (String, String, String, Option<bool>);

/// What the latency run measured, in ms (and the median batch transaction in seconds).
pub struct Latency {
    pub p50: i64,
    pub p95: i64,
    pub p99: i64,
    pub median_txn: f64,
    pub p99_txn: f64,
    /// p99 of source append → relay send, and of relay send → visible.
    pub p99_to_relay: i64,
    pub p99_after_relay: i64,
    pub p99_to_batch: i64,
    /// p99 of source append → the partition worker got the record (from the processor).
    pub p99_received: f64,
    /// Median and p99 of the relay's Kafka transactions (`outflow_relay_txn_seconds`), seconds.
    pub relay_txn: [f64; 2],
    /// p50 and p99 of each phase of a batch (`outflow_batch_phase_seconds`), in the order
    /// they run: the medians say where a typical batch's time goes, the p99s where the tail's.
    pub phases: [Vec<(String, f64)>; 2],
    /// The relay's turns by where it found its records (`outflow_relay_batches_total`).
    pub relay_batches: Vec<(String, f64)>,
    /// CPU while the latency was measured: the machine, then outflow and the bench.
    pub cpu: Option<crate::cpu::Usage>,
}

impl Latency {
    /// The target: p99 ≤ 2 × the median batch transaction + 50 ms.
    pub fn p99_target(&self) -> f64 {
        two_transactions_and_50_ms(self.median_txn)
    }

    /// The same bound with the transaction's p99 in place of its median: a p99 within it spends
    /// no more than two slow transactions and 50 ms, so a miss lies in the transactions' tail.
    pub fn p99_bound_at_txn_p99(&self) -> f64 {
        two_transactions_and_50_ms(self.p99_txn)
    }
}

/// 2 × a batch transaction of `txn_seconds` + 50 ms, in ms.
fn two_transactions_and_50_ms(txn_seconds: f64) -> f64 {
    2.0 * txn_seconds * 1000.0 + 50.0
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

/// Prints the table: measure, value, note (with the target), and MET/MISSED where there is one.
pub fn print_table(rows: &[Row]) {
    println!("{:<30} {:>22}  {:<7} note", "measure", "value", "target");
    for (name, value, note, met) in rows {
        let v = met.map_or("", verdict);
        println!("{name:<30} {value:>22}  {v:<7} {note}");
    }
}

/// The memory row: RSS at `mark` events against the RSS at the end of `events`.
pub fn memory_row(mark_events: usize, events: usize, ok: bool, m: [f64; 4]) -> Row {
    let [mark, after, end, rate] = m;
    (
        format!("RSS at {}k / {}k events", mark_events / 1000, events / 1000),
        format!("{mark:.0}/{end:.0} MiB"),
        format!(
            "end ≤ 1.2 × RSS at {}k ({:.0} MiB); peak after it {after:.0} MiB; {rate:.0} events/s; exactly once: {ok}",
            mark_events / 1000,
            1.2 * mark
        ),
        Some(ok && mark > 0.0 && end <= 1.2 * mark),
    )
}

/// The latency row (target from the run's own median batch transaction) and the phases row.
pub fn latency_rows(lat: &Latency, rate: f64) -> Vec<Row> {
    let (p50, p95, p99) = (lat.p50, lat.p95, lat.p99);
    let p99_target = lat.p99_target();
    let mut rows = Vec::new();
    rows.push((
        "latency p50/p95/p99".into(),
        format!("{p50}/{p95}/{p99} ms"),
        format!(
            "at {rate:.0} events/s; batch txn median {:.1} ms, p99 {:.1} ms; target p99 ≤ \
             {p99_target:.0} ms ({:.0} ms with the txn p99 for its median); p99 split: append → \
             worker got it {:.0} ms, → batch built {} ms, → relay send {} ms, relay send → \
             visible {} ms; relay Kafka txn median {:.0} ms, p99 {:.0} ms",
            lat.median_txn * 1000.0,
            lat.p99_txn * 1000.0,
            lat.p99_bound_at_txn_p99(),
            lat.p99_received * 1000.0,
            lat.p99_to_batch,
            lat.p99_to_relay,
            lat.p99_after_relay,
            lat.relay_txn[0] * 1000.0,
            lat.relay_txn[1] * 1000.0
        ),
        Some(p99 >= 0 && (p99 as f64) <= p99_target),
    ));
    let ms = |phases: &[(String, f64)]| {
        phases
            .iter()
            .map(|(_, v)| format!("{:.0}", v * 1000.0))
            .collect::<Vec<_>>()
            .join("/")
    };
    rows.push((
        "batch phases p50, p99".into(),
        format!("{}, {} ms", ms(&lat.phases[0]), ms(&lat.phases[1])),
        lat.phases[1]
            .iter()
            .map(|(phase, _)| phase.as_str())
            .collect::<Vec<_>>()
            .join("/")
            + " (outflow_batch_phase_seconds, the latency run)",
        None,
    ));
    rows.push((
        "relay batches".into(),
        lat.relay_batches
            .iter()
            .map(|(from, n)| format!("{from} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        "where the relay found them: handed over in process, read from Mongo, or a Mongo read \
         that found nothing (outflow_relay_batches_total, the latency run)"
            .into(),
        None,
    ));
    if let Some(cpu) = &lat.cpu {
        rows.push(cpu_row(cpu));
    }
    rows
}

/// The machine's busy cores while the latency was measured, and who took them.
fn cpu_row(cpu: &crate::cpu::Usage) -> Row {
    let share = |i: usize| cpu.processes.get(i).copied().flatten().unwrap_or(0.0);
    let (outflow, bench) = (share(0), share(1));
    let busy = cpu.busy / cpu.cores.max(1) as f64;
    // past three quarters busy, waits for a core show in the tail (README, Why p99 misses)
    let queueing = if busy >= 0.75 {
        format!(
            "; {:.0}% busy: records queue for a core, and p99 shows that queue",
            busy * 100.0
        )
    } else {
        String::new()
    };
    (
        "cores busy while measured".into(),
        format!("{:.2} of {}", cpu.busy, cpu.cores),
        format!(
            "outflow {outflow:.2}, the bench {bench:.2}, the rest {:.2} (the servers, when on this \
             machine){queueing}",
            (cpu.busy - outflow - bench).max(0.0)
        ),
        None,
    )
}
