//! Bad input never crashes a running process: malformed source records against `outflow run`
//! (one dead letter each, the partition moves on) and hostile ingress requests (a 4xx that says
//! why, the server keeps serving), and command-line values no command can use (a usage error that
//! names the value). The file and fuzz corpora are replayed in `corpus.rs`.

mod common;

use std::time::Duration;

use common::{TestTopology, read_committed};
use mongodb::bson::doc;
use outflow::schema::codec;
use outflow::schema::json::json_to_avro;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// The last lines of a process log, for assertion messages.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A producer that can send tombstones, invalid UTF-8 keys and records up to the broker's limit.
fn raw_producer() -> FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::env("OUTFLOW_KAFKA_BROKERS"))
        .set("message.max.bytes", "1048576")
        .set("enable.idempotence", "true")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"))
}

/// Produces to partition 0 and returns the record's offset.
async fn send(p: &FutureProducer, topic: &str, key: &[u8], value: Option<&[u8]>, id: &str) -> i64 {
    let headers = OwnedHeaders::new().insert(Header {
        key: "outflow.event-id",
        value: Some(id),
    });
    let mut record = FutureRecord::to(topic)
        .partition(0)
        .key(key)
        .headers(headers);
    if let Some(v) = value {
        record = record.payload(v);
    }
    match p.send(record, Duration::from_secs(30)).await {
        Ok(delivery) => delivery.offset,
        Err((e, _)) => panic!("produce {id}: {e}"),
    }
}

/// A bad source record: name (also its event id), key, value, expected dead-letter class.
type BadRecord<'a> = (&'a str, &'a [u8], Option<Vec<u8>>, &'a str);

