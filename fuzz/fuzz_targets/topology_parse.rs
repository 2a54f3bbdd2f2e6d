//! Fuzz target: arbitrary bytes as a topology file, through what `outflow validate` does offline —
//! UTF-8 check, TOML parse, every validation (schema files resolve against the repository root, jq
//! programs compile), diagnostics rendered as text and JSON — and, for a topology that passes, what
//! `outflow graph` and `outflow serve` derive from it (the graph, the OpenAPI document).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use outflow::config::{ConfigError, Context, parse_bytes};

fuzz_target!(|data: &[u8]| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = |name: &str| (name == "OUTFLOW_FUZZ_SET").then(|| "value".to_string());
    let ctx = Context {
        base_dir: &root,
        env: &env,
        custom_stages: &["custom".to_string()],
    };
    let file = root.join("fuzz.toml");
    match parse_bytes(&file, data, &ctx) {
        Ok(loaded) => {
            let t = &loaded.topology;
            for d in &loaded.diagnostics {
                let _ = d.to_string();
            }
            let _ = outflow::graph::render(t, outflow::graph::GraphFormat::Mermaid);
            let _ = outflow::graph::render(t, outflow::graph::GraphFormat::Dot);
            let _ = outflow::openapi::document(t);
            let _ = outflow::health::redact_uri(&t.mongo.uri);
            let _ = t.subjects();
        }
        Err(ConfigError::Invalid { diagnostics, .. }) => {
            assert!(
                diagnostics
                    .iter()
                    .any(|d| d.severity == outflow::config::Severity::Error),
                "an invalid topology names at least one error"
            );
            for d in &diagnostics {
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                let _ = d.to_string();
            }
            let _ = serde_json::to_string(&diagnostics);
        }
        Err(e) => panic!("parsing text never fails to read: {e}"),
    }
});
