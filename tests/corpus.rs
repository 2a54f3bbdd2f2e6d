//! Nasty topology files (`outflow validate` exits 0 or 78 with file:line:col, never a panic) and
//! the fuzz corpora (Avro decode, ingress JSON) replayed in process. Bad input to a running
//! process is in `bad_input.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use outflow::schema::codec;
use outflow::schema::json::{avro_to_json, json_to_avro};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Files of a corpus directory, sorted (an absent directory is empty).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Hand-made nasty topologies too big to commit, written next to the committed ones at test time.
fn generated_topologies() -> Vec<(&'static str, Vec<u8>)> {
    let base = std::fs::read_to_string(format!("{ROOT}/topology.toml"))
        .unwrap_or_else(|e| panic!("topology.toml: {e}"));
    let deep_array = format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let deep_table = format!("x = {}1{}\n", "{a = ".repeat(100_000), "}".repeat(100_000));
    let deep_jq = base.replace(
        "when = '.meta.type == \"QuoteRequested\"'",
        &format!("when = '{}.{}'", "(".repeat(100_000), ")".repeat(100_000)),
    );
    let deep_jq_array = base.replace(
        "when = '.meta.type == \"QuoteRequested\"'",
        &format!("when = '{}1{}'", "[".repeat(100_000), "]".repeat(100_000)),
    );
    let huge_string = format!("[topology]\nname = \"{}\"\n", "n".repeat(10 << 20));
    let many_tables = "[[sources]]\nname = \"s\"\n".repeat(50_000);
    let long_key = format!("{} = 1\n", "k".repeat(1 << 20));
    vec![
        ("deep_array.toml", deep_array.into_bytes()),
        ("deep_inline_table.toml", deep_table.into_bytes()),
        ("deep_jq_parens.toml", deep_jq.into_bytes()),
        ("deep_jq_arrays.toml", deep_jq_array.into_bytes()),
        ("huge_string.toml", huge_string.into_bytes()),
        ("many_tables.toml", many_tables.into_bytes()),
        ("long_key.toml", long_key.into_bytes()),
    ]
}

/// Every topology corpus file: committed nasties, the fuzz seeds and regressions, the broken
/// diagnostics files, and the generated ones.
fn topology_corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in [
        "tests/corpus/topologies",
        "fuzz/seeds/topology_parse",
        "fuzz/regressions/topology_parse",
        "tests/topologies",
        "tests/topologies/broken",
    ] {
        for f in files(&Path::new(ROOT).join(dir)) {
            if f.extension().is_some_and(|e| e == "avsc") {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            out.push((
                format!("{dir}/{}", f.file_name().unwrap_or_default().display()),
                bytes,
            ));
        }
    }
    for (name, bytes) in generated_topologies() {
        out.push((format!("generated/{name}"), bytes));
    }
    out
}

#[test]
fn outflow_validate_never_panics_on_a_nasty_topology() {
    // each file is validated from a directory where `schemas/` resolves, as the fuzz target does
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(format!("{ROOT}/schemas"), dir.path().join("schemas"))
        .unwrap_or_else(|e| panic!("{e}"));
    let corpus = topology_corpus();
    assert!(
        corpus.len() > 40,
        "the corpus is there: {} files",
        corpus.len()
    );
    let mut failures = Vec::new();
    for (name, bytes) in &corpus {
        let file = dir.path().join("case.toml");
        std::fs::write(&file, bytes).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(env!("CARGO_BIN_EXE_outflow"))
            .args(["validate"])
            .arg(&file)
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => {}
            Some(78) => {
                let located = text.lines().any(|l| {
                    l.split_once("case.toml:").is_some_and(|(_, rest)| {
                        let mut parts = rest.splitn(3, ':');
                        parts.next().is_some_and(|l| l.parse::<usize>().is_ok())
                            && parts.next().is_some_and(|c| c.parse::<usize>().is_ok())
                    })
                });
                if !located {
                    failures.push(format!("{name}: exit 78 without file:line:col:\n{text}"));
                }
            }
            other => failures.push(format!(
                "{name}: exit {other:?} (101 = panic, None = signal):\n{}",
                text.chars().take(2000).collect::<String>()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------- fuzz corpora, in process

/// The `avro_decode` seeds and regressions through the testkit's decode + stage path: never a
/// panic, never an error (an in-memory registry is never unavailable). Byte 0 picks the record's
/// shape as in `fuzz/fuzz_targets/avro_decode.rs` (tombstones are covered by the stack test).
#[test]
fn avro_decode_corpus_replays_without_panics() {
    let mut driver = outflow::testkit::TopologyTestDriver::new(format!("{ROOT}/topology.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut count = 0;
    for dir in ["fuzz/seeds/avro_decode", "fuzz/regressions/avro_decode"] {
        for f in files(&Path::new(ROOT).join(dir)) {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{e}"));
            let Some((&shape, value)) = data.split_first() else {
                continue;
            };
            let topic = if shape & 1 == 0 {
                "quote-events"
            } else {
                "enrollment-events"
            };
            let key: &[u8] = if shape & 2 != 0 { b"\xffq\xfe1" } else { b"q1" };
            let id = (shape & 8 != 0).then_some("fuzz-event");
            driver
                .pipe_raw(topic, Some(key), value, id)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            count += 1;
        }
    }
    assert!(count >= 10, "{count} seeds");
    assert!(
        !driver.dead_letters().is_empty() && !driver.outputs("entity-updates").is_empty(),
        "the seeds hold both good and bad records"
    );
}

/// The `ingress_json` seeds and regressions: whatever JSON → Avro accepts encodes and decodes back.
#[test]
fn ingress_json_corpus_round_trips() {
    let topology =
        outflow::config::load_with(&Path::new(ROOT).join("topology.toml"), &|_| None, &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .topology;
    let mut accepted = 0;
    for dir in ["fuzz/seeds/ingress_json", "fuzz/regressions/ingress_json"] {
        for f in files(&Path::new(ROOT).join(dir)) {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{e}"));
            let Some((&route, body)) = data.split_first() else {
                continue;
            };
            let route = &topology.ingress[usize::from(route) % topology.ingress.len()];
            let Ok(event) = serde_json::from_slice::<Value>(body) else {
                continue;
            };
            let Ok(avro) = json_to_avro(&event, &route.schema.schema) else {
                continue;
            };
            let json = avro_to_json(&avro);
            let framed = codec::encode(1, &route.schema.schema, avro)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let (id, body) = codec::split_frame(&framed).unwrap_or_else(|e| panic!("{e}"));
            let back = codec::decode(id, &route.schema.schema, &route.schema.schema, body)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(avro_to_json(&back), json, "{}", f.display());
            accepted += 1;
        }
    }
    assert!(accepted >= 4, "{accepted} seeds were accepted");
}
