//! The in-memory driver on the demo topology: no servers, same stages, same Avro checks.

use outflow::testkit::TopologyTestDriver;
use serde_json::json;

fn driver() -> TopologyTestDriver {
    TopologyTestDriver::new("topology.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_quote_is_requested_then_priced() {
    let mut d = driver();
    let requested = json!({"eventId": "e1", "quoteId": "q1", "customerId": "c1", "product": "AUTO", "coverageAmount": 5000.0, "requestedAt": 1});
    let priced =
        json!({"eventId": "e2", "quoteId": "q1", "premium": 99.5, "validUntil": 2, "pricedAt": 2});
    d.pipe("quote-events", Some("QuoteRequested"), &requested)
        .unwrap_or_else(|e| panic!("{e}"));
    d.pipe("quote-events", Some("QuotePriced"), &priced)
        .unwrap_or_else(|e| panic!("{e}"));
    let quote = d
        .entity("quote", "q1")
        .unwrap_or_else(|| panic!("no quote q1"));
    assert_eq!(quote.version, 2);
    assert_eq!(quote.state["status"], "PRICED");
    assert_eq!(quote.state["premium"], 99.5);
    assert_eq!(quote.state["currency"], "EUR", "Avro default filled in");
    let out = d.outputs("entity-updates");
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].key, "q1");
    assert_eq!(out[1].event_id, "e2");
    assert_eq!(out[1].value["version"], 2);
    assert_eq!(out[1].value["eventType"], "QuotePriced");
    assert!(d.dead_letters().is_empty());
}

#[test]
fn the_same_event_twice_changes_nothing() {
    let mut d = driver();
    let e = json!({"eventId": "e1", "enrollmentId": "n1", "quoteId": "q1", "customerId": "c1", "startDate": 1, "initiatedAt": 1});
    d.pipe("enrollment-events", Some("EnrollmentInitiated"), &e)
        .unwrap_or_else(|e| panic!("{e}"));
    d.pipe("enrollment-events", Some("EnrollmentInitiated"), &e)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.entity("enrollment", "n1").map(|x| x.version), Some(1));
    assert_eq!(d.outputs("entity-updates").len(), 1);
}

#[test]
fn bad_input_is_refused_or_dead_lettered() {
    let mut d = driver();
    let wrong = json!({"eventId": "e1", "quoteId": 7});
    let err = d
        .pipe("quote-events", Some("QuoteRequested"), &wrong)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("$.quoteId: expected string, got integer 7"),
        "{err}"
    );
    d.pipe_raw("quote-events", Some(b"k"), b"not avro", None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.dead_letters().len(), 1);
    assert_eq!(d.dead_letters()[0].class, "wire-format");
    assert!(d.pipe("no-such-topic", None, &json!({})).is_err());
}

#[path = "../examples/custom_stage.rs"]
#[allow(dead_code)]
mod example;

#[test]
fn a_custom_rust_stage_runs_like_a_jq_one() {
    use std::collections::HashMap;
    use std::sync::Arc;
    let mut stages: HashMap<String, Arc<dyn outflow::stage::Stage>> = HashMap::new();
    stages.insert(
        "premium-with-tax".into(),
        Arc::new(example::premium_with_tax),
    );
    let mut d = TopologyTestDriver::with_stages("examples/custom_stage.toml", stages)
        .unwrap_or_else(|e| panic!("{e}"));
    let priced =
        json!({"eventId": "e1", "quoteId": "q9", "premium": 100.0, "validUntil": 1, "pricedAt": 1});
    d.pipe("example-quote-events", Some("QuotePriced"), &priced)
        .unwrap_or_else(|e| panic!("{e}"));
    let quote = d
        .entity("quote", "q9")
        .unwrap_or_else(|| panic!("no quote"));
    assert_eq!(quote.state["premiumWithTax"], 119.0);
    assert_eq!(d.outputs("example-entity-updates").len(), 1);
    // without the stage registered, the topology does not validate (E017)
    let err = TopologyTestDriver::new("examples/custom_stage.toml")
        .err()
        .map(|e| format!("{e:?}"))
        .unwrap_or_default();
    assert!(err.contains("E017"), "{err}");
}

