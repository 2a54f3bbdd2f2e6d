//! Resident memory of the outflow process, sampled every second against its progress.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Samples a process's resident memory every second, with how many output records were seen then.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(usize, u64)>>>,
}

/// What the sampler saw, in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub start: f64,
    pub peak: f64,
    pub end: f64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl RssSampler {
    /// Samples `pid` until `finish`; `progress` is read at each sample (output records seen).
    pub fn start(pid: u32, progress: Arc<AtomicUsize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (Arc::clone(&stop), Arc::clone(&samples));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // the first sample is taken a second in, once the process is up
                std::thread::sleep(Duration::from_secs(1));
                let now = rss_kib(pid);
                if now > 0
                    && let Ok(mut v) = v.lock()
                {
                    v.push((progress.load(Ordering::Relaxed), now));
                }
            }
        });
        Self { stop, samples }
    }

    /// Stops sampling: start, peak and last RSS.
    pub fn finish(&self) -> Rss {
        self.stop.store(true, Ordering::Relaxed);
        let v = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        Rss {
            start: v.first().map_or(0.0, |s| mib(s.1)),
            peak: mib(v.iter().map(|s| s.1).max().unwrap_or(0)),
            end: v.last().map_or(0.0, |s| mib(s.1)),
        }
    }

    /// The RSS (MiB) of the first sample taken once `records` output records were seen.
    pub fn at(&self, records: usize) -> Option<f64> {
        let v = self.samples.lock().ok()?;
        v.iter().find(|s| s.0 >= records).map(|s| mib(s.1))
    }

    /// The highest RSS (MiB) sampled once `records` output records were seen.
    pub fn peak_after(&self, records: usize) -> Option<f64> {
        let v = self.samples.lock().ok()?;
        v.iter()
            .filter(|s| s.0 >= records)
            .map(|s| s.1)
            .max()
            .map(mib)
    }
}
