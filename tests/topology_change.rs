//! Changing a deployed topology: a source added later leaves every relay checkpoint where it was,
//! a new consumer group continues each outbox shard's numbering, and a source whose topic has
//! other partitions than configured is refused at start; a new database under the same topology
//! publishes everything it processes, and a database of another topology is refused.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{TestTopology, assert_exactly_once, produce_quotes, read_committed};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::consumer::BaseConsumer;

/// A source whose topic sorts before the others: in a sorted list of shards it comes first.
fn added_source(t: &TestTopology) -> String {
    let topic = t.topic("added-events");
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        r#"
[[sources]]
name = "added"
topic = "{topic}"
partitions = 2
subject_strategy = "topic_record_name"
schemas = ["{root}/schemas/QuoteRequested.avsc"]
key = "quoteId"
event_id = "eventId"
dlq = "{topic}.dlq"
"#
    )
}

/// The partition each shard's checkpoints are in, read back from the checkpoint topic (a shard's
/// checkpoints are all in one partition, or the test fails).
fn checkpoint_partitions(topic: &str, partitions: i32) -> HashMap<String, i32> {
    let written = read_committed(
        topic,
        partitions,
        usize::MAX,
        Duration::from_secs(10),
        Duration::ZERO,
    );
    let mut where_written = HashMap::new();
    for r in &written {
        let shard = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let earlier = where_written.insert(shard.clone(), r.partition);
        assert!(
            earlier.is_none_or(|p| p == r.partition),
            "shard {shard} wrote checkpoints to partitions {earlier:?} and {}",
            r.partition
        );
    }
    where_written
}

fn partition_count(topic: &str) -> usize {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::env("OUTFLOW_KAFKA_BROKERS"))
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    outflow::topics::partition_ids(&consumer, topic, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata: {e}"))
        .len()
}

/// Runs `t` until 30 quotes are processed exactly once, and stops it.
async fn first_30_quotes(t: &TestTopology) {
    t.prepare().await;
    let first = t.run(&[]);
    produce_quotes(t, 0..30).await;
    assert_exactly_once(t, 30).await;
    assert_eq!(first.stop(), Some(0));
}

