//! `outflow validate`: every diagnostic at once, a summary of the topology, optional online checks.

use std::time::Duration;

use serde_json::json;

use crate::config::{self, ConfigError, Diagnostic, Severity, Topology};
use crate::health;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    topology: super::TopologyArg,
    /// Also check that Kafka, the registry and Mongo answer, and which topics and subjects exist.
    #[arg(long)]
    online: bool,
    /// Treat warnings as errors (exit 78).
    #[arg(long)]
    deny_warnings: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub async fn run(args: Args) -> anyhow::Result<u8> {
    let path = &args.topology.topology;
    let (topology, diagnostics) = match config::load(path) {
        Ok(loaded) => (Some(loaded.topology), loaded.diagnostics),
        Err(ConfigError::Invalid { diagnostics, .. }) => (None, diagnostics),
        Err(e) => return Ok(super::config_failure(&e)),
    };
    let count = |s: Severity| diagnostics.iter().filter(|d| d.severity == s).count();
    let (errors, warnings, notes) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
    );
    let online = match (&topology, args.online) {
        (Some(t), true) => Some(online_checks(t).await),
        _ => None,
    };
    let online_failed = online
        .as_ref()
        .is_some_and(|checks| checks.iter().any(|c| !c.ok));
    let failed = errors > 0 || (args.deny_warnings && warnings > 0);
    match args.format {
        Format::Json => {
            let report = json!({
                "file": path,
                "valid": !failed,
                "errors": errors, "warnings": warnings, "notes": notes,
                "diagnostics": diagnostics,
                "topology": topology.as_ref().map(summary_json),
                "online": online.as_ref().map(|c| c.iter().map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>()),
            });
            say!("{}", serde_json::to_string_pretty(&report)?)?;
        }
        Format::Text => {
            print_diagnostics(&diagnostics)?;
            if let Some(t) = &topology {
                print_summary(t)?;
            }
            for c in online.iter().flatten() {
                say!(
                    "  {} {:<9} {}",
                    if c.ok { "ok  " } else { "FAIL" },
                    c.name,
                    c.detail
                )?;
            }
            say!(
                "{}: {errors} error(s), {warnings} warning(s), {notes} note(s)",
                path.display()
            )?;
        }
    }
    Ok(if failed {
        super::exit::CONFIG
    } else if online_failed {
        super::exit::FAILURE
    } else {
        super::exit::OK
    })
}

fn print_diagnostics(diagnostics: &[Diagnostic]) -> std::io::Result<()> {
    for d in diagnostics {
        say!("{d}")?;
    }
    Ok(())
}

fn print_summary(t: &Topology) -> std::io::Result<()> {
    say!("topology `{}` ({})", t.name, t.file.display())?;
    say!(
        "  kafka     {} (group {}; {})",
        t.kafka.brokers,
        t.kafka.group_id,
        crate::kafka_auth::security(&t.kafka)
    )?;
    say!(
        "  registry  {} (level {})",
        t.registry.url,
        t.registry.compatibility.as_str()
    )?;
    say!(
        "  mongo     {} (database {})",
        health::redact_uri(&t.mongo.uri),
        t.mongo.database
    )?;
    for s in &t.sources {
        let types: Vec<&str> = s.schemas.iter().map(|x| x.short_name()).collect();
        say!(
            "  source    {} ← {} ({} partitions; {}; dead letters → {})",
            s.name,
            s.topic,
            s.partitions,
            types.join(", "),
            s.dlq_topic
        )?;
    }
    for st in &t.stages {
        let emits: Vec<&str> = st.emits.iter().map(|e| e.topic.as_str()).collect();
        let emits = if emits.is_empty() {
            String::new()
        } else {
            format!("; emits → {}", emits.join(", "))
        };
        say!(
            "  stage     {}: {} → entity {}{emits}",
            st.name,
            st.source,
            st.entity_kind
        )?;
    }
    for o in &t.topics {
        say!(
            "  output    {} ({} partitions; {})",
            o.name,
            o.partitions,
            o.schema.short_name()
        )?;
    }
    for r in &t.ingress {
        say!(
            "  ingress   {} {} → {} ({})",
            r.method,
            r.path,
            r.topic,
            r.schema.short_name()
        )?;
    }
    let admin = t
        .http
        .admin_listen
        .as_ref()
        .map_or(String::new(), |a| format!(" (admin {a})"));
    say!("  http      {}{admin}", t.http.listen)?;
    Ok(())
}

