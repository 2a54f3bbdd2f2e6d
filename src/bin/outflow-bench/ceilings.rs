//! The raw ceilings: what Mongo and Kafka do on this machine with no outflow in between.

use std::time::{Duration, Instant};

use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::{InsertOneModel, ReplaceOneModel, WriteModel};
use mongodb::{Client, Namespace};
use outflow::store::documents::{self, EventLogEntry, OutboxEntry};
use outflow::store::outbox;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::json;

use crate::cleanup;

/// Batch transactions of `batch` events, each an event-log insert, an entity upsert and an outbox
/// record (the documents outflow writes: the batch's records in one outbox page), plus the
/// offsets update, in one `bulkWrite` per transaction: events/s. With `indexes`, the collections
/// carry outflow's secondary index too (the event log's entity/version index).
pub async fn mongo(uri: &str, batch: usize, events: usize, indexes: bool) -> anyhow::Result<f64> {
    let client = Client::with_uri_str(uri).await?;
    let db_name = format!("bench_raw_{}", uuid::Uuid::now_v7().simple());
    let db = client.database(&db_name);
    for c in ["event_log", "account", "outbox", "offsets"] {
        db.create_collection(c).await?;
    }
    if indexes {
        outflow::store::create_indexes(&db).await?;
    }
    let payload = json!({"notes": "x".repeat(900), "amount": 1.5});
    let state = json!({"count": 1, "total": 1.5});
    let mut session = client.start_session().await?;
    let started = Instant::now();
    let mut seq = 0i64;
    for chunk in 0..events.div_ceil(batch) {
        let mut models: Vec<WriteModel> = Vec::with_capacity(batch * 2 + 1);
        let mut outbox = Vec::with_capacity(batch);
        for i in 0..batch {
            let n = chunk * batch + i;
            let id = format!("e{n}");
            let entity = format!("acc{}", n % 10_000);
            seq += 1;
            let entry = EventLogEntry {
                event_id: &id,
                entity_kind: "account",
                entity_id: &entity,
                event_type: "BenchEvent",
                payload: &payload,
                schema_id: 1,
                subject: "s",
                topic: "t",
                partition: 0,
                offset: n as i64,
                version: 1,
                key: Some(&entity),
                timestamp: None,
            };
            models.push(
                InsertOneModel::builder()
                    .namespace(Namespace::new(&db_name, "event_log"))
                    .document(documents::event_log_doc(&entry, DateTime::now()))
                    .build()
                    .into(),
            );
            models.push(
                ReplaceOneModel::builder()
                    .namespace(Namespace::new(&db_name, "account"))
                    .filter(doc! { "_id": &entity })
                    .replacement(documents::entity_doc(
                        &entity,
                        &state,
                        1,
                        &id,
                        DateTime::now(),
                    ))
                    .upsert(true)
                    .build()
                    .into(),
            );
            outbox.push(documents::outbox_doc(OutboxEntry {
                id: uuid::Uuid::now_v7().to_string(),
                aggregate_type: "account",
                aggregate_id: &entity,
                event_type: "BenchUpdated",
                topic: "t",
                key: None,
                payload: Some(vec![0u8; 64]),
                event_id: &id,
                headers: &[],
                seq,
            }));
        }
        for page in outbox::pages("t:0", outbox, DateTime::now()) {
            models.push(
                InsertOneModel::builder()
                    .namespace(Namespace::new(&db_name, "outbox"))
                    .document(page)
                    .build()
                    .into(),
            );
        }
        session.start_transaction().await?;
        // the offsets write, as a command of its own: the driver sends the transaction's read
        // concern with its first command, and SecantusDB refuses it on `bulkWrite`, so a batch
        // transaction takes at least three round trips (outflow's first one is a read it needs)
        db.collection::<Document>("offsets")
            .update_one(
                doc! { "_id": "bench/0" },
                doc! { "$set": { "nextOffset": seq } },
            )
            .upsert(true)
            .session(&mut session)
            .await?;
        client.bulk_write(models).session(&mut session).await?;
        session.commit_transaction().await?;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let _ = db.drop().await;
    Ok(rate)
}

/// A new topic of `partitions` partitions and a transactional producer ready to write to it.
async fn fresh_topic_and_producer(
    brokers: &str,
    name: &str,
    partitions: i32,
) -> anyhow::Result<(String, FutureProducer)> {
    let topic = format!("{name}-{}", uuid::Uuid::now_v7().simple());
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
    outflow::topics::create(
        &admin,
        &[outflow::topics::TopicSpec::new(&topic, partitions)],
        1,
    )
    .await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "transactional.id",
            format!("{name}-{}", uuid::Uuid::now_v7()),
        )
        .set("linger.ms", "5")
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    Ok((topic, producer))
}

