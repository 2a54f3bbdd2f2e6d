//! Every metric outflow exports, defined in one place (`outflow_<noun>_<unit>[_total]`, bounded labels).

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const SOURCE_RECORDS: &str = "outflow_source_records_total";
pub const BATCH_SIZE: &str = "outflow_batch_size";
pub const STORE_TXN_SECONDS: &str = "outflow_store_txn_seconds";
pub const STORE_TXN_RETRIES: &str = "outflow_store_txn_retries_total";
pub const OUTBOX_PENDING: &str = "outflow_outbox_pending";
pub const OUTBOX_OLDEST_AGE: &str = "outflow_outbox_oldest_age_seconds";
pub const RELAY_PUBLISHED: &str = "outflow_relay_published_total";
pub const RELAY_TXN_SECONDS: &str = "outflow_relay_txn_seconds";
pub const RELAY_BATCHES: &str = "outflow_relay_batches_total";
pub const DLQ_RECORDS: &str = "outflow_dlq_records_total";
pub const CONSUMER_LAG: &str = "outflow_consumer_lag";
pub const INGRESS_REQUESTS: &str = "outflow_ingress_requests_total";
pub const SOURCE_RECORD_AGE: &str = "outflow_source_record_age_seconds";
pub const BATCH_PHASE_SECONDS: &str = "outflow_batch_phase_seconds";
pub const CONSUMER_REPLACED: &str = "outflow_consumer_replaced_total";
pub const INGRESS_PRODUCER_RENEWED: &str = "outflow_ingress_producer_renewed_total";
pub const GROUP_UNSETTLED_SECONDS: &str = "outflow_consumer_group_unsettled_seconds";

/// How often recorded histogram samples are folded into their summaries.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder for this process and its upkeep; `None` if one is installed
/// already.
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().ok()?;
    keep_up(handle.clone(), UPKEEP_EVERY);
    Some(handle)
}

/// Folds recorded samples into the summaries every `every`, on a thread of its own. Without it
/// samples pile up in memory until `/metrics` is scraped (16 bytes each, one per source record:
/// ~460 MB an hour at 8,000 events/s with nobody scraping), and the summary keeps only the newest
/// of them: it places a sample by its time, the newest first, and drops those older than the
/// first window it opened, so one scrape after a long gap shows the quantiles of its last few dozen
/// samples.
fn keep_up(handle: PrometheusHandle, every: Duration) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                handle.run_upkeep();
            }
        });
    if let Err(e) = started {
        tracing::warn!("metrics upkeep not started ({e}): summaries may keep only recent samples");
    }
}

/// Records of a source topic by outcome: `processed`, `duplicate`, `skipped`, `dead-letter`.
pub fn source_records(topic: &str, outcome: &'static str, n: usize) {
    counter!(SOURCE_RECORDS, "topic" => topic.to_string(), "outcome" => outcome)
        .increment(n as u64);
}

pub fn batch(records: usize, txn: Duration, retries: u32) {
    histogram!(BATCH_SIZE).record(records as f64);
    histogram!(STORE_TXN_SECONDS).record(txn.as_secs_f64());
    counter!(STORE_TXN_RETRIES).increment(u64::from(retries));
}

/// A dead letter written, by DLQ topic and error class.
pub fn dead_letter(topic: &str, reason: &'static str) {
    counter!(DLQ_RECORDS, "topic" => topic.to_string(), "reason" => reason).increment(1);
}

pub fn relay_published(topic: &str, n: usize) {
    counter!(RELAY_PUBLISHED, "topic" => topic.to_string()).increment(n as u64);
}

/// Where a relay turn found its records: `inbox` (handed over by this process's processor),
/// `store` (read from Mongo) or `none` (a store read that found nothing).
pub fn relay_batch(from: &'static str) {
    counter!(RELAY_BATCHES, "from" => from).increment(1);
}

pub fn relay_txn(elapsed: Duration) {
    histogram!(RELAY_TXN_SECONDS).record(elapsed.as_secs_f64());
}

pub fn outbox(shard: &str, pending: u64, oldest_age: Duration) {
    gauge!(OUTBOX_PENDING, "shard" => shard.to_string()).set(pending as f64);
    gauge!(OUTBOX_OLDEST_AGE, "shard" => shard.to_string()).set(oldest_age.as_secs_f64());
}

/// How old a source record was (from its Kafka timestamp) when its partition worker got it: lag
/// in time, and the first part of end-to-end latency. Producer clocks set CreateTime.
pub fn source_record_age(age_ms: i64) {
    histogram!(SOURCE_RECORD_AGE).record(age_ms.max(0) as f64 / 1000.0);
}

/// Times the phases of a batch one after the other (`phase` label: `collect`, `decode`, `read`,
/// `fold`, `write`, `commit`), so a slow batch says which of its round trips was slow.
pub struct PhaseClock(std::time::Instant);

impl PhaseClock {
    pub fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Records the time since the last lap (or the start) under `phase`.
    pub fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        histogram!(BATCH_PHASE_SECONDS, "phase" => phase).record((now - self.0).as_secs_f64());
        self.0 = now;
    }
}

/// The processor gave up on a consumer whose group did not settle and started a new one.
pub fn consumer_replaced() {
    counter!(CONSUMER_REPLACED).increment(1);
}

/// A send from the ingress timed out, and the sends after it get a new producer.
pub fn ingress_producer_renewed() {
    counter!(INGRESS_PRODUCER_RENEWED).increment(1);
}

/// How long the processor's consumer group has been out of its steady state (0 while steady):
/// all that time this processor may hold no partitions.
pub fn group_unsettled(unsettled: Duration) {
    gauge!(GROUP_UNSETTLED_SECONDS).set(unsettled.as_secs_f64());
}

pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The median of 1..=1000 recorded in ten steps over ~500 ms, scraped once at the end (the
    /// upkeep, every 10 ms, only has to run once between the steps).
    fn median_after_one_scrape(upkeep: bool) -> f64 {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if upkeep {
            keep_up(handle.clone(), Duration::from_millis(10));
        }
        metrics::with_local_recorder(&recorder, || {
            for i in 1..=1000 {
                histogram!("t").record(f64::from(i));
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let text = handle.render();
        text.lines()
            .find_map(|l| l.strip_prefix("t{quantile=\"0.5\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn summaries_hold_every_sample_since_the_start_not_only_the_newest() {
        let median = median_after_one_scrape(true);
        assert!(
            (400.0..=600.0).contains(&median),
            "median of 1..=1000 with upkeep: {median}"
        );
        let unkept = median_after_one_scrape(false);
        assert!(
            unkept > 900.0,
            "without upkeep the summary keeps only the newest samples (this is what the upkeep is for): {unkept}"
        );
    }
}
