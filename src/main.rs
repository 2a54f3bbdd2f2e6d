//! The `outflow` binary: parse the command line, run, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: allocation was a quarter of the processor's CPU in the
/// profile (decoded events, BSON documents, jq values are many small short-lived objects).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = outflow::cli::Cli::parse();
    outflow::cli::init_logging();
    outflow::cli::run(cli).await
}