/// A transactional producer sending `records` records of `size` bytes, 1,000 per transaction: records/s.
pub async fn kafka(brokers: &str, records: usize, size: usize) -> anyhow::Result<f64> {
    let (topic, producer) = fresh_topic_and_producer(brokers, "bench-raw", 6).await?;
    let rate = send_in_transactions(&topic, &producer, records, size).await;
    drop(producer);
    cleanup::delete_topics_at(brokers, &[topic]).await;
    rate
}

/// Sends `records` records of `size` bytes to `topic`, 1,000 per transaction: records/s.
async fn send_in_transactions(
    topic: &str,
    producer: &FutureProducer,
    records: usize,
    size: usize,
) -> anyhow::Result<f64> {
    let value = vec![7u8; size];
    let started = Instant::now();
    for chunk in 0..records.div_ceil(1000) {
        producer.begin_transaction()?;
        let mut deliveries = Vec::with_capacity(1000);
        for i in 0..1000 {
            let key = format!("acc{}", (chunk * 1000 + i) % 10_000);
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                Ok(d) => deliveries.push(d),
                Err((e, _)) => return Err(e.into()),
            }
        }
        for d in deliveries {
            if let Ok(Err((e, _))) = d.await {
                return Err(e.into());
            }
        }
        outflow::relay::reports_served(producer, Duration::from_secs(5)).await;
        producer.commit_transaction(Duration::from_secs(30))?;
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

/// The Kafka floor under the relay's share of latency: `txns` transactions of one record each,
/// one every 20 ms, each committed as soon as it is delivered, and a read_committed reader.
/// Returns each record's send → visible in ms: what no relay on this broker can beat.
pub async fn kafka_visibility(brokers: &str, txns: usize) -> anyhow::Result<Vec<i64>> {
    let (topic, producer) = fresh_topic_and_producer(brokers, "bench-visible", 1).await?;
    let seen = commit_and_read(brokers, &topic, &producer, txns).await;
    drop(producer);
    cleanup::delete_topics_at(brokers, &[topic]).await;
    seen
}

/// [`kafka_visibility`] on its topic and producer.
async fn commit_and_read(
    brokers: &str,
    topic: &str,
    producer: &FutureProducer,
    txns: usize,
) -> anyhow::Result<Vec<i64>> {
    let (reader_brokers, reader_topic) = (brokers.to_string(), topic.to_string());
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i64>> {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &reader_brokers)
            .set(
                "group.id",
                format!("bench-visible-{}", uuid::Uuid::now_v7()),
            )
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&reader_topic, 0, rdkafka::Offset::Beginning)?;
        rdkafka::consumer::Consumer::assign(&consumer, &tpl)?;
        drop(tpl);
        let mut seen = Vec::with_capacity(txns);
        let deadline = Instant::now() + Duration::from_secs(60 + txns as u64 / 10);
        while seen.len() < txns && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
                && let Some(sent) = rdkafka::Message::timestamp(&m).to_millis()
            {
                seen.push(outflow::source::decode::chrono_millis() - sent);
            }
        }
        drop(consumer);
        Ok(seen)
    });
    tokio::time::sleep(Duration::from_secs(2)).await; // the reader is assigned
    for _ in 0..txns {
        producer.begin_transaction()?;
        let delivery = producer
            .send_result(FutureRecord::to(topic).key("k").payload(&[7u8; 100][..]))
            .map_err(|(e, _)| e)?;
        if let Ok(Err((e, _))) = delivery.await {
            return Err(e.into());
        }
        outflow::relay::reports_served(producer, Duration::from_secs(5)).await;
        producer.commit_transaction(Duration::from_secs(30))?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.await?
}
