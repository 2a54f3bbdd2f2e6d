//! The `outflow` binary: parse the command line, run, turn the outcome into an exit code.

use std::num::NonZeroUsize;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: allocation was a quarter of the processor's CPU in the
/// profile (decoded events, BSON documents, jq values are many small short-lived objects).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when the async runtime cannot start (sysexits' EX_SOFTWARE).
const RUNTIME_FAILURE: u8 = 70;

/// tokio's worker threads, unless `TOKIO_WORKER_THREADS` says: one per core but one, which is
/// left to librdkafka's own threads (they do the Kafka wire work). On 2 cores shared with the
/// servers, 1 worker carried 7–18% more end to end than tokio's default of 2 (README → Tuning).
fn worker_threads() -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    Some(cores.saturating_sub(1).max(1))
}

fn main() -> ExitCode {
    let cli = outflow::cli::Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = worker_threads() {
        runtime.worker_threads(workers);
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(async {
            outflow::cli::init_logging();
            outflow::cli::run(cli).await
        }),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}
