//! A Mongo outage on the real local stack while the consumer group rebalances: the new assignment
//! waits for Mongo (its partitions are claimed there), and once Mongo answers again everything is
//! processed and published exactly once.

mod common;

use std::time::Duration;

use common::{TestTopology, assert_exactly_once, eventually, produce_quotes};
use mongodb::bson::doc;

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