fn summary_json(t: &Topology) -> serde_json::Value {
    json!({
        "name": t.name,
        "kafka": json!({"brokers": t.kafka.brokers, "group": t.kafka.group_id,
            "security": crate::kafka_auth::security(&t.kafka),
            "properties": crate::kafka_auth::redacted_properties(&t.kafka)}),
        "mongo": json!({"uri": health::redact_uri(&t.mongo.uri), "database": t.mongo.database}),
        "sources": t.sources.iter().map(|s| json!({"name": s.name, "topic": s.topic, "partitions": s.partitions, "dlq": s.dlq_topic,
            "schemas": s.schemas.iter().map(|x| x.full_name.clone()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "entities": t.entities.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        "stages": t.stages.iter().map(|s| json!({"name": s.name, "source": s.source, "entity": s.entity_kind,
            "emits": s.emits.iter().map(|e| e.topic.clone()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "topics": t.topics.iter().map(|o| json!({"name": o.name, "partitions": o.partitions})).collect::<Vec<_>>(),
    })
}

/// `<addr> answers; <all>` or `<addr> answers; <some>: a, b`.
fn answered(addr: &str, missing: &[&String], all: &str, some: &str) -> String {
    if missing.is_empty() {
        format!("{addr} answers; {all}")
    } else {
        let names: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
        format!("{addr} answers; {some}: {}", names.join(", "))
    }
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Kafka topics, registry subjects and Mongo, each answered or not within a few seconds.
async fn online_checks(t: &Topology) -> Vec<Check> {
    let timeout = Duration::from_secs(5);
    let (kafka, registry, mongo) = tokio::join!(
        health::kafka_topics(&t.kafka, timeout),
        health::registry_subjects(&t.registry, timeout),
        health::mongo_ping(&t.mongo, timeout)
    );
    let mut checks = Vec::new();
    match kafka {
        Ok(existing) => {
            let wanted = t
                .sources
                .iter()
                .map(|s| &s.topic)
                .chain(t.topics.iter().map(|o| &o.name));
            let missing: Vec<&String> = wanted.filter(|w| !existing.contains_key(*w)).collect();
            let mut detail = answered(
                &t.kafka.brokers,
                &missing,
                "every topic exists",
                "`outflow run` will create",
            );
            // `outflow run` refuses these at start (see topics::ensure): say so before a deploy
            let differing: Vec<String> = crate::topics::partition_mismatches(t, &existing)
                .iter()
                .map(ToString::to_string)
                .collect();
            if !differing.is_empty() {
                detail = format!("{detail}; {}", differing.join("; "));
            }
            checks.push(Check {
                name: "kafka",
                ok: differing.is_empty(),
                detail,
            });
        }
        Err(e) => checks.push(Check {
            name: "kafka",
            ok: false,
            detail: e,
        }),
    }
    match registry {
        Ok(subjects) => {
            let wanted: Vec<String> = t.subjects().into_iter().map(|u| u.subject).collect();
            let missing: Vec<&String> = wanted.iter().filter(|w| !subjects.contains(w)).collect();
            let detail = answered(
                &t.registry.url,
                &missing,
                "every subject is registered",
                "not registered yet",
            );
            checks.push(Check {
                name: "registry",
                ok: true,
                detail,
            });
        }
        Err(e) => checks.push(Check {
            name: "registry",
            ok: false,
            detail: e,
        }),
    }
    match mongo {
        Ok(detail) => checks.push(Check {
            name: "mongo",
            ok: true,
            detail: format!("{} answers; {detail}", health::redact_uri(&t.mongo.uri)),
        }),
        Err(e) => checks.push(Check {
            name: "mongo",
            ok: false,
            detail: e,
        }),
    }
    checks
}
