//! Broken topology files, one per diagnostic: exact code and line:col, all problems at once, exit codes.

use std::path::Path;
use std::process::Command;

use outflow::config::{self, ConfigError, Diagnostic};

/// Validates a file with an environment that has no variables, so results never depend on the shell.
fn diagnostics(file: &str) -> (bool, Vec<Diagnostic>) {
    let env = |_: &str| None;
    match config::load_with(Path::new(file), &env, &[]) {
        Ok(loaded) => (true, loaded.diagnostics),
        Err(ConfigError::Invalid { diagnostics, .. }) => (false, diagnostics),
        Err(e) => panic!("{file}: {e}"),
    }
}

fn codes_at(file: &str) -> Vec<(String, usize, usize)> {
    diagnostics(file)
        .1
        .into_iter()
        .map(|d| (d.code.to_string(), d.line, d.column))
        .collect()
}

const BROKEN: &[(&str, &str, usize, usize)] = &[
    ("e001_syntax", "E001", 23, 20),
    ("e002_wrong_type", "E002", 15, 14),
    ("e003_unknown_key", "E003", 4, 1),
    ("e003_kafka_property", "E003", 4, 38),
    ("e004_missing_key", "E004", 22, 1),
    ("e005_duplicate_name", "E005", 23, 8),
    ("e006_unknown_source", "E006", 24, 10),
    ("e007_unknown_entity", "E007", 25, 19),
    ("e008_unknown_topic", "E008", 28, 9),
    ("e009_schema_not_found", "E009", 15, 12),
    ("e010_schema_invalid", "E010", 15, 12),
    ("e011_jq_invalid", "E011", 26, 19),
    ("e012_cycle", "E012", 28, 9),
    ("e013_env_missing", "E013", 3, 11),
    ("e014_inline_secret", "E014", 4, 34),
    ("e015_invalid_value", "E015", 7, 17),
    ("e015_kafka_property_value", "E015", 4, 30),
    ("e016_subject_strategy", "E016", 16, 20),
    ("e017_unknown_stage_kind", "E017", 26, 8),
    ("w001_entity_id_not_key", "W001", 25, 33),
    ("w002_unused", "W002", 23, 8),
    ("i001_dlq_default", "I001", 12, 1),
];

