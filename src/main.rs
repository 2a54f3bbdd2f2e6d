//! The `outflow` binary: parse the command line, run, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = outflow::cli::Cli::parse();
    outflow::cli::init_logging();
    outflow::cli::run(cli).await
}
