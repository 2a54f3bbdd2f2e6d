//! The printed result of a run: the fault table and the checker's table.

use std::time::Duration;

use crate::checker::Report;
use crate::faults::Fault;

/// One row of the fault table.
pub struct Recovery {
    pub fault: Fault,
    pub target: String,
    pub outage: Duration,
    /// From the start of the fault until events acknowledged 1 s after that start are visible on
    /// every partition: how long the pipeline stalled (a takeover shows here, even during a pause).
    pub stalled: Option<Duration>,
    /// From the end of the fault until events acknowledged 1 s after it are visible on every partition.
    pub recovered: Option<Duration>,
    /// False when the stream had ended before the fault was over: the times are then times to drain.
    pub with_traffic: bool,
}

/// Lines in the processors' logs where a commit hit the epoch fence.
pub fn fenced_zombies(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("processor-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| text.lines().filter(|l| l.contains("fenced")).count())
        .sum()
}

/// How the run ended, besides the fault table and the checker's report.
pub struct Ending {
    /// Lines where a zombie's commit hit the epoch fence ([`fenced_zombies`]).
    pub fenced: usize,
    /// Processes that exited unexpectedly and were restarted, with why.
    pub restarts: Vec<String>,
    /// Processes that did not stop cleanly at the end.
    pub unclean: Vec<String>,
    /// Whether the output caught up with the input after the last fault.
    pub drained: bool,
    pub seed: u64,
}

/// Prints the tables, what else the run saw, and the verdict line; whether the run passed.
pub fn print_verdict(recoveries: &[Recovery], report: &Report, end: &Ending) -> bool {
    print_tables(recoveries, report);
    let listed = |items: &[String]| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(" | ")
        }
    };
    println!("zombie commits fenced (log lines): {}", end.fenced);
    println!(
        "unexpected exits (restarted by the harness): {}",
        listed(&end.restarts)
    );
    println!("unclean shutdowns at the end: {}", listed(&end.unclean));
    for e in &report.examples {
        println!("example: {e}");
    }
    let recovered = recoveries.iter().filter(|r| r.recovered.is_some()).count();
    let passed = report.passed() && recovered == recoveries.len() && end.drained;
    println!(
        "chaos: {} — {} lost, {} duplicated, {} out of order, {} of {} faults recovered (seed {})",
        if passed { "PASS" } else { "FAIL" },
        report.lost,
        report.duplicated,
        report.out_of_order,
        recovered,
        recoveries.len(),
        end.seed
    );
    passed
}

fn print_tables(recoveries: &[Recovery], report: &Report) {
    println!();
    println!(
        "{:<28} {:<20} {:>8} {:>9} {:>14}",
        "fault", "target", "outage", "stalled", "recovered in"
    );
    let secs = |d: Option<Duration>, mark: &str| {
        d.map_or("NOT RECOVERED".to_string(), |d| {
            format!("{:.1} s{mark}", d.as_secs_f64())
        })
    };
    for r in recoveries {
        let mark = if r.with_traffic { "" } else { "*" };
        println!(
            "{:<28} {:<20} {:>6.1} s {:>9} {:>14}",
            r.fault.label(),
            r.target,
            r.outage.as_secs_f64(),
            secs(r.stalled, mark),
            secs(r.recovered, mark)
        );
    }
    println!(
        "(stalled: from the start of the fault until events acknowledged 1 s after that start"
    );
    println!(
        " are visible read_committed on every partition, so a takeover shows here; recovered in:"
    );
    println!(" the same from the end of the fault; * = the stream had ended: times to drain)");
    println!();
    println!("{:<38} {:>16}", "check", "value");
    for (name, value) in report.rows() {
        println!("{name:<38} {value:>16}");
    }
}
