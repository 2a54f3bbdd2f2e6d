//! Fuzz target: an HTTP ingress body as the ingress reads it — `serde_json` parse, then JSON → Avro
//! against a route's schema in the demo topology. Whatever the conversion accepts must encode and
//! decode back to the same value (else ingress would answer 503 for a client's mistake).
//!
//! Input: byte 0 picks the route (modulo the routes); the rest is the request body.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use outflow::config::Topology;
use outflow::schema::codec;
use outflow::schema::json::{avro_to_json, json_to_avro};

fn topology() -> &'static Arc<Topology> {
    static TOPOLOGY: OnceLock<Arc<Topology>> = OnceLock::new();
    TOPOLOGY.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology.toml");
        let loaded = outflow::config::load_with(&path, &|_| None, &[])
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        Arc::new(loaded.topology)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let t = topology();
    let Some(route) = t.ingress.get(usize::from(route) % t.ingress.len().max(1)) else {
        return;
    };
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let schema = &route.schema.schema;
    let Ok(avro) = json_to_avro(&event, schema) else {
        return;
    };
    let json = avro_to_json(&avro);
    let framed = codec::encode(1, schema, avro)
        .unwrap_or_else(|e| panic!("accepted by json_to_avro but does not encode: {e}\n{event}"));
    let (id, body) = codec::split_frame(&framed).unwrap_or_else(|e| panic!("{e}"));
    let back = codec::decode(id, schema, schema, body)
        .unwrap_or_else(|e| panic!("encoded but does not decode: {e}\n{event}"));
    assert_eq!(avro_to_json(&back), json, "round trip of {event}");
});
