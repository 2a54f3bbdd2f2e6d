//! outflow-chaos: a steady stream through several `outflow run` processes while processes are killed
//! and paused and the servers restarted, then a check that nothing was lost, doubled or reordered.
//!
//! ```sh
//! eval "$(deploy/local/stack.sh up)"
//! cargo build --bins && target/debug/outflow-chaos                 # CI size: 20,000 events
//! cargo build --release --bins && target/release/outflow-chaos --events 200000 --rounds 3
//! ```
//! It talks only to the local stack on loopback, stops by itself (every wait is bounded), and kills
//! the processes it started, by PID, on every way out.

mod checker;
mod diagnosis;
mod faults;
mod fleet;
mod table;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use faults::{Durations, Fault};
use fleet::Fleet;
use table::{Ending, fenced_zombies, print_verdict};
use traffic::{Progress, Shape};

#[derive(Debug, Parser)]
#[command(about = "Injects faults into a running outflow fleet and checks exactly-once delivery")]
struct Args {
    /// Events in the stream.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Entities (Kafka keys) the events are spread over.
    #[arg(long, default_value_t = 500)]
    keys: usize,
    /// Processor-only processes in the consumer group.
    #[arg(long, default_value_t = 2)]
    processors: usize,
    /// Relay-only processes sharing the outbox shards.
    #[arg(long, default_value_t = 2)]
    relays: usize,
    /// How often each fault kind is injected (in random order).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The fault kinds to inject (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Events/s the producer sends (default: the stream spread over the expected time of the faults).
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the fault order, targets and gaps (printed; reuse it to replay a run's schedule).
    #[arg(long)]
    seed: Option<u64>,
    /// How long a processor stays paused (longer than the 10 s session timeout its topology sets).
    #[arg(long, default_value_t = 20)]
    pause_seconds: u64,
    /// How long the registry stays down.
    #[arg(long, default_value_t = 30)]
    registry_down_seconds: u64,
    /// The longest wait for the pipeline to recover from one fault, and to drain at the end.
    #[arg(long, default_value_t = 180)]
    recover_timeout: u64,
    /// Keep the run's Mongo database (dropped after a passing run otherwise).
    #[arg(long)]
    keep: bool,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    // the run's name and its folder for logs, known here so a failed run can be diagnosed
    let prefix = format!("c{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let dir = match checkout() {
        Ok(root) => root.join(format!("target/chaos/{prefix}")),
        Err(e) => {
            eprintln!("outflow-chaos: {e:#}");
            return ExitCode::from(1);
        }
    };
    let interrupted = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    };
    // on a signal the run is dropped: the fleet's Drop kills every process it started
    let outcome = tokio::select! {
        outcome = run(args, &prefix, &dir) => outcome,
        _ = interrupted => Err(anyhow::anyhow!("interrupted: the fleet is killed, the servers put back")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            diagnosis::print(&dir);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("outflow-chaos: {e:#}");
            faults::restore_servers().await;
            diagnosis::print(&dir);
            eprintln!("outflow-chaos: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The checkout the harness runs in (its working directory): it drives `deploy/local/` there.
/// Not the build's source tree, which a shared target directory may place in another checkout.
pub fn checkout() -> anyhow::Result<PathBuf> {
    let here = std::env::current_dir()?;
    anyhow::ensure!(
        here.join("deploy/local/stack.sh").is_file(),
        "run outflow-chaos from the root of an outflow checkout (no deploy/local/stack.sh in {})",
        here.display()
    );
    Ok(here)
}

/// Writes the run's topology and its schemas (built into the harness) into `dir`; returns the
/// topology's path.
fn write_topology(prefix: &str, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::write(dir.join("ChaosEvent.avsc"), include_str!("ChaosEvent.avsc"))?;
    std::fs::write(
        dir.join("ChaosUpdated.avsc"),
        include_str!("ChaosUpdated.avsc"),
    )?;
    let text = include_str!("topology.toml")
        .replace("@PREFIX@", prefix)
        .replace("@DIR@", &dir.display().to_string())
        .replace(
            "${OUTFLOW_HTTP_LISTEN}",
            "${OUTFLOW_HTTP_LISTEN:-127.0.0.1:0}",
        );
    let path = dir.join("topology.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Seconds the fault phase is expected to take: what the default rate spreads the stream over.
fn expected_seconds(schedule: &[Fault], d: Durations) -> f64 {
    let timed = |f: &Fault| match f {
        Fault::PauseProcessor => d.pause.as_secs_f64(),
        Fault::RegistryDown => d.registry_down.as_secs_f64(),
        _ => 0.0,
    };
    20.0 + schedule.iter().map(|f| timed(f) + 25.0).sum::<f64>()
}

async fn run(args: Args, prefix: &str, dir: &std::path::Path) -> anyhow::Result<bool> {
    let t0 = Instant::now();
    let say = |line: String| say_at(t0, &line);
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = if args.faults.is_empty() {
        Fault::all()
    } else {
        args.faults.clone()
    };
    let mut schedule = Vec::new();
    for _ in 0..args.rounds {
        let mut round = kinds.clone();
        round.shuffle(&mut rng);
        schedule.extend(round);
    }
    let durations = Durations {
        pause: Duration::from_secs(args.pause_seconds),
        registry_down: Duration::from_secs(args.registry_down_seconds),
    };
    let rate = args
        .rate
        .unwrap_or_else(|| (args.events as f64 / expected_seconds(&schedule, durations)).max(10.0));

    std::fs::create_dir_all(dir)?;
    let path = write_topology(prefix, dir)?;
    let topology = Arc::new(
        outflow::config::load(&path)
            .map_err(|e| anyhow::anyhow!("{e}: {e:?}"))?
            .topology,
    );
    let shape = Shape {
        events: args.events,
        keys: args.keys,
        partitions: topology.sources[0].partitions as usize,
    };
    say(format!(
        "run {prefix}: {} events over {} keys at {rate:.0}/s, {} processors + {} relays, seed {seed}; logs in {}",
        args.events,
        args.keys,
        args.processors,
        args.relays,
        dir.display()
    ));
    say(format!(
        "faults in order: {}",
        schedule
            .iter()
            .map(|f| f.label())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // topics, collections and the schema exist before the processes race to create them
    outflow::topics::ensure(&topology, 1).await?;
    let store =
        outflow::store::Store::connect(&topology.mongo.uri, &topology.mongo.database).await?;
    store.ensure_collections(&topology).await?;
    let source = &topology.sources[0];
    let schema = &source.schemas[0];
    let registry =
        outflow::schema::registry::Registry::new(&topology.registry.url, Duration::from_secs(10))?;
    let schema_id = registry
        .register(&source.subject_for(schema), schema)
        .await?;

    let fleet = Arc::new(Mutex::new(Fleet::new(
        &path,
        dir,
        args.processors,
        args.relays,
    )?));
    lock(&fleet)?.start_all()?;
    let supervising = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let supervisor = {
        let (fleet, supervising) = (Arc::clone(&fleet), Arc::clone(&supervising));
        tokio::spawn(async move {
            while supervising.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let restarted = fleet.lock().map(|mut f| f.supervise()).unwrap_or_default();
                for line in restarted {
                    say_at(t0, &line);
                }
            }
        })
    };
    wait_healthy(&fleet, Duration::from_secs(120)).await?;
    say("fleet up; producing".into());

    let progress = Progress::new(shape);
    let _wind_down = WindDown {
        progress: Arc::clone(&progress),
        supervising: Arc::clone(&supervising),
    };
    let reader = {
        let (topology, prefix, progress) = (
            Arc::clone(&topology),
            prefix.to_string(),
            Arc::clone(&progress),
        );
        tokio::task::spawn_blocking(move || traffic::read_live(&topology, &prefix, &progress))
    };
    let producer = {
        let (topology, prefix, progress) = (
            Arc::clone(&topology),
            prefix.to_string(),
            Arc::clone(&progress),
        );
        let stall_limit = Duration::from_secs(args.recover_timeout);
        tokio::spawn(async move {
            traffic::produce(
                &topology,
                schema_id,
                &prefix,
                shape,
                rate,
                stall_limit,
                progress,
            )
            .await
        })
    };
    // a producer that gave up ends the run at once (it is waited for only once)
    let mut producer = Some(producer);
    let mut producer_done = None;

    let mut recoveries = Vec::new();
    tokio::time::sleep(Duration::from_secs(rng.random_range(5..15))).await;
    for fault in schedule {
        tokio::time::sleep(Duration::from_secs(rng.random_range(3..10))).await;
        if let Some(finished) = producer.take_if(|p| p.is_finished()) {
            producer_done = Some(finished.await??);
        }
        let timeout = Duration::from_secs(args.recover_timeout);
        let recovery =
            faults::inject_and_wait(fault, (&fleet, &progress), &mut rng, durations, timeout, t0)
                .await?;
        recoveries.push(recovery);
    }

    let resent = match producer {
        Some(producing) => producing.await??,
        None => producer_done.unwrap_or_default(),
    };
    say(format!(
        "all {} events produced ({resent} sent again after a failed delivery); draining",
        args.events
    ));
    let frontier = progress.frontier();
    let drained = wait_for(Duration::from_secs(args.recover_timeout), || {
        progress.reached(&frontier)
    })
    .await;
    supervising.store(false, Ordering::SeqCst);
    let _ = supervisor.await;
    let unclean = lock(&fleet)?.stop_all(Duration::from_secs(60));
    progress.stop_reading.store(true, Ordering::SeqCst);
    reader.await??;
    say(format!(
        "fleet stopped{}; checking",
        if drained {
            ""
        } else {
            " (output did NOT drain)"
        }
    ));

    let report = checker::check(&topology, prefix, shape, args.events).await?;
    let restarts: Vec<String> = lock(&fleet)?
        .members
        .iter()
        .filter(|m| !m.unexpected_exits.is_empty())
        .map(|m| format!("{}: {}", m.name, m.unexpected_exits.join("; ")))
        .collect();
    let ending = Ending {
        fenced: fenced_zombies(dir),
        restarts,
        unclean,
        drained,
        seed,
    };
    let passed = print_verdict(&recoveries, &report, &ending);
    if passed && !args.keep {
        let _ = store.database().drop().await;
    }
    Ok(passed)
}

/// A progress line on stderr, stamped with the seconds since the run began at `t0`.
pub fn say_at(t0: Instant, line: &str) {
    eprintln!("[{:>6.1} s] {line}", t0.elapsed().as_secs_f64());
}

/// Stops the live reader (a blocking thread the runtime would wait for at exit) and the supervisor
/// on every way out of `run`, an error or a signal included, so the fleet is dropped (its processes
/// killed) and the harness exits.
struct WindDown {
    progress: Arc<Progress>,
    supervising: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for WindDown {
    fn drop(&mut self) {
        self.progress.stop_reading.store(true, Ordering::SeqCst);
        self.supervising.store(false, Ordering::SeqCst);
    }
}

fn lock(fleet: &Mutex<Fleet>) -> anyhow::Result<std::sync::MutexGuard<'_, Fleet>> {
    fleet
        .lock()
        .map_err(|_| anyhow::anyhow!("fleet lock poisoned"))
}

/// Polls `done` every 100 ms until it holds (true) or `timeout` passes (false).
async fn wait_for(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// Waits until every member answers `/healthz`.
async fn wait_healthy(fleet: &Mutex<Fleet>, timeout: Duration) -> anyhow::Result<()> {
    let admins: Vec<String> = lock(fleet)?.members.iter().map(|m| m.admin()).collect();
    let deadline = Instant::now() + timeout;
    for admin in admins {
        let left = deadline.saturating_duration_since(Instant::now());
        let url = format!("http://{admin}/healthz");
        let healthy = outflow::health::answers_ok(&url, left, Duration::from_millis(250)).await;
        anyhow::ensure!(healthy, "{admin} not healthy after {timeout:?}");
    }
    Ok(())
}
