//! A schema registry that stops answering mid-stream (its process paused, as in a long GC pause or
//! a network partition): a record whose schema id the processor has not seen waits for it, is not
//! dead-lettered, and is processed once the registry answers again.

mod common;

use std::time::Duration;

use common::TestTopology;
use mongodb::bson::doc;
use outflow::schema::codec;
use outflow::schema::json::json_to_avro;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Sends SIGSTOP to the local registry, and SIGCONT when dropped, whatever the test did meanwhile:
/// a registry left paused would fail every later test.
struct Paused(String);

impl Paused {
    fn registry() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/registry/registry-local.sh"
        );
        let out = std::process::Command::new(script)
            .arg("pid")
            .output()
            .unwrap_or_else(|e| panic!("registry-local.sh pid: {e}"));
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(pid.parse::<u32>().is_ok(), "registry pid: `{pid}`");
        Self::signal(&pid, "STOP");
        Self(pid)
    }

    fn signal(pid: &str, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        Self::signal(&self.0, "CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_waits_for_a_paused_registry_and_is_processed_once_it_answers() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let outflow = t.run(&[]);
    common::wait_ready(&t.http_base()).await;

    // a new version of QuoteRequested (one optional field more): an id the processor never saw
    let source = &t.topology.sources[0];
    let requested = source
        .schemas
        .iter()
        .find(|s| s.full_name.ends_with("QuoteRequested"))
        .unwrap_or_else(|| panic!("no QuoteRequested"));
    let mut text: serde_json::Value =
        serde_json::from_str(&requested.text).unwrap_or_else(|e| panic!("{e}"));
    if let Some(fields) = text["fields"].as_array_mut() {
        fields.push(json!({"name": "note", "type": ["null", "string"], "default": null}));
    }
    let registry = common::env("OUTFLOW_REGISTRY_URL");
    let subject = source.subject_for(requested);
    let registered: serde_json::Value = reqwest::Client::new()
        .post(format!("{registry}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({ "schema": text.to_string() }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = registered["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or_else(|| panic!("registered: {registered}"));
    let schema =
        apache_avro::Schema::parse_str(&text.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let event = json!({"eventId": "paused-1", "quoteId": "paused-q", "customerId": "c1",
        "product": "HOME", "coverageAmount": 10.0, "currency": "EUR", "requestedAt": 1, "note": "hi"});
    let avro = json_to_avro(&event, &schema).unwrap_or_else(|e| panic!("{e:?}"));
    let value = codec::encode(id, &schema, avro).unwrap_or_else(|e| panic!("{e}"));

    let paused = Paused::registry();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::env("OUTFLOW_KAFKA_BROKERS"))
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    producer
        .send(
            FutureRecord::to(&t.topic("quote-events"))
                .key("paused-q")
                .payload(&value),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("{e}"));
    let waited = outflow.logged("retrying in", Duration::from_secs(60)).await;
    assert!(
        waited,
        "the processor never said it waits for the registry:\n{}",
        outflow.log_tail(30)
    );
    assert_eq!(
        t.count("event_log", doc! {}).await,
        0,
        "nothing processed while paused"
    );
    drop(paused);

    let processed = t
        .reaches(
            "quote",
            doc! { "_id": "paused-q", "version": 1_i64 },
            1,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        processed,
        "the record was not processed once the registry answered (dead-lettered?):\n{}",
        outflow.log_tail(30)
    );
    assert!(
        !outflow.log_text().contains("unknown-schema"),
        "{}",
        outflow.log_tail(30)
    );
    assert_eq!(outflow.stop(), Some(0));
}
