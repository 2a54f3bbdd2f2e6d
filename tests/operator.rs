//! The on-call commands against the real stack: dead letters listed, inspected, tailed, replayed once fixed.

mod common;

use std::time::Duration;

use common::{TestTopology, eventually};
use mongodb::bson::doc;
use serde_json::{Value, json};

fn outflow(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `outflow args` with its stdout closed before the first line, as a reader that has gone:
/// the exit code, stderr, and how long it ran.
fn outflow_into_closed_pipe(args: &[&str]) -> (i32, String, Duration) {
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_replayed_once_fixed_and_never_twice() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let path = t.path.to_string_lossy().into_owned();
    let first = t.run(&[]);
    let producer = t.producer();
    let topic = t.topic("quote-events");
    for n in 0..3 {
        let requested = json!({"eventId": format!("r{n}"), "quoteId": format!("dq{n}"), "customerId": "c", "product": "HOME", "coverageAmount": 1.0, "requestedAt": 1});
        producer
            .produce(&topic, Some("QuoteRequested"), &requested, &format!("r{n}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let priced = json!({"eventId": format!("p{n}"), "quoteId": format!("dq{n}"), "premium": -10.0, "validUntil": 1, "pricedAt": 1});
        producer
            .produce(&topic, Some("QuotePriced"), &priced, &format!("p{n}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let last = std::cell::RefCell::new((0, String::new(), String::new()));
    let listed = eventually(Duration::from_secs(60), async || {
        let (code, out, err) = outflow(&["dlq", "list", "--format", "json", "--topology", &path]);
        let three = code == 0
            && serde_json::from_str::<Value>(&out)
                .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 3));
        *last.borrow_mut() = (code, out, err);
        three
    })
    .await;
    let (code, out, err) = last.into_inner();
    assert!(
        listed,
        "three dead letters listed; the last `dlq list` exited {code}:\n{out}\n{err}\nthe processor's log ends:\n{}",
        first.log_tail(40)
    );
    assert!(
        !err.contains(" ERROR "),
        "reaching the end of a partition is no error: {err}"
    );
    let (_, table, _) = outflow(&[
        "dlq",
        "list",
        "--topology",
        &path,
        "--error-class",
        "stage-error",
    ]);
    assert!(
        table.contains("negative premium") && table.contains("3 dead letter(s)"),
        "{table}"
    );
    let (_, none, _) = outflow(&[
        "dlq",
        "list",
        "--topology",
        &path,
        "--error-class",
        "wire-format",
    ]);
    assert!(none.contains("0 dead letter(s)"), "{none}");
    let (code, inspected, err) = outflow(&[
        "dlq",
        "inspect",
        &t.topic("quote-events.dlq"),
        "0:0",
        "--topology",
        &path,
    ]);
    if code == 0 {
        let v: Value = serde_json::from_str(&inspected).unwrap_or_default();
        assert_eq!(v["headers"]["outflow.error.class"], "stage-error");
        assert_eq!(
            v["value"]["premium"], -10.0,
            "the value decoded from Avro: {inspected}"
        );
    } else {
        assert!(
            err.contains("no record at"),
            "partition 0 may hold none of the three: {err}"
        );
    }
    let (code, dry, _) = outflow(&["dlq", "replay", "--dry-run", "--topology", &path]);
    assert_eq!(code, 0);
    assert!(dry.contains("dry run: would send 3"), "{dry}");

    // `outflow tail` prints the same records as JSON lines, decoded, with their headers
    let dlq_topic = t.topic("quote-events.dlq");
    let tail = |extra: &[&str]| {
        let mut args = vec![
            "tail",
            &dlq_topic,
            "--from-beginning",
            "--idle-timeout",
            "20",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--topology", &path]);
        let (code, out, err) = outflow(&args);
        assert_eq!(code, 0, "outflow {args:?}: {err}");
        out.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect::<Vec<_>>()
    };
    let records = tail(&["--limit", "3"]);
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert_eq!(r["topic"], dlq_topic.as_str());
        assert_eq!(r["headers"]["outflow.error.class"], "stage-error", "{r}");
        assert_eq!(
            r["value"]["premium"], -10.0,
            "the value decoded from Avro: {r}"
        );
    }
    let key = records[0]["key"].as_str().unwrap_or_default().to_string();
    let keyed = tail(&["--key", &key, "--limit", "1"]);
    assert!(
        keyed.len() == 1 && keyed[0]["key"] == key.as_str(),
        "{keyed:?}"
    );
    // a reader that goes away (`outflow tail … | head`) ends the output quietly, not in a panic
    for args in [
        vec![
            "tail",
            &dlq_topic,
            "--from-beginning",
            "--idle-timeout",
            "20",
        ],
        vec!["dlq", "list"],
    ] {
        let args = [&args[..], &["--topology", &path]].concat();
        let (code, err, took) = outflow_into_closed_pipe(&args);
        assert_eq!(code, 0, "outflow {args:?} into a closed pipe: {err}");
        assert!(!err.contains("panicked"), "outflow {args:?}: {err}");
        assert!(
            took < Duration::from_secs(15),
            "it stopped at once: {took:?}"
        );
    }
    let missing = t.topic("no-such-topic");
    let (code, _, err) = outflow(&["tail", &missing, "--topology", &path]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&missing) && err.contains("Unknown topic"),
        "{err}"
    );

    // fix the stage: negative premiums are fine after all
    let fixed = std::fs::read_to_string(&t.path)
        .unwrap_or_default()
        .replace(
            "if .event.premium < 0 then error(\"negative premium\") else . end |",
            "",
        );
    std::fs::write(&t.path, fixed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.stop(), Some(0));
    let _second = t.run(&[]);
    let (code, out, err) = outflow(&["dlq", "replay", "--topology", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent 3, already replayed 0"), "{out}");
    let priced = t
        .reaches(
            "quote",
            doc! { "state.status": "PRICED", "version": 2_i64 },
            3,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        priced,
        "the replayed events were processed by the fixed stage"
    );
    assert_eq!(t.count("event_log", doc! {}).await, 6);
    let (code, out, _) = outflow(&["dlq", "replay", "--topology", &path]);
    assert_eq!(code, 0);
    assert!(
        out.contains("sent 0, already replayed 3"),
        "the same replay again sends nothing: {out}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(t.count("event_log", doc! {}).await, 6, "nothing doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_after_a_stage_change_matches_processing_from_scratch() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let path = t.path.to_string_lossy().into_owned();
    let first = t.run(&[]);
    let producer = t.producer();
    let topic = t.topic("quote-events");
    let mut inputs = Vec::new();
    for n in 0..20 {
        let requested = json!({"eventId": format!("rb-r{n}"), "quoteId": format!("rb{n}"), "customerId": "c", "product": "AUTO", "coverageAmount": 1.0, "requestedAt": 1});
        let priced = json!({"eventId": format!("rb-p{n}"), "quoteId": format!("rb{n}"), "premium": 100.0 + n as f64, "validUntil": 1, "pricedAt": 1});
        for (kind, event) in [("QuoteRequested", requested), ("QuotePriced", priced)] {
            let id = event["eventId"].as_str().unwrap_or_default().to_string();
            producer
                .produce(&topic, Some(kind), &event, &id)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            inputs.push((kind, event));
        }
    }
    let done = t
        .reaches(
            "quote",
            doc! { "version": 2_i64 },
            20,
            Duration::from_secs(60),
        )
        .await;
    assert!(done, "processed");
    assert_eq!(first.stop(), Some(0));

    // the stage changes: priced quotes now carry the insurance tax
    let changed = std::fs::read_to_string(&t.path)
        .unwrap_or_default()
        .replace(
            "{ status: \"PRICED\", premium: .event.premium,",
            "{ status: \"PRICED\", premium: .event.premium, tax: (.event.premium * 0.19),",
        );
    std::fs::write(&t.path, &changed).unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = outflow(&["rebuild", "quote", "--dry-run", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("20 entities from 40 events; would change 20, unchanged 0"),
        "{out}"
    );
    assert_eq!(
        t.count("quote", doc! { "state.tax": { "$exists": true } })
            .await,
        0,
        "a dry run writes nothing"
    );
    let (code, out, err) = outflow(&["rebuild", "quote", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("changed 20, unchanged 0, skipped (changed meanwhile) 0, rejected events 0"),
        "{out}"
    );

    // the same events from scratch, in memory, through the changed topology
    let mut scratch =
        outflow::testkit::TopologyTestDriver::new(&t.path).unwrap_or_else(|e| panic!("{e}"));
    for (kind, event) in &inputs {
        scratch
            .pipe(&topic, Some(kind), event)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let db = t.db().await;
    for n in 0..20 {
        let id = format!("rb{n}");
        let expected = scratch
            .entity("quote", &id)
            .unwrap_or_else(|| panic!("no {id} in memory"));
        let stored = db
            .collection::<mongodb::bson::Document>("quote")
            .find_one(doc! { "_id": &id })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let state = stored
            .get("state")
            .cloned()
            .map(|b| b.into_relaxed_extjson())
            .unwrap_or_default();
        assert_eq!(state, expected.state, "{id}");
        assert_eq!(
            stored.get_i64("version").ok(),
            Some(expected.version),
            "{id}"
        );
    }
    let (_, again, _) = outflow(&["rebuild", "quote", &path]);
    assert!(
        again.contains("changed 0, unchanged 20"),
        "a second rebuild finds nothing to do: {again}"
    );

    // with --emit, each changed entity also publishes what its last event emits now
    let taxed = std::fs::read_to_string(&t.path)
        .unwrap_or_default()
        .replace(
            "tax: (.event.premium * 0.19)",
            "tax: (.event.premium * 0.2)",
        );
    std::fs::write(&t.path, &taxed).unwrap_or_else(|e| panic!("{e}"));
    let _running = t.run(&[]);
    let (code, out, err) = outflow(&["rebuild", "quote", "--emit", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("changed 20") && out.contains("emitted 20"),
        "{out}"
    );
    let updates = common::read_committed(
        &t.topic("entity-updates"),
        3,
        60,
        Duration::from_secs(60),
        Duration::from_secs(3),
    );
    assert_eq!(updates.len(), 60, "40 from processing, 20 corrections");
    let pricing = updates
        .iter()
        .filter(|r| {
            r.headers
                .get("outflow.event-id")
                .is_some_and(|e| e.starts_with("rb-p"))
        })
        .count();
    assert_eq!(
        pricing, 40,
        "each quote's last event (the pricing) published by processing and once more by the rebuild"
    );
}
