//! `outflow schemas check|register` against the real registry and against git revisions.

use std::path::Path;
use std::process::Command;

fn outflow(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn schema(fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"Thing","namespace":"it.schemas","doc":"test","fields":[{{"name":"id","type":"string"}}{fields}]}}"#
    )
}

/// A topology with one source whose schema file lives in `dir` (so tests can change it).
fn project(dir: &Path, topic: &str, fields: &str) {
    std::fs::create_dir_all(dir.join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("schemas/Thing.avsc"), schema(fields))
        .unwrap_or_else(|e| panic!("{e}"));
    let topology = format!(
        r#"[kafka]
brokers = "${{OUTFLOW_KAFKA_BROKERS:-127.0.0.1:29092}}"
[registry]
url = "${{OUTFLOW_REGISTRY_URL:-http://127.0.0.1:28081/apis/ccompat/v7}}"
compatibility = "BACKWARD"
[mongo]
uri = "${{OUTFLOW_MONGO_URI:-mongodb://127.0.0.1:28017/?replicaSet=secantus}}"
database = "schemas"
[[sources]]
name = "things"
topic = "{topic}"
schemas = ["schemas/Thing.avsc"]
key = "id"
dlq = "{topic}.dlq"
[[entities]]
name = "thing"
[[stages]]
name = "thing"
source = "things"
entity = {{ kind = "thing", id = ".event.id" }}
state = ".event"
"#
    );
    std::fs::write(dir.join("topology.toml"), topology).unwrap_or_else(|e| panic!("{e}"));
}

fn set_schema(dir: &Path, fields: &str) {
    std::fs::write(dir.join("schemas/Thing.avsc"), schema(fields))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn unique_topic() -> String {
    format!("schemas-{}", uuid::Uuid::now_v7().simple())
}

#[test]
fn registry_checks_pass_compatible_and_name_the_breaking_field() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let topic = unique_topic();
    project(d, &topic, "");
    let (code, out) = outflow(d, &["schemas", "register", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("would register  {topic}-value")),
        "{out}"
    );
    let (code, out) = outflow(d, &["schemas", "register"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("registered") && out.contains("level BACKWARD"),
        "{out}"
    );
    let (code, out) = outflow(d, &["schemas", "register"]);
    assert!(
        code == 0 && out.contains("unchanged"),
        "registering twice changes nothing: {out}"
    );

    set_schema(d, r#",{"name":"venue","type":"string","default":"X"}"#);
    let (code, out) = outflow(d, &["schemas", "check"]);
    assert_eq!(
        code, 0,
        "a field with a default is a compatible change: {out}"
    );
    set_schema(d, r#",{"name":"premium","type":"double"}"#);
    let (code, out) = outflow(d, &["schemas", "check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("field `premium` added without a default"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{topic}-value")),
        "the subject is named: {out}"
    );

    let (code, xml) = outflow(d, &["schemas", "check", "--format", "junit"]);
    assert_eq!(code, 1);
    let xml = xml
        .lines()
        .filter(|l| !l.starts_with("warning"))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let cases: Vec<_> = parsed
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 1, "one testcase per subject");
    assert_eq!(
        cases[0].attribute("name"),
        Some(format!("{topic}-value").as_str())
    );
    assert!(cases[0].children().any(|c| c.has_tag_name("failure")));
}

#[test]
fn transitive_levels_catch_what_the_latest_version_hides() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    project(d, &unique_topic(), r#",{"name":"x","type":"string"}"#);
    assert_eq!(outflow(d, &["schemas", "register"]).0, 0);
    set_schema(d, "");
    let (code, out) = outflow(d, &["schemas", "register"]);
    assert_eq!(code, 0, "dropping a field is backward compatible: {out}");
    set_schema(d, r#",{"name":"x","type":"int","default":0}"#);
    let (code, out) = outflow(d, &["schemas", "check", "--level", "BACKWARD"]);
    assert_eq!(code, 0, "against the latest version only, it passes: {out}");
    let (code, out) = outflow(d, &["schemas", "check", "--level", "BACKWARD_TRANSITIVE"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("field `x`") && out.contains("version 1"),
        "{out}"
    );
}

#[test]
fn git_mode_compares_with_a_revision_offline() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    project(d, "offline-things", "");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(d)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "v1",
    ]);
    set_schema(d, r#",{"name":"premium","type":"double"}"#);
    let (code, out) = outflow(d, &["schemas", "check", "--against", "git:HEAD"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("field `premium` added without a default") && out.contains("git HEAD"),
        "{out}"
    );
    set_schema(d, r#",{"name":"premium","type":"double","default":0.0}"#);
    let (code, out) = outflow(
        d,
        &[
            "schemas",
            "check",
            "--against",
            "git:HEAD",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["incompatible"], 0);
    let (code, out) = outflow(d, &["schemas", "check", "--against", "svn:1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--against must be"), "{out}");
}
