//! `outflow graph`: draws the topology; reads only the file, never the network.

use crate::config;
use crate::graph::{GraphFormat, render};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    topology: super::TopologyArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: GraphFormat,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match config::load(&args.topology.topology) {
        Ok(loaded) => {
            say_raw!("{}", render(&loaded.topology, args.format))?;
            Ok(super::exit::OK)
        }
        Err(e) => Ok(super::config_failure(&e)),
    }
}
