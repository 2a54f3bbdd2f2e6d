//! Consumer-group helpers: plain members that hold a rebalance open, and what the processor says.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::TestTopology;

/// A plain member of the topology's group, subscribed to its sources. librdkafka serves a
/// rebalance to the application on a poll, so while nobody polls it every rebalance of the group
/// waits for it, up to its `max.poll.interval.ms`.
pub fn member(t: &TestTopology) -> BaseConsumer {
    let member: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", super::env("OUTFLOW_KAFKA_BROKERS"))
        .set("group.id", &t.topology.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("max.poll.interval.ms", "300000")
        .set("session.timeout.ms", "30000")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let topics = [t.topic("quote-events"), t.topic("enrollment-events")];
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    member
        .subscribe(&topics)
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    member
}

/// A member that polls until it holds partitions (all of them, when it is the first) and then
/// stops polling: it holds every later rebalance of the group, so nobody else's membership can
/// settle meanwhile.
pub fn member_that_stops_polling(t: &TestTopology) -> BaseConsumer {
    let member = member(t);
    let deadline = Instant::now() + Duration::from_secs(60);
    while member.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the blocking member got no partitions"
        );
        let _ = member.poll(Duration::from_millis(100));
    }
    member
}

/// The members leave the group. Closing a consumer can block in librdkafka, so it happens off the
/// runtime and is waited for 30 s at most.
pub async fn leave(members: Vec<BaseConsumer>) {
    let left = tokio::task::spawn_blocking(move || drop(members));
    let _ = tokio::time::timeout(Duration::from_secs(30), left).await;
}

/// The processor's `/metrics` page, if it answers.
pub async fn metrics_text(base: &str) -> Option<String> {
    reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The processor's `outflow_consumer_group_unsettled_seconds`, once it is exported.
pub async fn unsettled_seconds(base: &str) -> Option<f64> {
    metrics_text(base)
        .await?
        .lines()
        .find_map(|line| line.strip_prefix("outflow_consumer_group_unsettled_seconds "))
        .and_then(|value| value.trim().parse().ok())
}

/// `/readyz` as the processor answers it: the status code and its `processor` check's words.
pub async fn readiness(base: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("{base}/readyz")).await.ok()?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.ok()?;
    let words = body["checks"]["processor"].as_str()?.to_string();
    Some((status, words))
}
