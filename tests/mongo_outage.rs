//! Mongo outages on the real local stack: one while the consumer group rebalances (the new
//! assignment waits for Mongo, as its partitions are claimed there), and one longer than the
//! consumer's `max.poll.interval.ms`. Once Mongo answers again everything is processed and
//! published exactly once.

mod common;

use std::time::Duration;

use common::{TestTopology, assert_exactly_once, eventually, produce_quotes};
use mongodb::bson::doc;

/// Each test stops SecantusDB: run together, one would start it again in the other's outage.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `deploy/local/mongo/mongo-local.sh <command>`; whether it succeeded.
fn mongo_local(command: &str) -> bool {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/mongo/mongo-local.sh"
    );
    std::process::Command::new(script)
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SecantusDB stopped until this is dropped: a failing test still leaves the stack up for the
/// test binaries after it.
struct MongoStopped;

impl MongoStopped {
    fn now() -> Self {
        assert!(mongo_local("stop"), "mongo-local.sh stop failed");
        MongoStopped
    }
}

impl Drop for MongoStopped {
    fn drop(&mut self) {
        if !mongo_local("start") && !std::thread::panicking() {
            panic!("mongo-local.sh start failed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_while_mongo_is_down_waits_for_it_and_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let (quotes, after) = (1_000, 300);
    // a claim gives up on Mongo after 1 s instead of the default 10, so the outage outlasts
    // several attempts of each claim
    let uri = common::env("OUTFLOW_MONGO_URI");
    let uri = format!(
        "{uri}{}serverSelectionTimeoutMS=1000",
        if uri.contains('?') { '&' } else { '?' }
    );
    let env = [("OUTFLOW_MONGO_URI", uri.as_str())];
    let t = TestTopology::edited_with_env("pipeline.toml", &[], &env);
    t.prepare().await;
    produce_quotes(&t, 0..quotes).await;
    let first = t.run_with_env(&[], &env);
    let started = eventually(Duration::from_secs(60), async || {
        t.count("event_log", doc! {}).await > 400
    })
    .await;
    assert!(started, "processing never started");
    // a second processor takes some of the partitions (a process started while Mongo is down
    // refuses to start instead: it cannot create collections and indexes)
    let second = t.run_with_env(&["--processor-only"], &env);
    let shared = second
        .logged("partition assigned", Duration::from_secs(60))
        .await;
    assert!(shared, "the second processor never got a partition");

    let stopped = MongoStopped::now();
    // a rolling deploy stops it meanwhile: its partitions go back to the first processor, which
    // cannot claim them until Mongo answers
    assert_eq!(
        second.stop(),
        Some(0),
        "a processor stopped while Mongo is down still stops gracefully"
    );
    // six failed attempts: as many as the partitions it takes back, so a processor that gave up
    // on a partition instead of retrying would leave quote partitions unclaimed
    let retried = eventually(Duration::from_secs(60), async || {
        first.log_text().matches("cannot claim").count() >= 6
    })
    .await;
    assert!(
        retried,
        "the first processor did not keep trying to claim while Mongo was down"
    );
    drop(stopped);

    produce_quotes(&t, quotes..quotes + after).await;
    assert_exactly_once(&t, quotes + after).await;
    assert_eq!(
        first.stop(),
        Some(0),
        "the first processor stops gracefully"
    );
}

/// A Kafka consumer that is not polled for `max.poll.interval.ms` leaves its group. While Mongo
/// is down every partition task waits in its batch transaction, longer than that limit here: the
/// processor must still count as polling, keep its partitions, and lose and double nothing once
/// Mongo is back. It counts as polling twice over: the consumer's own loop polls its main queue
/// at least every watchdog check, and a partition task polls its queue while its batch retries.
/// With both taken out (tried by hand), librdkafka logged MAXPOLL, left the group, and this failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mongo_outage_longer_than_max_poll_interval_keeps_the_partitions_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let (before, during) = (300, 300);
    let max_poll = Duration::from_secs(12); // librdkafka's lowest: the session timeout (10 s) + 1
    let t = TestTopology::edited(
        "pipeline.toml",
        &[(
            r#""heartbeat.interval.ms" = "1000" }"#,
            r#""heartbeat.interval.ms" = "1000", "max.poll.interval.ms" = "12000" }"#,
        )],
    );
    t.prepare().await;
    produce_quotes(&t, 0..before).await;
    let processor = t.run(&[]);
    t.assert_event_log_reaches(before * common::EVENTS_PER_QUOTE)
        .await;
    let assignments = processor.log_text().matches("partitions assigned").count();

    let stopped = MongoStopped::now();
    // records keep arriving: every partition task takes a batch and waits in its transaction
    produce_quotes(&t, before..before + during).await;
    tokio::time::sleep(max_poll * 2).await;
    drop(stopped);

    assert_exactly_once(&t, before + during).await;
    let log = processor.log_text();
    assert!(
        !log.contains("partitions revoked"),
        "the processor lost its partitions during a Mongo outage of twice max.poll.interval.ms; log:\n{log}"
    );
    assert_eq!(
        log.matches("partitions assigned").count(),
        assignments,
        "the group rebalanced during the Mongo outage; log:\n{log}"
    );
    assert_eq!(processor.stop(), Some(0), "the processor stops gracefully");
}
