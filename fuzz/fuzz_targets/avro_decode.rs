//! Fuzz target: one source record's bytes through the processor's pure path — Confluent frame split,
//! Avro decode against the demo topology's schemas (an in-memory registry instead of the real one),
//! routing, the jq stages, emit encoding and the Mongo documents — exactly as `outflow run` does it,
//! minus the network.
//!
//! Input: byte 0 picks the record's shape (bit 0: source, bit 1: invalid UTF-8 key, bit 2: tombstone,
//! bit 3: an `outflow.event-id` header); the rest is the record value.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use outflow::config::Topology;
use outflow::schema::codec;
use outflow::schema::registry::{RegistryError, WriterSchemas};
use outflow::source::decode::{RawRecord, decode};
use outflow::stage::StageRunner;
use outflow::stage::fold::{BatchEvent, OutboxItem, fold};
use outflow::store::documents;

struct Schemas(HashMap<u32, Arc<apache_avro::Schema>>);

#[async_trait::async_trait]
impl WriterSchemas for Schemas {
    async fn writer_schema(&self, id: u32) -> Result<Arc<apache_avro::Schema>, RegistryError> {
        self.0.get(&id).cloned().ok_or_else(|| RegistryError {
            message: format!("schema id {id} not found"),
            transient: false,
            not_found: true,
        })
    }
}

struct Fixture {
    topology: Arc<Topology>,
    runner: StageRunner,
    schemas: Schemas,
}

/// The demo topology, with schema ids handed out as the testkit does (source schemas, then emits).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml");
        let loaded = outflow::config::load_with(&path, &|_| None, &[])
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let topology = Arc::new(loaded.topology);
        let mut by_name: HashMap<String, u32> = HashMap::new();
        let mut by_id = HashMap::new();
        let mut emit_ids = HashMap::new();
        let sources = topology.sources.iter().flat_map(|s| &s.schemas);
        let emits = topology.stages.iter().flat_map(|s| &s.emits);
        for schema in sources.chain(emits.clone().map(|e| &e.schema)) {
            let next = by_name.len() as u32 + 1;
            let id = *by_name.entry(schema.full_name.clone()).or_insert(next);
            by_id
                .entry(id)
                .or_insert_with(|| Arc::new(schema.schema.clone()));
        }
        for e in emits {
            emit_ids.insert(
                (e.topic.clone(), e.schema.full_name.clone()),
                by_name[&e.schema.full_name],
            );
        }
        let runner = StageRunner::new(Arc::clone(&topology), HashMap::new(), emit_ids);
        Fixture {
            topology,
            runner,
            schemas: Schemas(by_id),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, value)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let source = &f.topology.sources[usize::from(shape & 1) % f.topology.sources.len()];
    let key: &[u8] = if shape & 2 != 0 { b"\xffq\xfe1" } else { b"q1" };
    let record = RawRecord {
        topic: source.topic.clone(),
        partition: 0,
        offset: 7,
        timestamp: Some(1_700_000_000_000),
        key: Some(key.to_vec()),
        value: (shape & 4 == 0).then(|| value.to_vec()),
        event_id_header: (shape & 8 != 0).then(|| "fuzz-event".to_string()),
    };
    let event = futures::executor::block_on(decode(&record, source, &f.schemas, &f.runner))
        .unwrap_or_else(|e| panic!("an in-memory registry is never unavailable: {e}"));
    if let BatchEvent::Dead(dead) = &event {
        let header = |name: &str| {
            dead.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert!(header("outflow.error.class").is_some_and(|c| !c.is_empty()));
        assert_eq!(header("outflow.source.topic"), Some(source.topic.as_str()));
        assert_eq!(header("outflow.source.offset"), Some("7"));
        if header("outflow.value.omitted").is_none() {
            assert_eq!(
                dead.value, record.value,
                "dead letters keep the original value"
            );
        }
        assert_eq!(dead.key, record.key, "dead letters keep the original key");
    }
    let events = [event];
    let folded = fold(
        &f.runner,
        &events,
        HashSet::new(),
        HashMap::new(),
        (&source.topic, 0),
        &source.dlq_topic,
        0,
    );
    for logged in &folded.logged {
        let _ = documents::to_bson(&logged.event.payload);
    }
    for entity in &folded.entities {
        let _ = documents::to_bson(&entity.state);
    }
    for item in &folded.outbox {
        match item {
            OutboxItem::Record { draft, .. } => {
                // whatever a stage emits was checked against its schema: it must decode back
                let schema = f
                    .topology
                    .output_topic(&draft.topic)
                    .map(|t| &t.schema.schema)
                    .unwrap_or_else(|| panic!("emit to undeclared topic {}", draft.topic));
                let (id, body) = codec::split_frame(&draft.payload)
                    .unwrap_or_else(|e| panic!("emitted record is not framed: {e}"));
                codec::decode(id, schema, schema, body)
                    .unwrap_or_else(|e| panic!("emitted record does not decode: {e}"));
            }
            OutboxItem::Dead(dead) => {
                assert!(dead.value.is_none() || dead.value == record.value);
            }
        }
    }
});
