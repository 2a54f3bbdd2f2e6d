//! The pipeline on the real local stack: exactly once end to end, re-delivery, dead letters.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{TestTopology, eventually, read_committed};
use mongodb::bson::doc;
use outflow::schema::codec;
use outflow::schema::json::avro_to_json;
use rdkafka::message::{Header, OwnedHeaders};
use serde_json::{Value, json};

const QUOTES: usize = 2_500;
const EVENTS_PER_QUOTE: usize = common::EVENTS_PER_QUOTE;

async fn produce_all(t: &TestTopology) {
    common::produce_quotes(t, 0..QUOTES).await;
}

fn decode_entity_updated(t: &TestTopology, value: &[u8]) -> Value {
    let schema = &t.topology.topics[0].schema.schema;
    let (id, body) = codec::split_frame(value).unwrap_or_else(|e| panic!("{e}"));
    let avro = codec::decode(id, schema, schema, body).unwrap_or_else(|e| panic!("{e}"));
    avro_to_json(&avro)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_exactly_once_and_redelivery_changes_nothing() {
    let total = QUOTES * EVENTS_PER_QUOTE;
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let outflow = t.run(&[]);
    produce_all(&t).await;
    t.assert_event_log_reaches(total).await;

    let updates = read_committed(
        &t.topic("entity-updates"),
        3,
        total,
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    assert_eq!(updates.len(), total, "records on entity-updates");
    let ids: HashSet<&String> = updates.iter().filter_map(|r| r.headers.get("id")).collect();
    assert_eq!(ids.len(), total, "each outbox id exactly once");
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    let mut ordered = updates.clone();
    ordered.sort_by_key(|r| (r.partition, r.offset));
    for r in &ordered {
        let value = decode_entity_updated(&t, r.value.as_deref().unwrap_or_default());
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        assert_eq!(
            value["entityId"].as_str(),
            Some(key.as_str()),
            "key = aggregate id"
        );
        versions
            .entry(key)
            .or_default()
            .push(value["version"].as_i64().unwrap_or(-1));
    }
    assert_eq!(versions.len(), QUOTES);
    for (key, v) in &versions {
        assert_eq!(
            v,
            &(1..=EVENTS_PER_QUOTE as i64).collect::<Vec<_>>(),
            "per-key order of {key}"
        );
    }
    let at_version = t
        .count("quote", doc! { "version": EVENTS_PER_QUOTE as i64 })
        .await;
    assert_eq!(
        at_version, QUOTES as u64,
        "every quote at version {EVENTS_PER_QUOTE}"
    );

    // the same events again, same ids: consumed, but nothing new anywhere
    produce_all(&t).await;
    let db = t.db().await;
    let consumed = eventually(Duration::from_secs(120), async || {
        let offsets: Vec<mongodb::bson::Document> = match db
            .collection("offsets")
            .find(doc! { "topic": t.topic("quote-events") })
            .await
        {
            Ok(c) => futures::TryStreamExt::try_collect(c)
                .await
                .unwrap_or_default(),
            Err(_) => return false,
        };
        offsets
            .iter()
            .map(|d| d.get_i64("nextOffset").unwrap_or(0))
            .sum::<i64>()
            == 2 * total as i64
    })
    .await;
    assert!(consumed, "the re-delivered events were consumed");
    assert_eq!(t.count("event_log", doc! {}).await, total as u64);
    assert_eq!(
        t.count("quote", doc! { "version": EVENTS_PER_QUOTE as i64 })
            .await,
        QUOTES as u64
    );
    let again = read_committed(
        &t.topic("entity-updates"),
        3,
        total + 1,
        Duration::from_secs(10),
        Duration::ZERO,
    );
    assert_eq!(again.len(), total, "no new output records");
    // the topology's consumer properties (session and heartbeat) reach the consumer only: on a
    // producer librdkafka warns about each, at each relay shard's producer
    let log = outflow.log_text();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("CONFWARN")).collect();
    assert!(
        warned.is_empty(),
        "librdkafka configuration warnings:\n{}",
        warned.join("\n")
    );
    assert_eq!(outflow.stop(), Some(0), "graceful stop on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_become_dead_letters_and_the_partition_moves_on() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let outflow = t.run(&[]);
    let producer = t.producer();
    let topic = t.topic("quote-events");
    let key = b"poison-q".as_slice();
    let registry =
        outflow::schema::registry::Registry::new(&t.topology.registry.url, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
    let enrollment = &t.topology.sources[1].schemas[0];
    let foreign_id = registry
        .register(&format!("{}-foreign", t.prefix), enrollment)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let foreign = json!({"eventId": "x", "enrollmentId": "e1", "quoteId": "poison-q", "customerId": "c", "startDate": 1, "initiatedAt": 1});
    let foreign = codec::encode(
        foreign_id,
        &enrollment.schema,
        outflow::schema::json::json_to_avro(&foreign, &enrollment.schema)
            .unwrap_or_else(|e| panic!("{e:?}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let requested = &t.topology.sources[0].schemas[0];
    let good = json!({"eventId": "good-1", "quoteId": "poison-q", "customerId": "c1", "product": "LIFE", "coverageAmount": 1.0, "requestedAt": 1});
    let good_id = registry
        .register(&format!("{topic}-{}", requested.full_name), requested)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let encoded_good = codec::encode(
        good_id,
        &requested.schema,
        outflow::schema::json::json_to_avro(&good, &requested.schema)
            .unwrap_or_else(|e| panic!("{e:?}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let raw: Vec<(&str, Vec<u8>)> = vec![
        ("wire-format", b"hello, not avro".to_vec()),
        ("unknown-schema", vec![0, 0x0f, 0x42, 0x40, 0x00, 1, 2, 3]),
        ("schema-mismatch", foreign),
        (
            "avro-decode",
            encoded_good[..encoded_good.len() - 4].to_vec(),
        ),
    ];
    for (i, (_, bytes)) in raw.iter().enumerate() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "outflow.event-id",
            value: Some(&format!("poison-{i}")),
        });
        producer
            .produce_raw(&topic, Some(key), bytes, headers)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let negative = json!({"eventId": "neg-1", "quoteId": "poison-q", "premium": -5.0, "validUntil": 1, "pricedAt": 1});
    producer
        .produce(&topic, Some("QuotePriced"), &negative, "neg-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let emit_bad = json!({"eventId": "bad-emit-1", "quoteId": "poison-q", "customerId": "emit-bad", "product": "LIFE", "coverageAmount": 1.0, "requestedAt": 1});
    producer
        .produce(&topic, Some("QuoteRequested"), &emit_bad, "bad-emit-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    producer
        .produce(&topic, Some("QuoteRequested"), &good, "good-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let dead = read_committed(
        &t.topic("quote-events.dlq"),
        3,
        6,
        Duration::from_secs(90),
        Duration::from_secs(2),
    );
    let classes: Vec<&str> = dead
        .iter()
        .filter_map(|r| r.headers.get("outflow.error.class").map(String::as_str))
        .collect();
    assert_eq!(
        classes,
        vec![
            "wire-format",
            "unknown-schema",
            "schema-mismatch",
            "avro-decode",
            "stage-error",
            "emit-invalid"
        ]
    );
    for (i, r) in dead.iter().enumerate() {
        for h in [
            "outflow.error.class",
            "outflow.error.message",
            "outflow.error.stage",
            "outflow.source.topic",
            "outflow.source.partition",
            "outflow.source.offset",
            "outflow.event-id",
            "outflow.attempts",
            "outflow.failed-at",
        ] {
            assert!(
                r.headers.get(h).is_some_and(|v| !v.is_empty()),
                "dead letter {i} lacks {h}: {:?}",
                r.headers
            );
        }
        assert_eq!(r.headers["outflow.source.topic"], topic);
        assert_eq!(r.key.as_deref(), Some(key), "original key bytes");
    }
    assert_eq!(
        dead[0].value.as_deref(),
        Some(b"hello, not avro".as_slice()),
        "original value bytes"
    );
    assert!(
        dead[4].headers["outflow.error.message"].contains("negative premium"),
        "{:?}",
        dead[4].headers
    );
    assert_eq!(dead[4].headers["outflow.error.stage"], "quote-priced");
    assert!(
        dead[5].headers["outflow.error.message"].contains("$.status"),
        "{:?}",
        dead[5].headers
    );
    assert_eq!(dead[3].headers["outflow.event-id"], "poison-3");
    // the record after the poison ones was processed: the partition never stalled
    let processed = t
        .reaches(
            "quote",
            doc! { "_id": "poison-q", "version": 1_i64 },
            1,
            Duration::from_secs(30),
        )
        .await;
    assert!(
        processed,
        "the good event after the poison records was processed"
    );
    assert_eq!(
        t.count("event_log", doc! {}).await,
        1,
        "only the good event is in the event log"
    );
    assert_eq!(outflow.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processor_killed_mid_stream_loses_and_doubles_nothing() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let first = t.run(&[]);
    let produced = produce_all(&t);
    let killer = async {
        // SIGKILL once the first batches are in, while records are still flowing
        let started = eventually(Duration::from_secs(60), async || {
            t.count("event_log", doc! {}).await > 500
        })
        .await;
        assert!(started, "processing never started");
        first.signal("KILL");
    };
    tokio::join!(produced, killer);
    let in_log_at_kill = t.count("event_log", doc! {}).await;
    let second = t.run(&[]);
    eprintln!("{in_log_at_kill} events were in the event log at the kill");
    common::assert_exactly_once(&t, QUOTES).await;
    assert_eq!(second.stop(), Some(0));
}
