//! Keys land in the partitions Java clients (and so Kafka Streams) put them in: murmur2, Kafka's
//! default partitioner, on the ingress producer and on the relay's output.

mod common;

use std::time::Duration;

use common::{TestTopology, quote_events, read_committed};

/// `Utils.toPositive(Utils.murmur2(key)) % 3`, computed with kafka-clients 4.4.0's `Utils`.
const JAVA_PARTITION_OF_3: [(&str, i32); 12] = [
    ("q00000", 0),
    ("q00001", 0),
    ("q00002", 1),
    ("q00003", 2),
    ("q00004", 0),
    ("q00005", 2),
    ("q00006", 2),
    ("q00007", 2),
    ("q00008", 0),
    ("q00009", 2),
    ("q00010", 0),
    ("q00011", 0),
];

fn java_partition(key: &str) -> Option<i32> {
    JAVA_PARTITION_OF_3
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, p)| *p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_and_relay_put_each_key_where_java_clients_do() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let outflow = t.run(&[]);
    let producer = t.producer();
    let topic = t.topic("quote-events");
    let mut events = 0;
    for quote in 0..JAVA_PARTITION_OF_3.len() {
        for (kind, event) in quote_events(quote) {
            let id = event["eventId"].as_str().unwrap_or_default().to_string();
            let key = event["quoteId"].as_str().unwrap_or_default().to_string();
            let produced = producer
                .produce(&topic, Some(kind), &event, &id)
                .await
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(
                Some(produced.partition),
                java_partition(&key),
                "ingress put {key} in partition {}",
                produced.partition
            );
            events += 1;
        }
    }
    let outputs = read_committed(
        &t.topic("entity-updates"),
        3,
        events,
        Duration::from_secs(90),
        Duration::from_secs(1),
    );
    assert_eq!(outputs.len(), events, "{}", outflow.log_tail(30));
    for record in outputs {
        let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        assert_eq!(
            Some(record.partition),
            java_partition(&key),
            "the relay put {key} in partition {}",
            record.partition
        );
    }
}
