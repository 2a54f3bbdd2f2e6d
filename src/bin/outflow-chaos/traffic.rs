//! The steady stream into the source topic, and a live reader of the output that tracks progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use outflow::config::Topology;
use outflow::schema::codec;
use outflow::schema::json::json_to_avro;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

/// The stream's shape: `events` events over `keys` keys, event `n` for key `n % keys`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub events: usize,
    pub keys: usize,
    pub partitions: usize,
}

impl Shape {
    pub fn key(&self, n: usize) -> String {
        format!("k{}", n % self.keys)
    }

    /// 1, 2, 3... per key, in production order.
    pub fn seq(&self, n: usize) -> i64 {
        (n / self.keys) as i64 + 1
    }
}

/// The event id of event `n` of run `prefix`, and back.
pub fn event_id(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n}")
}

pub fn event_number(prefix: &str, id: &str) -> Option<usize> {
    id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

/// What the producer and the live reader know, shared with the fault runner.
pub struct Progress {
    /// Source partition of event n once the broker acknowledged it (-1 before).
    partition_of: Vec<AtomicI32>,
    /// Per source partition: highest event number acknowledged / seen on the output.
    acked: Vec<AtomicI64>,
    seen: Vec<AtomicI64>,
    pub produced: AtomicUsize,
    pub output_records: AtomicUsize,
    pub producing_done: AtomicBool,
    pub stop_reading: AtomicBool,
}

impl Progress {
    pub fn new(shape: Shape) -> Arc<Self> {
        Arc::new(Self {
            partition_of: (0..shape.events).map(|_| AtomicI32::new(-1)).collect(),
            acked: (0..shape.partitions).map(|_| AtomicI64::new(-1)).collect(),
            seen: (0..shape.partitions).map(|_| AtomicI64::new(-1)).collect(),
            produced: AtomicUsize::new(0),
            output_records: AtomicUsize::new(0),
            producing_done: AtomicBool::new(false),
            stop_reading: AtomicBool::new(false),
        })
    }

    /// The acknowledged frontier now: what the output must reach to count as recovered.
    pub fn frontier(&self) -> Vec<i64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    /// True when, on every partition, the output shows an event at or past `frontier`.
    pub fn reached(&self, frontier: &[i64]) -> bool {
        frontier
            .iter()
            .zip(&self.seen)
            .all(|(f, s)| s.load(Ordering::SeqCst) >= *f)
    }

    fn acknowledged(&self, n: usize, partition: i32) {
        if let (Some(slot), Some(acked)) =
            (self.partition_of.get(n), self.acked.get(partition as usize))
        {
            slot.store(partition, Ordering::SeqCst);
            acked.fetch_max(n as i64, Ordering::SeqCst);
        }
    }

    fn output_seen(&self, n: usize) {
        self.output_records.fetch_add(1, Ordering::SeqCst);
        let partition = self.partition_of.get(n).map(|p| p.load(Ordering::SeqCst));
        if let Some(seen) = partition
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| self.seen.get(p))
        {
            seen.fetch_max(n as i64, Ordering::SeqCst);
        }
    }
}

/// Produces the whole stream at `rate` events/s (idempotent producer, acks=all); an event whose
/// delivery fails is sent again with the same event id, which outflow must treat as a no-op.
///
/// Bounded: after a failed delivery the producer is rebuilt (a client wedged by a broker restart
/// must not stall the run), and when no event has been delivered for `stall_limit` while some
/// are failing, it gives up with the last error instead of resending for ever.
pub async fn produce(
    topology: &Topology,
    schema_id: u32,
    prefix: &str,
    shape: Shape,
    rate: f64,
    stall_limit: Duration,
    progress: Arc<Progress>,
) -> anyhow::Result<usize> {
    let source = &topology.sources[0];
    let schema = &source.schemas[0].schema;
    let new_producer = || -> anyhow::Result<FutureProducer> {
        Ok(outflow::kafka_client::producer_config(&topology.kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?)
    };
    let encode = |n: usize| -> anyhow::Result<Vec<u8>> {
        let event =
            json!({"eventId": event_id(prefix, n), "key": shape.key(n), "seq": shape.seq(n)});
        let avro = json_to_avro(&event, schema).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(codec::encode(schema_id, schema, avro)?)
    };
    // each send carries the generation of the producer it went through
    let send = |n: usize, value: Vec<u8>, producer: &FutureProducer, generation: usize| {
        let producer = producer.clone();
        let key = shape.key(n);
        let topic = source.topic.clone();
        async move {
            let record = FutureRecord::to(&topic).key(&key).payload(&value);
            let result = producer.send(record, Duration::from_secs(40)).await;
            (n, generation, result)
        }
    };
    let mut producer = new_producer()?;
    let mut generation = 0;
    let started = Instant::now();
    let mut last_delivered = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut resent = 0;
    for n in 0..=shape.events {
        if n < shape.events {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            in_flight.push(send(n, encode(n)?, &producer, generation));
            progress.produced.store(n + 1, Ordering::SeqCst);
        }
        // collect deliveries: block while too many are open, and at the end until all are in
        loop {
            let wait = in_flight.len() > 5_000 || n == shape.events;
            let next = if wait {
                in_flight.next().await
            } else {
                match in_flight.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            };
            let Some((n, sent_by, result)) = next else {
                break;
            };
            match result {
                Ok(delivery) => {
                    last_delivered = Instant::now();
                    progress.acknowledged(n, delivery.partition);
                }
                Err((e, _)) => {
                    anyhow::ensure!(
                        last_delivered.elapsed() < stall_limit,
                        "no event reached the source topic `{}` for {} s (event {n}: {e}); \
                         is the broker at {} up?",
                        source.topic,
                        last_delivered.elapsed().as_secs(),
                        topology.kafka.brokers
                    );
                    if sent_by == generation {
                        generation += 1;
                        producer = new_producer()?;
                        eprintln!(
                            "chaos: delivery of event {n} failed ({e}); a new producer sends it \
                             and the others that fail again"
                        );
                    }
                    resent += 1;
                    in_flight.push(send(n, encode(n)?, &producer, generation));
                }
            }
        }
    }
    progress.producing_done.store(true, Ordering::SeqCst);
    Ok(resent)
}

/// Reads the output topic read_committed from the start until told to stop, marking progress.
pub fn read_live(topology: &Topology, prefix: &str, progress: &Progress) -> anyhow::Result<()> {
    let output = &topology.topics[0];
    let consumer: BaseConsumer = outflow::kafka_client::consumer_config(&topology.kafka)
        .set("group.id", format!("{prefix}-chaos-live-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..output.partitions {
        assignment.add_partition_offset(&output.name, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    drop(assignment); // no list may outlive the consumer (rd_kafka_destroy hangs otherwise)
    let schema = &output.schema.schema;
    while !progress.stop_reading.load(Ordering::SeqCst) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let n = message
            .payload()
            .and_then(|bytes| crate::checker::decode_update(schema, bytes))
            .and_then(|u| event_number(prefix, &u.event_id));
        if let Some(n) = n {
            progress.output_seen(n);
        }
    }
    Ok(())
}