// above the batch's max_bytes (64 KiB here) and the relay's limit, under the broker's 1 MiB
const HUGE: usize = 1_040_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_bad_source_record_is_one_dead_letter_and_the_partition_moves_on() {
    let t = TestTopology::edited(
        "pipeline.toml",
        &[(
            "dlq = \"@PREFIX@-quote-events.dlq\"\n",
            "dlq = \"@PREFIX@-quote-events.dlq\"\nbatch = { max_bytes = 65536 }\n",
        )],
    );
    assert_eq!(t.topology.sources[0].batch.max_bytes, 65536);
    t.prepare().await;
    let mut outflow = t.run(&[]);
    let topic = t.topic("quote-events");
    let registry =
        outflow::schema::registry::Registry::new(&t.topology.registry.url, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
    let requested = &t.topology.sources[0].schemas[0];
    let id = registry
        .register(&format!("{topic}-{}", requested.full_name), requested)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let encode = |event: &Value| {
        let avro = json_to_avro(event, &requested.schema).unwrap_or_else(|e| panic!("{e:?}"));
        codec::encode(id, &requested.schema, avro).unwrap_or_else(|e| panic!("{e}"))
    };
    let good = |n: &str| {
        json!({"eventId": n, "quoteId": "corpus-q", "customerId": "c1", "product": "LIFE",
               "coverageAmount": 1.0, "requestedAt": 1})
    };
    let good_bytes = encode(&good("good-1"));
    let mut bad_utf8_string = codec::frame(id, &[4, 0xff, 0xfe]); // eventId: 2 bytes, not UTF-8
    bad_utf8_string.extend_from_slice(&good_bytes[5 + 7..]);
    let mut huge = codec::frame(id, &[]);
    huge.resize(HUGE, b'x');
    let mut huge_valid = good("huge-valid");
    huge_valid["customerId"] = json!("c".repeat(1_000_000)); // decodes; its output is too large
    let huge_valid = encode(&huge_valid);
    let key: &[u8] = b"corpus-q";
    let bad_key: &[u8] = b"\xff\xfebad-key\xc3";
    let mut unknown_id = good_bytes.clone();
    unknown_id[1..5].copy_from_slice(&0x7fff_fff0_u32.to_be_bytes());
    let mut wrong_magic = good_bytes.clone();
    wrong_magic[0] = 1;
    #[rustfmt::skip]
    let bad: Vec<BadRecord> = vec![
        ("truncated", key, Some(good_bytes[..good_bytes.len() - 4].to_vec()), "avro-decode"),
        ("truncated-header", key, Some(good_bytes[..3].to_vec()), "wire-format"),
        ("wrong-magic", key, Some(wrong_magic), "wire-format"),
        ("unknown-schema-id", key, Some(unknown_id), "unknown-schema"),
        ("huge", key, Some(huge), "avro-decode"),
        ("huge-valid", key, Some(huge_valid), "too-large"),
        ("invalid-utf8-key", bad_key, Some(b"\x07not avro".to_vec()), "wire-format"),
        ("invalid-utf8-string", key, Some(bad_utf8_string), "avro-decode"),
        ("empty-value", key, Some(Vec::new()), "wire-format"),
        ("tombstone", key, None, "wire-format"),
    ];
    let producer = raw_producer();
    let mut offsets = Vec::new();
    for (name, k, value, _) in &bad {
        offsets.push(send(&producer, &topic, k, value.as_deref(), name).await);
    }
    // good records after them: one keyed by invalid UTF-8 (the key is opaque bytes), one plain
    let good_2 = encode(&good("good-2"));
    send(&producer, &topic, bad_key, Some(&good_bytes), "good-1").await;
    send(&producer, &topic, key, Some(&good_2), "good-2").await;

    let dead = read_committed(
        &t.topic("quote-events.dlq"),
        3,
        bad.len(),
        Duration::from_secs(120),
        Duration::from_secs(5),
    );
    // dead letters keep their original keys, so they spread over the DLQ's partitions: put them
    // back in source order before comparing
    let mut dead = dead;
    dead.sort_by_key(|r| {
        r.headers
            .get("outflow.source.offset")
            .and_then(|o| o.parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    });
    let classes: Vec<(&str, &str)> = dead
        .iter()
        .map(|r| {
            let id = r.headers.get("outflow.event-id").map_or("", String::as_str);
            let class = r
                .headers
                .get("outflow.error.class")
                .map_or("", String::as_str);
            (id, class)
        })
        .collect();
    let expected: Vec<(&str, &str)> = bad.iter().map(|(n, _, _, c)| (*n, *c)).collect();
    assert_eq!(
        classes,
        expected,
        "one dead letter per bad record, in order; outflow log ends:\n{}",
        log_tail(&outflow.log_text())
    );
    for ((r, (name, k, value, _)), offset) in dead.iter().zip(&bad).zip(&offsets) {
        assert_eq!(r.headers["outflow.source.topic"], topic, "{name}");
        assert_eq!(r.headers["outflow.source.partition"], "0", "{name}");
        assert_eq!(
            r.headers["outflow.source.offset"],
            offset.to_string(),
            "{name}"
        );
        assert!(!r.headers["outflow.error.message"].is_empty(), "{name}");
        assert_eq!(r.key.as_deref(), Some(*k), "{name}: original key bytes");
        if name.starts_with("huge") {
            // too large to publish with its value: the letter says where the original is
            assert_eq!(r.value, None, "{name}");
            let omitted = &r.headers["outflow.value.omitted"];
            assert!(
                omitted.ends_with(&format!("{topic}[0]@{offset}")),
                "{omitted}"
            );
        } else {
            assert_eq!(r.value, *value, "{name}: original value bytes");
        }
    }
    // the good records after them were processed and published: nothing stalled
    let processed = t
        .reaches(
            "quote",
            doc! { "_id": "corpus-q", "version": 2_i64 },
            1,
            Duration::from_secs(60),
        )
        .await;
    assert!(
        processed,
        "the good records after the bad ones were processed"
    );
    assert_eq!(t.count("event_log", doc! {}).await, 2);
    let updates = read_committed(
        &t.topic("entity-updates"),
        3,
        2,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(
        updates.len(),
        2,
        "both good records published after the dead letters"
    );
    assert!(
        outflow.child.try_wait().ok().flatten().is_none(),
        "outflow run is still alive; log:\n{}",
        outflow.log_text()
    );
    assert_eq!(outflow.stop(), Some(0));
}

// ---------------------------------------------------------------- ingress

async fn post(base: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .timeout(Duration::from_secs(60))
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A hostile request: name, content type, body, expected status, a word the answer must contain.
type IngressCase<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_ingress_requests_get_a_4xx_that_says_why_and_the_server_keeps_serving() {
    let t = TestTopology::edited(
        "pipeline.toml",
        &[("max_body_bytes = 16384", "max_body_bytes = 1048576")],
    );
    t.prepare().await;
    let mut outflow = t.run(&[]);
    let base = t.http_base();
    common::wait_ready(&base).await;
    const JSON: Option<&str> = Some("application/json");
    let quote = json!({"quoteId": "ing-q", "customerId": "c1", "product": "HOME",
                       "coverageAmount": 10.0, "requestedAt": 1});
    let with = |field: &str, value: Value| {
        let mut q = quote.clone();
        q[field] = value;
        q.to_string().into_bytes()
    };
    let without = |field: &str| {
        let mut q = quote.clone();
        q.as_object_mut().map(|m| m.remove(field));
        q.to_string().into_bytes()
    };
    #[rustfmt::skip]
    let cases: Vec<IngressCase> = vec![
        ("100k levels of [", JSON, "[".repeat(100_000).into_bytes(), 400, "recursion limit"),
        ("100k levels of {", JSON, "{\"a\":".repeat(100_000).into_bytes(), 400, "recursion limit"),
        ("huge body", JSON, vec![b' '; 2 * 1024 * 1024], 413, "body too large"),
        ("invalid UTF-8", JSON, b"{\"quoteId\": \"\xff\xfe\"}".to_vec(), 400, "body is not JSON"),
        ("truncated JSON", JSON, b"{\"quoteId\": ".to_vec(), 400, "body is not JSON"),
        ("wrong content type", Some("text/plain"), quote.to_string().into_bytes(), 415, "content type"),
        ("no content type", None, quote.to_string().into_bytes(), 415, "content type"),
        ("not an object", JSON, b"[1, 2]".to_vec(), 400, "JSON object"),
        ("extra field", JSON, with("extra", json!(1)), 400, "$.extra"),
        ("missing field", JSON, without("customerId"), 400, "$.customerId"),
        ("long out of range", JSON, with("requestedAt", json!(18_446_744_073_709_551_615_u64)), 400, "$.requestedAt"),
        ("long as a fraction", JSON, with("requestedAt", json!(1.5)), 400, "$.requestedAt"),
        ("number beyond f64", JSON, br#"{"coverageAmount": 1e400}"#.to_vec(), 400, "number out of range"),
        ("enum symbol unknown", JSON, with("product", json!("BOAT")), 400, "$.product"),
        ("string as a number", JSON, with("quoteId", json!(12)), 400, "$.quoteId"),
    ];
    for (name, content_type, body, status, says) in cases {
        let (got, answer) = post(&base, "/quotes", content_type, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert!(
            answer.to_string().contains(says),
            "{name}: the answer should mention `{says}`: {answer}"
        );
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {answer}"
        );
    }
    let (status, answer) = post(&base, "/quotes", JSON, quote.to_string().into_bytes()).await;
    assert_eq!(status, 202, "a good request after the bad ones: {answer}");
    assert!(
        outflow.child.try_wait().ok().flatten().is_none(),
        "outflow run is still alive; log:\n{}",
        outflow.log_text()
    );
    assert_eq!(outflow.stop(), Some(0));
}

// ---------------------------------------------------------------- topology files

#[test]
fn command_line_values_no_command_can_use_are_usage_errors_naming_the_value() {
    for args in [
        &["tail", "t", "--idle-timeout=-1"][..],
        &["tail", "t", "--idle-timeout", "nan"],
        &["tail", "t", "--idle-timeout", "1e300"],
        &["dlq", "replay", "--rate", "0"],
        &["dlq", "replay", "--rate", "1e-320"],
        &["dlq", "replay", "--rate=-5"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        let value = args[args.len() - 1].rsplit('=').next().unwrap_or_default();
        assert_eq!(out.status.code(), Some(2), "outflow {args:?}: {err}");
        assert!(
            err.contains(&format!("invalid value '{value}'")),
            "outflow {args:?}: {err}"
        );
    }
}
