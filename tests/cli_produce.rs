//! `outflow produce` against the real stack: JSON lines in, Avro events on the topic and one
//! acknowledgement per event out; a bad line is named by its line number and the others still go;
//! a reader of the acknowledgements that has gone (`| head -1`) stops none of the events.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestTopology, read_committed};
use serde_json::{Value, json};

/// Runs `outflow produce <args>` with `lines` on stdin: exit code, stdout, stderr. With
/// `reader_gone` its stdout is a pipe closed before it writes its first acknowledgement.
fn produce(
    t: &TestTopology,
    args: &[&str],
    lines: &[String],
    reader_gone: bool,
) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .arg("produce")
        .args(args)
        .arg("--topology")
        .arg(&t.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if reader_gone {
        drop(child.stdout.take());
    }
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    stdin
        .write_all(lines.join("\n").as_bytes())
        .unwrap_or_else(|e| panic!("stdin: {e}"));
    drop(stdin);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn quote_requested(id: &str) -> Value {
    json!({"eventId": format!("{id}-r"), "quoteId": id, "customerId": "c1", "product": "HOME",
           "coverageAmount": 250000.0, "requestedAt": 1_700_000_000_000_i64})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_sends_every_good_line_names_the_bad_ones_and_ignores_a_reader_that_has_gone() {
    let t = TestTopology::edited("pipeline.toml", &[]);
    t.prepare().await;
    let topic = t.topic("quote-events");
    let mut missing_product = quote_requested("q3");
    if let Some(fields) = missing_product.as_object_mut() {
        fields.remove("product");
    }
    let lines = [
        quote_requested("q1").to_string(),
        "{\"eventId\": ".to_string(),
        missing_product.to_string(),
        String::new(),
        quote_requested("q5").to_string(),
    ];
    let (code, out, err) = produce(&t, &[&topic, "--type", "QuoteRequested"], &lines, false);
    assert_eq!(code, 1, "a bad line fails the command; stderr: {err}");
    assert!(err.contains("stdin:2: not JSON"), "{err}");
    let line3 = err.lines().find(|l| l.starts_with("stdin:3:"));
    assert!(
        line3.is_some_and(|l| l.contains("product")),
        "line 3 is named with its missing field: {err}"
    );
    let acks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let ids: Vec<&str> = acks.iter().filter_map(|a| a["eventId"].as_str()).collect();
    assert_eq!(
        ids,
        ["q1-r", "q5-r"],
        "one acknowledgement per event sent: {out}"
    );
    assert!(
        acks.iter()
            .all(|a| a["offset"].as_i64().is_some() && a["topic"] == topic)
    );

    // `outflow produce … | head -0`: every line still goes, and it still ends well
    let more: Vec<String> = (10..20)
        .map(|n| quote_requested(&format!("q{n}")).to_string())
        .collect();
    let (code, _, err) = produce(&t, &[&topic, "--type", "QuoteRequested"], &more, true);
    assert_eq!(code, 0, "with its reader gone: {err}");
    assert!(!err.contains("panicked"), "{err}");

    let records = read_committed(
        &topic,
        3,
        12,
        Duration::from_secs(30),
        Duration::from_secs(2),
    );
    let mut sent: Vec<String> = records
        .iter()
        .filter_map(|r| r.headers.get(outflow::dlq::header::EVENT_ID).cloned())
        .collect();
    sent.sort();
    let mut expected: Vec<String> = ["q1", "q5"]
        .into_iter()
        .map(String::from)
        .chain((10..20).map(|n| format!("q{n}")))
        .map(|q| format!("{q}-r"))
        .collect();
    expected.sort();
    assert_eq!(sent, expected, "the topic holds every good line once");
}