#[test]
fn a_custom_stage_that_panics_makes_a_dead_letter_and_the_next_event_goes_on() {
    use std::collections::HashMap;
    use std::sync::Arc;
    let fragile = |input: outflow::stage::StageInput<'_>| {
        if input.event["premium"].as_f64() == Some(0.0) {
            panic!("no premium to tax");
        }
        example::premium_with_tax(input)
    };
    let mut stages: HashMap<String, Arc<dyn outflow::stage::Stage>> = HashMap::new();
    stages.insert("premium-with-tax".into(), Arc::new(fragile));
    let mut d = TopologyTestDriver::with_stages("examples/custom_stage.toml", stages)
        .unwrap_or_else(|e| panic!("{e}"));
    let priced = |id: &str, quote: &str, premium: f64| json!({"eventId": id, "quoteId": quote, "premium": premium, "validUntil": 1, "pricedAt": 1});
    for event in [priced("e1", "q1", 0.0), priced("e2", "q2", 100.0)] {
        d.pipe("example-quote-events", Some("QuotePriced"), &event)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].class, "stage-error");
    let message = dead[0]
        .headers
        .iter()
        .find(|(k, _)| k == outflow::dlq::header::ERROR_MESSAGE)
        .map(|(_, v)| v.as_str());
    assert!(
        message.is_some_and(|m| m.contains("panicked: no premium to tax")),
        "{dead:?}"
    );
    assert!(d.entity("quote", "q1").is_none());
    assert!(
        d.entity("quote", "q2").is_some(),
        "the next event is processed"
    );
}

#[test]
fn a_state_over_mongos_document_limit_is_a_dead_letter_and_the_entity_keeps_its_state() {
    use std::collections::HashMap;
    use std::sync::Arc;
    let hoarder = |input: outflow::stage::StageInput<'_>| {
        let premium = input.event["premium"].as_f64().unwrap_or_default();
        let blob = "x".repeat(if premium > 1000.0 {
            17 * 1024 * 1024
        } else {
            10
        });
        Ok(outflow::stage::StageOutput {
            state: json!({ "premium": premium, "blob": blob }),
            emits: Vec::new(),
        })
    };
    let mut stages: HashMap<String, Arc<dyn outflow::stage::Stage>> = HashMap::new();
    stages.insert("premium-with-tax".into(), Arc::new(hoarder));
    let mut d = TopologyTestDriver::with_stages("examples/custom_stage.toml", stages)
        .unwrap_or_else(|e| panic!("{e}"));
    let priced = |id: &str, premium: f64| json!({"eventId": id, "quoteId": "q1", "premium": premium, "validUntil": 1, "pricedAt": 1});
    for event in [priced("e1", 10.0), priced("e2", 5000.0), priced("e3", 20.0)] {
        d.pipe("example-quote-events", Some("QuotePriced"), &event)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let dead = d.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].class, "too-large");
    assert_eq!(dead[0].event_id, "e2");
    let quote = d
        .entity("quote", "q1")
        .unwrap_or_else(|| panic!("no quote"));
    assert_eq!(quote.state["premium"], 20.0, "e1 and e3 applied, e2 not");
}

fn outflow(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn outflow_test_passes_the_shipped_cases() {
    let (code, out) = outflow(&["test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 passed, 0 failed"), "{out}");
}

#[test]
fn outflow_test_fails_a_wrong_expectation_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("wrong_test.toml");
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/topology.toml");
    std::fs::write(&file, format!(r#"topology = "{topology}"
[[case]]
name = "expects the wrong status"
[[case.input]]
topic = "quote-events"
type = "QuoteRequested"
event = {{ eventId = "e1", quoteId = "q1", customerId = "c1", product = "HOME", coverageAmount = 1.0, requestedAt = 1 }}
[[case.expect_entity]]
kind = "quote"
id = "q1"
version = 3
contains = {{ status = "PRICED" }}
"#)).unwrap_or_else(|e| panic!("{e}"));
    let report = dir.path().join("report.xml");
    let (code, out) = outflow(&[
        "test",
        &file.to_string_lossy(),
        "--junit",
        &report.to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("expects the wrong status"),
        "{out}"
    );
    assert!(
        out.contains("entity quote `q1` is at version 1, expected 3"),
        "{out}"
    );
    assert!(
        out.contains("-   \"status\": \"PRICED\""),
        "the expected side of the diff: {out}"
    );
    assert!(out.contains("0 passed, 1 failed"), "{out}");
    let xml = std::fs::read_to_string(&report).unwrap_or_default();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count(),
        1
    );
}
