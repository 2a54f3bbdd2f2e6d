//! `outflow run`: processor and relay in one process until SIGTERM/SIGINT (then a graceful stop).

use tokio::sync::watch;

use crate::runtime::{Roles, Runtime, RuntimeError};
use crate::store::StoreError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    topology: super::TopologyArg,
    /// Run only the processor (sources, stages, store); another process runs the relay.
    #[arg(long, conflicts_with = "relay_only")]
    processor_only: bool,
    /// Run only the outbox relay.
    #[arg(long)]
    relay_only: bool,
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

pub async fn run(args: Args) -> anyhow::Result<u8> {
    let roles = match (args.processor_only, args.relay_only) {
        (true, _) => Roles::ProcessorOnly,
        (_, true) => Roles::RelayOnly,
        _ => Roles::All,
    };
    start(&args.topology.topology, roles).await
}

/// `outflow serve`: the HTTP server alone (ingress and queries), no processor, no relay.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    topology: super::TopologyArg,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    start(&args.topology.topology, Roles::ServeOnly).await
}

async fn start(topology: &std::path::Path, roles: Roles) -> anyhow::Result<u8> {
    let runtime = match Runtime::builder(topology).build().await {
        Ok(r) => r,
        Err(RuntimeError::Config(e)) => return Ok(super::config_failure(&e)),
        // topology.toml disagrees with what is deployed: the brokers' partitions, the database's
        // topology, a Mongo that cannot run its transactions
        Err(
            e @ (RuntimeError::Topics(crate::topics::TopicError::Partitions { .. })
            | RuntimeError::Mongo {
                source: StoreError::OtherTopology { .. } | StoreError::UnfitServer(_),
                ..
            }),
        ) => {
            eprintln!("error: {}: {e}", topology.display());
            return Ok(super::exit::CONFIG);
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(topology = %runtime.topology.name, ?roles, "outflow running");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: finishing the batches in flight");
        let _ = stop_tx.send(true);
    });
    runtime.run(roles, stop_rx).await?;
    tracing::info!("stopped");
    Ok(super::exit::OK)
}
