//! The store against real Mongo: the owner-epoch fence, a takeover that does not wait for a killed
//! owner's open transaction, re-delivered event ids skipped, and an outbox of the earlier layout
//! carried over; claims racing for a new partition hold distinct epochs, and processes starting
//! together agree on one database id.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{TestTopology, env, read_committed};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use outflow::dlq::{DeadLetter, Failure, Origin};
use outflow::stage::StageRunner;
use outflow::store::{BatchEvent, Store, StoreError};

fn dead_letter(topology: &outflow::config::Topology, offset: i64) -> BatchEvent {
    let source = &topology.sources[0];
    let origin = Origin {
        topic: source.topic.clone(),
        partition: 0,
        offset,
    };
    let failure = Failure {
        class: "wire-format",
        message: "test".into(),
        stage: "source".into(),
    };
    BatchEvent::Dead(Box::new(DeadLetter::new(
        &source.dlq_topic,
        Some(b"k".to_vec()),
        Some(b"v".to_vec()),
        &format!("e{offset}"),
        &origin,
        &failure,
        0,
    )))
}

/// A fresh test topology and its store, collections and indexes created.
async fn store_with_collections() -> (TestTopology, Store) {
    let t = TestTopology::new("pipeline.toml");
    let store = t.store().await;
    (t, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_with_a_stale_epoch_cannot_commit() {
    let (t, store) = store_with_collections().await;
    let runner = StageRunner::new(Arc::clone(&t.topology), HashMap::new(), HashMap::new());
    let (group, topic, dlq) = (
        &t.topology.kafka.group_id,
        &t.topology.sources[0].topic,
        &t.topology.sources[0].dlq_topic,
    );
    let zombie = store
        .claim_partition(group, topic, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let successor = store
        .claim_partition(group, topic, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(successor.epoch, zombie.epoch + 1);
    let never = || false;

    let refused = store
        .commit_batch(
            &zombie,
            &[dead_letter(&t.topology, 0)],
            1,
            &runner,
            dlq,
            &never,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(
        t.count("outbox", doc! {}).await,
        0,
        "nothing of the zombie's batch was written"
    );

    let accepted = store
        .commit_batch(
            &successor,
            &[dead_letter(&t.topology, 0)],
            1,
            &runner,
            dlq,
            &never,
        )
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");
    assert_eq!(t.count("outbox", doc! {}).await, 1);
    let resumed = store
        .claim_partition(group, topic, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        resumed.next_offset,
        Some(1),
        "the offset was committed with the batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_does_not_wait_for_a_killed_owners_open_transaction() {
    let (t, store) = store_with_collections().await;
    let (group, topic) = (&t.topology.kafka.group_id, &t.topology.sources[0].topic);
    // a processor killed in the middle of a batch: its transaction holds the offsets document and
    // is never committed or aborted (the claim stays alive so nothing aborts it on drop)
    let killed = store
        .claim_partition(group, topic, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    {
        let mut session = killed.session.lock().await;
        session
            .start_transaction()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .database()
            .collection::<mongodb::bson::Document>(outflow::store::documents::OFFSETS)
            .update_one(
                doc! { "_id": outflow::store::documents::offsets_id(group, topic, 0) },
                doc! { "$set": { "nextOffset": 99_i64 } },
            )
            .session(&mut *session)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let started = std::time::Instant::now();
    let successor = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.claim_partition(group, topic, 0),
    )
    .await;
    let waited = started.elapsed();
    let successor = successor
        .unwrap_or_else(|_| panic!("the claim still waited after 30 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the claim waited {waited:?} for the dead owner's transaction (the server reaps it after 60 s)"
    );
    assert_eq!(successor.epoch, killed.epoch + 1);
    assert_eq!(
        successor.next_offset, None,
        "the killed transaction's write was aborted, not committed"
    );
}

fn outflow(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_online_asks_every_server() {
    let (code, out) = outflow(&["validate", "--online", "topology.toml"], &[]);
    assert_eq!(code, 0, "{out}");
    for check in ["ok   kafka", "ok   registry", "ok   mongo"] {
        assert!(out.contains(check), "{check}: {out}");
    }
    assert!(out.contains("replica set"), "{out}");
    let (code, out) = outflow(
        &["validate", "--online", "topology.toml"],
        &[("OUTFLOW_KAFKA_BROKERS", "127.0.0.1:1")],
    );
    assert_eq!(
        code, 1,
        "an unreachable broker fails the online check: {out}"
    );
    assert!(out.contains("FAIL kafka"), "{out}");
}

/// An outbox written by an earlier version (records keyed by their UUID, read through a unique
/// (shard, seq) index) is moved into pages when `outflow run` starts, and every record of it is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outbox_of_the_earlier_layout_is_moved_into_pages_and_published() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let (group, source, dlq) = (
        &t.topology.kafka.group_id,
        &t.topology.sources[0].topic,
        &t.topology.sources[0].dlq_topic,
    );
    let db = t.db().await;
    let outbox = db.collection::<Document>("outbox");
    outbox
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "shard": 1, "seq": -1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("shard_seq_desc".to_string())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let shard = outflow::store::documents::shard_of(source, 0);
    let legacy_ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (seq, id) in (1_i64..).zip(&legacy_ids) {
        let bytes = |b: &[u8]| outflow::store::documents::binary(b.to_vec());
        outbox
            .insert_one(doc! {
                "_id": id, "aggregatetype": "dead-letter", "aggregateid": "k", "type": "DeadLetter",
                "topic": dlq, "key": bytes(b"k"), "payload": bytes(format!("legacy {seq}").as_bytes()),
                "eventId": format!("legacy-{seq}"), "headers": {}, "shard": &shard, "seq": seq,
                "createdAt": mongodb::bson::DateTime::now(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    db.collection::<Document>("offsets")
        .insert_one(doc! {
            "_id": outflow::store::documents::offsets_id(group, source, 0),
            "group": group, "topic": source, "partition": 0, "epoch": 1_i64, "outboxSeq": 3_i64,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let outflow = t.run(&[]);
    let published = read_committed(dlq, 3, 3, Duration::from_secs(90), Duration::from_secs(2));
    let mut ids: Vec<String> = published
        .iter()
        .filter_map(|r| r.headers.get("id").cloned())
        .collect();
    ids.sort();
    let mut expected = legacy_ids.clone();
    expected.sort();
    assert_eq!(
        ids,
        expected,
        "each legacy record published once, with its own id\n{}",
        outflow.log_tail(40)
    );
    let cleaned = t
        .reaches("outbox", doc! {}, 0, Duration::from_secs(30))
        .await;
    assert!(cleaned, "the published legacy records were deleted");
    let indexes = outbox
        .list_index_names()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !indexes.iter().any(|i| i.starts_with("shard_seq")),
        "the legacy index was dropped: {indexes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_agree_on_one_database_id() {
    let t = TestTopology::new("pipeline.toml");
    let uri = env("OUTFLOW_MONGO_URI");
    // each process has its own client, as processes starting at once do
    let mut starting = Vec::new();
    for _ in 0..8 {
        let (uri, database) = (uri.clone(), t.prefix.clone());
        starting.push(tokio::spawn(async move {
            let store = Store::connect(&uri, &database).await?;
            store.database_id().await
        }));
    }
    let mut ids = Vec::new();
    for s in starting {
        match s.await {
            Ok(Ok(id)) => ids.push(id),
            Ok(Err(e)) => panic!("database_id: {e}"),
            Err(e) => panic!("task: {e}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_racing_for_a_new_partition_each_get_their_own_epoch() {
    let (t, _) = store_with_collections().await;
    let uri = env("OUTFLOW_MONGO_URI");
    let topic = t.topology.sources[0].topic.clone();
    let mut racing = Vec::new();
    for _ in 0..6 {
        let (uri, database, topic) = (uri.clone(), t.prefix.clone(), topic.clone());
        racing.push(tokio::spawn(async move {
            let store = Store::connect(&uri, &database).await?;
            store.claim_partition("racers", &topic, 0).await
        }));
    }
    let mut epochs = Vec::new();
    for r in racing {
        match r.await {
            Ok(Ok(claim)) => epochs.push(claim.epoch),
            Ok(Err(e)) => panic!("claim: {e}"),
            Err(e) => panic!("task: {e}"),
        }
    }
    // one owner per epoch (two claims holding the same one could both commit), and the last
    // claim's is the document's: only it may commit
    epochs.sort_unstable();
    let mut distinct = epochs.clone();
    distinct.dedup();
    assert_eq!(distinct, epochs, "epochs held by the racing claims");
    let stored = t
        .db()
        .await
        .collection::<Document>("offsets")
        .find_one(doc! { "group": "racers" })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .and_then(|d| d.get_i64("epoch").ok());
    assert_eq!(stored, epochs.last().copied(), "{epochs:?}");
}
