//! The command line: one file per subcommand, no business logic; errors become exit codes here.

/// `println!` for a command's output, without its panic when the reader has gone (`outflow tail |
/// head -3`): `Ok(false)` then, and the command decides (most finish their work, `tail` stops).
macro_rules! say {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` as [`say!`] is `println!`.
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

mod dlq;
mod graph;
mod produce;
mod rebuild;
mod run;
mod schemas;
mod tail;
mod test;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (sysexits-style where one fits).
pub mod exit {
    pub const OK: u8 = 0;
    /// Failure at run time (a server down, an incompatible schema, ...).
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap uses it too).
    pub const USAGE: u8 = 2;
    /// Bad configuration: EX_CONFIG.
    pub const CONFIG: u8 = 78;
}

/// Logs go to stderr: `RUST_LOG` filters, `OUTFLOW_LOG_FORMAT=json` switches to JSON lines.
/// Colours only on a terminal: a log file or a collector gets plain text.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("OUTFLOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[derive(Debug, Parser)]
#[command(name = "outflow", version, about = "Kafka → stage → one MongoDB transaction → outbox → Kafka, exactly once.", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file: every problem at once, with file:line:col (offline unless --online).
    #[command(
        after_help = "Examples:\n  outflow validate\n  outflow validate --online --deny-warnings deploy/topology.toml\n  outflow validate --format json | jq '.diagnostics[] | .code'"
    )]
    Validate(validate::Args),
    /// Draw the topology: sources, stages, entities, output and dead-letter topics.
    #[command(after_help = "Example:\n  outflow graph --format mermaid > topology.mmd")]
    Graph(graph::Args),
    /// Run the pipeline: sources → stages → Mongo transaction → outbox relay → Kafka.
    #[command(
        after_help = "Examples:\n  outflow run\n  outflow run --processor-only topology.toml\n  OUTFLOW_LOG_FORMAT=json outflow run --relay-only"
    )]
    Run(run::Args),
    /// Serve the HTTP API alone: ingress routes, entity queries, OpenAPI, metrics and health.
    #[command(
        after_help = "Example:\n  outflow serve topology.toml   # then: curl -XPOST localhost:8080/quotes -H 'content-type: application/json' -d @quote.json"
    )]
    Serve(run::ServeArgs),
    /// Produce JSON lines from stdin as Avro events onto a source topic (checked against its schema).
    #[command(
        after_help = "Example:\n  echo '{\"eventId\":\"e1\",\"quoteId\":\"q1\",...}' | outflow produce quote-events --type QuoteRequested"
    )]
    Produce(produce::Args),
    /// Schema compatibility checks for CI, and registration for deploys.
    #[command(subcommand)]
    Schemas(schemas::Command),
    /// Recompute every entity of a kind from its event log through the current stages.
    #[command(after_help = "Examples:\n  outflow rebuild quote --dry-run\n  outflow rebuild quote")]
    Rebuild(rebuild::Args),
    /// Run config-driven topology tests in memory (no servers).
    #[command(
        after_help = "Examples:\n  outflow test\n  outflow test tests/topology/quotes_test.toml --junit report.xml"
    )]
    Test(test::Args),
    /// Dead letters: list, inspect, replay.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Print a topic's records as JSON lines (Avro decoded through the registry), with their headers.
    #[command(
        after_help = "Examples:\n  outflow tail entity-updates --from-beginning --limit 10\n  outflow tail quote-events.dlq --from-beginning --idle-timeout 5 | jq .headers"
    )]
    Tail(tail::Args),
}

/// The topology file argument every subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArg {
    /// The topology file.
    #[arg(default_value = "topology.toml", env = "OUTFLOW_TOPOLOGY")]
    pub topology: PathBuf,
}

/// Writes to stdout: `Ok(false)` once the reader has gone (a closed pipe). SIGPIPE stays ignored,
/// as Rust sets it up: librdkafka's TLS sockets would otherwise kill the process on a reset.
pub(crate) fn write_stdout(text: std::fmt::Arguments<'_>) -> std::io::Result<bool> {
    use std::io::Write;
    match std::io::stdout().lock().write_fmt(text) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Validate(args) => validate::run(args).await,
        Command::Graph(args) => graph::run(args),
        Command::Run(args) => run::run(args).await,
        Command::Serve(args) => run::serve(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Dlq(command) => dlq::run(command).await,
        Command::Test(args) => test::run(args),
        Command::Rebuild(args) => rebuild::run(args).await,
        Command::Schemas(command) => schemas::run(command).await,
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// An error and its causes on one line, each said once: a library error whose message already
/// quotes its cause (`mongo: {0}`) is not followed by the same text again.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Text escaped for an XML attribute or element (JUnit reports).
pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Prints a configuration error's diagnostics (text) and returns EX_CONFIG.
pub(crate) fn config_failure(error: &crate::config::ConfigError) -> u8 {
    match error {
        crate::config::ConfigError::Invalid { diagnostics, .. } => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            eprintln!("{error}");
        }
        other => eprintln!("error: {other}"),
    }
    exit::CONFIG
}