#[test]
fn each_broken_file_reports_exactly_its_diagnostic() {
    for (name, code, line, col) in BROKEN {
        let file = format!("tests/topologies/broken/{name}.toml");
        assert_eq!(
            codes_at(&file),
            vec![(code.to_string(), *line, *col)],
            "{file}"
        );
        let (valid, _) = diagnostics(&file);
        assert_eq!(
            valid,
            !code.starts_with('E'),
            "{file}: only errors make a topology invalid"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    assert_eq!(
        codes_at("tests/topologies/broken/many_problems.toml"),
        vec![
            ("E003".to_string(), 4, 1),
            ("E009".to_string(), 16, 12),
            ("E006".to_string(), 25, 10),
            ("E007".to_string(), 26, 19),
            ("E011".to_string(), 27, 19),
        ]
    );
}

#[test]
fn messages_name_the_problem_and_suggest_a_fix() {
    let (_, d) = diagnostics("tests/topologies/broken/e003_unknown_key.toml");
    assert_eq!(
        d[0].to_string(),
        "tests/topologies/broken/e003_unknown_key.toml:4:1: error[E003]: unknown key `group_ip`\n  at `kafka.group_ip`\n  hint: did you mean `group_id`?"
    );
    let (_, d) = diagnostics("tests/topologies/broken/e012_cycle.toml");
    assert_eq!(
        d[0].message,
        "stages feed each other in a cycle: quote-state → audit-state → quote-state"
    );
    let (_, d) = diagnostics("tests/topologies/broken/e011_jq_invalid.toml");
    assert_eq!(
        d[0].message,
        "jq program does not compile: undefined filter `nosuchfn`"
    );
}

#[test]
fn the_shipped_topologies_are_valid_and_quiet() {
    for file in ["topology.toml", "tests/topologies/minimal.toml"] {
        let (valid, found) = diagnostics(file);
        assert!(valid, "{file}");
        assert!(found.is_empty(), "{file}: {found:?}");
    }
}

fn outflow(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(args)
        .env_remove("OUTFLOW_KAFKA_BROKERS")
        .output()
        .unwrap_or_else(|e| panic!("cannot run outflow: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_exit_codes() {
    let (code, stdout, _) = outflow(&["validate", "topology.toml"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("topology `insurance`"), "{stdout}");
    assert!(
        stdout.contains("0 error(s), 0 warning(s), 0 note(s)"),
        "{stdout}"
    );
    let (code, stdout, _) = outflow(&["validate", "tests/topologies/broken/many_problems.toml"]);
    assert_eq!(code, 78, "{stdout}");
    assert!(stdout.contains("5 error(s)"), "{stdout}");
    let (code, _, _) = outflow(&[
        "validate",
        "tests/topologies/broken/w001_entity_id_not_key.toml",
    ]);
    assert_eq!(code, 0, "a warning alone passes");
    let (code, _, _) = outflow(&[
        "validate",
        "--deny-warnings",
        "tests/topologies/broken/w001_entity_id_not_key.toml",
    ]);
    assert_eq!(code, 78, "--deny-warnings fails on a warning");
    let (code, _, stderr) = outflow(&["validate", "--format", "yaml"]);
    assert_eq!(code, 2, "usage error: {stderr}");
    let (code, _, stderr) = outflow(&["validate", "no/such/topology.toml"]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("no/such/topology.toml"), "{stderr}");
}

#[test]
fn validate_json_lists_every_diagnostic() {
    let (code, stdout, _) = outflow(&[
        "validate",
        "--format",
        "json",
        "tests/topologies/broken/many_problems.toml",
    ]);
    assert_eq!(code, 78);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let codes: Vec<&str> = report["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert_eq!(codes, vec!["E003", "E009", "E006", "E007", "E011"]);
    assert_eq!(report["diagnostics"][0]["line"], 4);
}

#[test]
fn graph_matches_its_snapshot() {
    let (code, mermaid, stderr) = outflow(&["graph", "--format", "mermaid", "topology.toml"]);
    assert_eq!(code, 0, "{stderr}");
    let expected = std::fs::read_to_string("tests/snapshots/topology.mmd").unwrap_or_default();
    if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
        let _ = std::fs::write("tests/snapshots/topology.mmd", &mermaid);
    } else {
        assert_eq!(
            mermaid, expected,
            "run with UPDATE_SNAPSHOTS=1 to accept a deliberate change"
        );
    }
    // every edge joins declared nodes, and node ids are valid Mermaid identifiers
    let nodes: Vec<&str> = mermaid
        .lines()
        .skip(1)
        .filter(|l| l.contains("["))
        .filter_map(|l| l.trim().split(['[', '(']).next())
        .collect();
    for line in mermaid.lines().filter(|l| l.contains("-->")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (from, to) = (parts[0], parts[parts.len() - 1]);
        assert!(
            nodes.contains(&from) && nodes.contains(&to),
            "edge to an undeclared node: {line}"
        );
    }
    assert!(
        nodes
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    );
    let (code, dot, _) = outflow(&["graph", "--format", "dot", "topology.toml"]);
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph \"insurance\" {") && dot.trim_end().ends_with('}'));
}

/// `tests/topologies/minimal.toml` with `line` added to its `[mongo]` table.
fn minimal_with_mongo_line(line: &str) -> Result<config::Loaded, ConfigError> {
    let file = Path::new("tests/topologies/minimal.toml");
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
    let text = text.replacen(
        "database = \"minimal\"",
        &format!("database = \"minimal\"\n{line}"),
        1,
    );
    let env = |_: &str| None;
    let ctx = config::Context {
        base_dir: Path::new("tests/topologies"),
        env: &env,
        custom_stages: &[],
    };
    config::parse(file, &text, &ctx)
}

#[test]
fn concurrent_batches_default_is_read_and_bounded() {
    let loaded = minimal_with_mongo_line("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.topology.mongo.max_concurrent_batches,
        config::MongoSettings::DEFAULT_CONCURRENT_BATCHES
    );
    let loaded =
        minimal_with_mongo_line("max_concurrent_batches = 3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.topology.mongo.max_concurrent_batches, 3);
    match minimal_with_mongo_line("max_concurrent_batches = 0") {
        Err(ConfigError::Invalid { diagnostics, .. }) => {
            let d = &diagnostics[0];
            assert_eq!(
                (d.code, d.path.as_str(), d.line),
                ("E015", "mongo.max_concurrent_batches", 11)
            );
            assert!(d.message.contains("expected 1 to"), "{}", d.message);
        }
        other => panic!("0 must be refused: {:?}", other.err()),
    }
}
