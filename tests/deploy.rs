//! The deploy files: linted with real tools, and every metric the dashboard and the alerts use is
//! exported by a running outflow after demo traffic (so no panel is ever empty).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestTopology, eventually};
use mongodb::bson::doc;
use rdkafka::message::OwnedHeaders;
use serde_json::json;

/// Every `outflow_*` metric name a file refers to (summary quantiles share the base name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("outflow_") {
        let start = i + at;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase() || **b == b'_')
                .count();
        names.insert(text[start..end].to_string());
        i = end;
    }
    names
}

#[test]
fn deploy_files_pass_their_linters() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/lint-deploy.sh");
    let out = std::process::Command::new(script)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("deploy lint: 0 problem(s)")
            && text.contains("passed for resource deployment/outflow-processor"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut wanted = metric_names(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/outflow.json")).unwrap_or_default(),
    );
    wanted.extend(metric_names(
        &std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yml"))
            .unwrap_or_default(),
    ));
    assert!(wanted.len() >= 10, "{wanted:?}");

    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let _outflow = t.run(&[]);
    let base = t.http_base();
    common::wait_ready(&base).await;
    // demo traffic: an ingress request, events, and a poison record
    let client = reqwest::Client::new();
    let quote = json!({"quoteId": "m1", "customerId": "c", "product": "AUTO", "coverageAmount": 1.0, "requestedAt": 1});
    let posted = client
        .post(format!("{base}/quotes"))
        .header("content-type", "application/json")
        .body(quote.to_string())
        .send()
        .await;
    assert!(posted.is_ok_and(|r| r.status() == 202));
    common::produce_quotes(&t, 0..50).await;
    t.producer()
        .produce_raw(
            &t.topic("quote-events"),
            Some(b"m-poison"),
            b"not avro",
            OwnedHeaders::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let processed = t
        .reaches("event_log", doc! {}, 201, Duration::from_secs(60))
        .await;
    assert!(processed, "demo traffic processed");
    let exported = eventually(Duration::from_secs(30), async || {
        let text = reqwest::get(format!("{base}/metrics")).await.ok();
        let text = match text {
            Some(r) => r.text().await.unwrap_or_default(),
            None => return false,
        };
        wanted.iter().all(|m| text.contains(m.as_str()))
    })
    .await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !text.contains(m.as_str()))
        .collect();
    assert!(
        exported,
        "metrics used by the dashboard or the alerts but not exported: {missing:?}\n{text}"
    );
}
