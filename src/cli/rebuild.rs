//! `outflow rebuild <entity-kind>`: recompute every entity of a kind from its event log.

use std::io::IsTerminal;

use mongodb::bson::{Document, doc};

use crate::runtime::{Runtime, RuntimeError};
use crate::store::documents::EVENT_LOG;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The entity kind (as in `[[entities]]`).
    kind: String,
    /// Report what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also publish, for each changed entity, what its last event emits under the current stages.
    #[arg(long, conflicts_with = "dry_run")]
    emit: bool,
    #[command(flatten)]
    topology: super::TopologyArg,
}

pub async fn run(args: Args) -> anyhow::Result<u8> {
    let runtime = match Runtime::builder(&args.topology.topology).build().await {
        Ok(r) => r,
        Err(RuntimeError::Config(e)) => return Ok(super::config_failure(&e)),
        Err(e) => return Err(e.into()),
    };
    if runtime.topology.entity(&args.kind).is_none() {
        let kinds: Vec<&str> = runtime
            .topology
            .entities
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        eprintln!(
            "error: no entity kind `{}` in {} (kinds: {})",
            args.kind,
            args.topology.topology.display(),
            kinds.join(", ")
        );
        return Ok(super::exit::USAGE);
    }
    let total = runtime
        .store
        .database()
        .collection::<Document>(EVENT_LOG)
        .count_documents(doc! { "entityKind": &args.kind })
        .await?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = crate::rebuild::rebuild(
        &runtime.store,
        &runtime.runner,
        &args.kind,
        args.dry_run,
        args.emit,
        &|n| bar.set_position(n),
    )
    .await?;
    bar.finish_and_clear();
    for (id, why) in &report.failed {
        eprintln!("warning: {} `{id}`: {why}", args.kind);
    }
    let verb = if args.dry_run {
        "would change"
    } else {
        "changed"
    };
    say!(
        "{} {}: {} entities from {} events; {verb} {}, unchanged {}, skipped (changed meanwhile) {}, rejected events {}, emitted {}",
        if args.dry_run { "dry run:" } else { "rebuilt" },
        args.kind,
        report.entities,
        report.events,
        report.changed,
        report.unchanged,
        report.skipped_concurrent,
        report.failed.len(),
        report.emitted
    )?;
    Ok(super::exit::OK)
}
