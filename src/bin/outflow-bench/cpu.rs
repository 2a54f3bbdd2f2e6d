//! CPU use over a window, read from `/proc`: this machine's busy cores and given processes' shares.
//!
//! The pipeline's servers share the machine's cores with outflow and the bench; a latency run
//! whose cores are nearly all busy queues for them, and its p99 says more about that queue than
//! about outflow. The figure goes next to the latency, so every run carries its own explanation.

use std::time::Instant;

/// Clock ticks per second of `/proc`'s CPU times (USER_HZ: 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// A starting point: the machine's and each process's CPU ticks so far.
pub struct Mark {
    at: Instant,
    /// Busy and total ticks of all cores together (the `cpu` line of `/proc/stat`).
    machine: (u64, u64),
    processes: Vec<Option<u64>>,
}

/// CPU use between a [`Mark`] and now, in cores.
#[derive(Debug, Clone)]
pub struct Usage {
    pub cores: usize,
    /// Cores busy on the whole machine, on average.
    pub busy: f64,
    /// Each process's cores, in the order given (`None`: it could not be read).
    pub processes: Vec<Option<f64>>,
}

/// Busy and total ticks of the machine; `None` without `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let total: u64 = ticks.iter().take(8).sum();
    Some((total - idle, total))
}

/// A process's user + system ticks so far.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces and parentheses: fields are counted after its last `)`
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Marks now for the machine and `pids`; `None` where there is no `/proc`.
pub fn mark(pids: &[u32]) -> Option<Mark> {
    Some(Mark {
        at: Instant::now(),
        machine: machine_ticks()?,
        processes: pids.iter().map(|p| process_ticks(*p)).collect(),
    })
}

/// What the machine and the same `pids` used since `from`.
pub fn since(from: &Mark, pids: &[u32]) -> Option<Usage> {
    let (busy, total) = machine_ticks()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (busy, total) = (busy - from.machine.0, total - from.machine.1);
    let seconds = from.at.elapsed().as_secs_f64();
    let processes = pids
        .iter()
        .zip(&from.processes)
        .map(|(pid, before)| {
            let used = process_ticks(*pid)?.checked_sub((*before)?)?;
            Some(used as f64 / TICKS_PER_SECOND / seconds)
        })
        .collect();
    Some(Usage {
        cores,
        busy: if total == 0 {
            0.0
        } else {
            cores as f64 * busy as f64 / total as f64
        },
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_spins_shows_about_a_core() {
        let me = std::process::id();
        let Some(start) = mark(&[me]) else {
            return; // no /proc here
        };
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = since(&start, &[me]).unwrap_or_else(|| panic!("/proc went away"));
        let mine = used.processes[0].unwrap_or(-1.0);
        assert!((0.5..=1.5).contains(&mine), "{used:?}");
        assert!(
            used.busy >= 0.5 && used.busy <= used.cores as f64 + 0.01,
            "{used:?}"
        );
    }
}