/// Replaces `from` with `to` in `t`'s topology.toml; returns the text before.
fn edit(t: &TestTopology, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(&t.path).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains(from), "the topology has no `{from}`");
    std::fs::write(&t.path, text.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_added_later_keeps_every_relay_checkpoint_and_publishes_nothing_twice() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let first = t.run(&[]);
    produce_quotes(&t, 0..60).await;
    assert_exactly_once(&t, 60).await;
    // killed: what it published but had not yet deleted from the outbox stays there
    first.signal("KILL");
    drop(first);
    let checkpoint_topic = &t.topology.relay.checkpoint_topic;
    let where_written = checkpoint_partitions(checkpoint_topic, 6);
    assert!(
        where_written.len() >= 3,
        "the quote shards published: {where_written:?}"
    );

    let text = std::fs::read_to_string(&t.path).unwrap_or_default();
    std::fs::write(&t.path, text + &added_source(&t)).unwrap_or_else(|e| panic!("{e}"));
    let second = t.run(&[]);
    produce_quotes(&t, 60..100).await;
    assert_exactly_once(&t, 100).await;

    let placed: Vec<Document> = t
        .db()
        .await
        .collection::<Document>("relay_checkpoint_partitions")
        .find(doc! {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let placed: HashMap<String, i32> = placed
        .iter()
        .filter_map(|d| {
            Some((
                d.get_str("_id").ok()?.to_string(),
                d.get_i32("partition").ok()?,
            ))
        })
        .collect();
    for (shard, partition) in &where_written {
        assert_eq!(
            placed.get(shard),
            Some(partition),
            "shard {shard} must read its checkpoint where it wrote it; placed: {placed:?}"
        );
    }
    let added = t.topic("added-events");
    assert_eq!(placed.get(&format!("{added}:0")), Some(&6), "{placed:?}");
    assert_eq!(placed.get(&format!("{added}:1")), Some(&7), "{placed:?}");
    assert_eq!(
        partition_count(checkpoint_topic),
        8,
        "the checkpoint topic grew to hold the added shards"
    );
    // and the relay wrote its new checkpoints where it placed them
    let after = checkpoint_partitions(checkpoint_topic, 8);
    for (shard, partition) in &after {
        assert_eq!(placed.get(shard), Some(partition), "{shard}");
    }
    assert_eq!(second.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_topic_with_other_partitions_than_configured_is_refused_at_start() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let text = std::fs::read_to_string(&t.path).unwrap_or_default();
    let quotes = t.topic("quote-events");
    let edited = text.replacen("partitions = 3", "partitions = 2", 1);
    assert!(edited.contains(&format!("topic = \"{quotes}\"\npartitions = 2")));
    std::fs::write(&t.path, edited).unwrap_or_else(|e| panic!("{e}"));
    let wanted = format!("source `quotes`: topic `{quotes}` has 3 partition(s)");
    // `validate --online` says so before a deploy
    let validated = std::process::Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(["validate", "--online"])
        .arg(&t.path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let said = String::from_utf8_lossy(&validated.stdout);
    assert_eq!(validated.status.code(), Some(1), "{said}");
    assert!(said.contains(&wanted), "{said}");
    let mut outflow = t.run(&[]);
    let status = outflow.wait_exit(Duration::from_secs(90));
    let log = outflow.log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(78),
        "exit code; log:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "source `quotes`: topic `{quotes}` has 3 partition(s) on the brokers but `partitions = 2`"
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_group_id_continues_each_outbox_shard_and_loses_no_output() {
    let t = TestTopology::new("pipeline.toml");
    first_30_quotes(&t).await;
    // the group is renamed: it reads the sources again from the start (every event a duplicate)
    // and numbers each shard's new outbox records after those the relay published already
    let group = &t.topology.kafka.group_id;
    let text = edit(
        &t,
        &format!("group_id = \"{group}\""),
        &format!("group_id = \"{group}-renamed\""),
    );
    let second = t.run(&[]);
    produce_quotes(&t, 30..60).await;
    assert_exactly_once(&t, 60).await;
    assert_eq!(second.stop(), Some(0));
    // and renamed back: the first group's own offsets documents are behind the shards now
    std::fs::write(&t.path, text).unwrap_or_else(|e| panic!("{e}"));
    let third = t.run(&[]);
    produce_quotes(&t, 60..90).await;
    assert_exactly_once(&t, 90).await;
    assert_eq!(third.stop(), Some(0));
}

/// Deletes every record of `topic` so far, as retention does.
async fn expire_records(t: &TestTopology, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        outflow::kafka_client::admin_config(&t.topology.kafka)
            .create()
            .unwrap_or_else(|e| panic!("admin: {e}"));
    let mut all = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        all.add_partition_offset(topic, p, rdkafka::Offset::End)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    admin
        .delete_records(&all, &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("delete records of {topic}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_database_under_the_same_topology_publishes_everything_it_processes() {
    let t = TestTopology::new("pipeline.toml");
    first_30_quotes(&t).await;
    // the sources' first events expire, and the topology moves to a new, empty database (another
    // Mongo cluster, or the old database dropped to start over) under the same name, so beside the
    // first database's relay checkpoints: the new database has published nothing, and its
    // records must all be published, though their outbox sequences were published before
    for source in &t.topology.sources {
        expire_records(&t, &source.topic, source.partitions).await;
    }
    edit(
        &t,
        &format!("database = \"{}\"", t.prefix),
        &format!("database = \"{}-moved\"", t.prefix),
    );
    let second = t.run(&[]);
    produce_quotes(&t, 30..60).await;
    let total = 60 * common::EVENTS_PER_QUOTE;
    let updates = read_committed(
        &t.topic("entity-updates"),
        3,
        total,
        Duration::from_secs(180),
        Duration::from_secs(5),
    );
    let log = second.log_text();
    assert_eq!(second.stop(), Some(0));
    // each shard's relay said whose checkpoint it found, and how old it was
    assert!(
        log.contains("last checkpoint was written from another database"),
        "no warning about the first database's checkpoints:\n{log}"
    );
    let events: HashSet<&String> = updates
        .iter()
        .filter_map(|r| r.headers.get("outflow.event-id"))
        .collect();
    assert_eq!(
        (updates.len(), events.len()),
        (total, total),
        "records and distinct events on entity-updates: each database's, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_names_an_outbox_numbered_again_below_its_checkpoint() {
    let t = TestTopology::new("pipeline.toml");
    first_30_quotes(&t).await;
    // offsets documents deleted by hand: the shards are numbered from 1 again, below what their
    // checkpoints say is published, and the relay cannot tell those records from published ones
    t.db()
        .await
        .collection::<Document>("offsets")
        .delete_many(doc! {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = t.run(&[]);
    let warned = second
        .logged(
            "will be taken for published and not sent",
            Duration::from_secs(60),
        )
        .await;
    let log = second.log_tail(40);
    assert_eq!(second.stop(), Some(0));
    assert!(warned, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_of_another_topology_is_refused_at_start() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    t.store().await;
    // another topology (here: the same one renamed) pointed at the database
    let owner = t.topology.name.clone();
    let other = format!("{owner}-other");
    edit(
        &t,
        &format!("name = \"{owner}\""),
        &format!("name = \"{other}\""),
    );
    let mut refused = t.run(&[]);
    let status = refused.wait_exit(Duration::from_secs(90));
    let log = refused.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(78), "{log}");
    assert!(
        log.contains(&format!(
            "belongs to topology `{owner}`, not `{other}`: each topology needs a database of its own"
        )),
        "{log}"
    );
    // a rename, adopted as the refusal says: the database is the new name's
    t.db()
        .await
        .collection::<Document>("outflow_meta")
        .update_one(
            doc! { "_id": "database" },
            doc! { "$set": { "topology": &other } },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let adopted = t.run(&[]);
    let running = adopted
        .logged("outflow running", Duration::from_secs(60))
        .await;
    let log = adopted.log_tail(20);
    assert_eq!(adopted.stop(), Some(0), "{log}");
    assert!(running, "{log}");
}
