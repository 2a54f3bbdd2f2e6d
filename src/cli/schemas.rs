//! `outflow schemas check|register`: compatibility gates for CI and registration for deploys.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use apache_avro::Schema;
use serde_json::json;

use crate::config::{self, CompatLevel};
use crate::schema::compat::{Incompatibility, check};
use crate::schema::registry::Registry;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check every schema the topology uses against the registry's versions, or the same file at a git revision.
    #[command(
        after_help = "Examples:\n  outflow schemas check\n  outflow schemas check --against git:origin/main --format junit > schemas.xml\n  outflow schemas check --level FULL_TRANSITIVE"
    )]
    Check(CheckArgs),
    /// Register every schema the topology uses, setting each subject's compatibility level first.
    #[command(after_help = "Example:\n  outflow schemas register --dry-run")]
    Register(RegisterArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// `registry` (default) or `git:REV` (the same files at a git revision, offline).
    #[arg(long, default_value = "registry")]
    against: String,
    /// The level to check under (default: the topology's `registry.compatibility`).
    #[arg(long, value_parser = parse_level)]
    level: Option<CompatLevel>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    topology: super::TopologyArg,
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Show what would be registered; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    topology: super::TopologyArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

fn parse_level(s: &str) -> Result<CompatLevel, String> {
    CompatLevel::parse(s).ok_or_else(|| format!("`{s}` is not one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"))
}

/// The schema file at a git revision (`None` when it did not exist there).
fn at_revision(topology_dir: &Path, rev: &str, file: &Path) -> anyhow::Result<Option<Schema>> {
    let spec = format!("{rev}:./{}", file.display());
    let out = Process::new("git")
        .arg("-C")
        .arg(topology_dir)
        .args(["show", &spec])
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("does not exist") || err.contains("exists on disk, but not in") {
            return Ok(None);
        }
        anyhow::bail!("git show {spec}: {}", err.trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(Some(Schema::parse_str(&text).map_err(|e| {
        anyhow::anyhow!("{} at {rev} is not valid Avro: {e}", file.display())
    })?))
}

struct Checked {
    subject: String,
    file: String,
    against: String,
    problems: Vec<Incompatibility>,
}

pub async fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Check(args) => check_all(args).await,
        Command::Register(args) => register(args).await,
    }
}

async fn check_all(args: CheckArgs) -> anyhow::Result<u8> {
    let t = match config::load(&args.topology.topology) {
        Ok(l) => l.topology,
        Err(e) => return Ok(super::config_failure(&e)),
    };
    let level = args.level.unwrap_or(t.registry.compatibility);
    let dir = args
        .topology
        .topology
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let registry = if args.against == "registry" {
        Some(Registry::new(&t.registry.url, Duration::from_secs(10))?)
    } else {
        None
    };
    let mut results = Vec::new();
    for crate::config::SubjectUse {
        subject, schema, ..
    } in t.subjects()
    {
        let (earlier, against) = match (&registry, args.against.strip_prefix("git:")) {
            (Some(r), _) => {
                let versions = r.versions(&subject).await?;
                let label = format!("{} registered version(s)", versions.len());
                (
                    versions.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
                    label,
                )
            }
            (None, Some(rev)) => (
                at_revision(&dir, rev, &schema.path)?.into_iter().collect(),
                format!("git {rev}"),
            ),
            (None, None) => anyhow::bail!(
                "--against must be `registry` or `git:REV`, got `{}`",
                args.against
            ),
        };
        let problems = check(level, &schema.schema, &earlier);
        results.push(Checked {
            subject,
            file: schema.path.display().to_string(),
            against,
            problems,
        });
    }
    let failures = results.iter().filter(|r| !r.problems.is_empty()).count();
    match args.format {
        Format::Text => {
            for r in &results {
                if r.problems.is_empty() {
                    say!("ok    {} ({}) against {}", r.subject, r.file, r.against)?;
                }
                for p in &r.problems {
                    say!(
                        "FAIL  {} ({}): {} [{} {}, against {}]",
                        r.subject,
                        r.file,
                        p.reason,
                        level.as_str(),
                        p.direction,
                        r.against
                    )?;
                }
            }
            say!(
                "{} subject(s) checked under {}: {failures} incompatible",
                results.len(),
                level.as_str()
            )?;
        }
        Format::Json => {
            let report: Vec<_> = results.iter().map(|r| json!({ "subject": r.subject, "file": r.file, "against": r.against, "compatible": r.problems.is_empty(), "problems": r.problems })).collect();
            say!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "level": level.as_str(), "incompatible": failures, "subjects": report })
                )?
            )?;
        }
        Format::Junit => {
            let escape = super::xml_escape;
            say!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
            say!(
                "<testsuites><testsuite name=\"outflow schemas check ({})\" tests=\"{}\" failures=\"{failures}\">",
                level.as_str(),
                results.len()
            )?;
            for r in &results {
                say_raw!(
                    "  <testcase classname=\"schemas\" name=\"{}\">",
                    escape(&r.subject)
                )?;
                for p in &r.problems {
                    say_raw!(
                        "<failure message=\"{}\">{} against {}</failure>",
                        escape(&p.reason),
                        escape(&r.file),
                        escape(&r.against)
                    )?;
                }
                say!("</testcase>")?;
            }
            say!("</testsuite></testsuites>")?;
        }
    }
    Ok(if failures > 0 {
        super::exit::FAILURE
    } else {
        super::exit::OK
    })
}

async fn register(args: RegisterArgs) -> anyhow::Result<u8> {
    let t = match config::load(&args.topology.topology) {
        Ok(l) => l.topology,
        Err(e) => return Ok(super::config_failure(&e)),
    };
    let registry = Registry::new(&t.registry.url, Duration::from_secs(10))?;
    let level = t.registry.compatibility;
    let mut failed = 0;
    for crate::config::SubjectUse {
        subject, schema, ..
    } in t.subjects()
    {
        let existing = registry.lookup(&subject, &schema).await?;
        match (existing, args.dry_run) {
            (Some(id), _) => {
                say!("unchanged  {subject} (id {id})")?;
            }
            (None, true) => {
                say!(
                    "would register  {subject} from {} (level {})",
                    schema.path.display(),
                    level.as_str()
                )?;
            }
            (None, false) => {
                registry.set_level(&subject, level).await?;
                match registry.register(&subject, &schema).await {
                    Ok(id) => {
                        say!("registered {subject} (id {id}, level {})", level.as_str())?;
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {subject}: {e}");
                    }
                }
            }
        }
    }
    Ok(if failed > 0 {
        super::exit::FAILURE
    } else {
        super::exit::OK
    })
}
