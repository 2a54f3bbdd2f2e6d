//! The faults: processes killed or paused, and each server of the local stack restarted or stalled.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use crate::fleet::{self, Fleet, Role};
use crate::table::Recovery;
use crate::traffic::Progress;

/// One kind of fault; `--faults` picks a subset, each round runs every picked kind once in random order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL a processor; the others take its partitions (measures the takeover).
    KillProcessor,
    /// SIGKILL a relay; another one takes its shards when the leases expire.
    KillRelay,
    /// SIGSTOP a processor past the group's session timeout, then SIGCONT: a zombie.
    PauseProcessor,
    /// Restart the Kafka broker (SIGTERM, start).
    RestartKafka,
    /// SIGKILL SecantusDB and start it again (it persists every commit: --sync-on-commit).
    RestartMongo,
    /// The schema registry stops answering (SIGSTOP) for a while, then comes back (SIGCONT).
    RegistryDown,
}

impl Fault {
    pub fn all() -> Vec<Fault> {
        vec![
            Fault::KillProcessor,
            Fault::KillRelay,
            Fault::PauseProcessor,
            Fault::RestartKafka,
            Fault::RestartMongo,
            Fault::RegistryDown,
        ]
    }

    pub fn label(self) -> &'static str {
        match self {
            Fault::KillProcessor => "SIGKILL processor",
            Fault::KillRelay => "SIGKILL relay",
            Fault::PauseProcessor => "SIGSTOP/SIGCONT processor",
            Fault::RestartKafka => "Kafka broker restart",
            Fault::RestartMongo => "SecantusDB kill -9 + start",
            Fault::RegistryDown => "registry down",
        }
    }
}

/// How long the timed faults last.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    pub pause: Duration,
    pub registry_down: Duration,
}

/// A fault as it happened: what was hit, when it started and when it was over.
pub struct Injected {
    pub target: String,
    pub started: Instant,
    pub ended: Instant,
    /// The fleet member held down until the takeover is measured.
    pub held: Option<usize>,
}

fn script(server: &str) -> anyhow::Result<PathBuf> {
    Ok(crate::checkout()?.join(format!("deploy/local/{server}/{server}-local.sh")))
}

/// Runs `deploy/local/<server>/<server>-local.sh <command>`; its stdout is the answer.
async fn server(server_name: &str, command: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(script(server_name)?)
        .arg(command)
        // the broker's first-start warm-up (coordinator loading) is not needed on a restart,
        // and under load it can outlast the readiness wait
        .env("KAFKA_WARMUP", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        anyhow::bail!(
            "{server_name}-local.sh {command} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A random running member with `role`.
fn pick(
    fleet: &Mutex<Fleet>,
    role: Role,
    rng: &mut StdRng,
) -> anyhow::Result<(usize, String, u32)> {
    let fleet = fleet
        .lock()
        .map_err(|_| anyhow::anyhow!("fleet lock poisoned"))?;
    let running = fleet.running(role);
    anyhow::ensure!(!running.is_empty(), "no running {role:?} to hit");
    let i = running[rng.random_range(0..running.len())];
    let m = &fleet.members[i];
    let pid = m
        .pid()
        .ok_or_else(|| anyhow::anyhow!("{} has no pid", m.name))?;
    Ok((i, m.name.clone(), pid))
}

/// Injects `fault`; returns once the fault itself is over (the server is back, the process resumed).
pub async fn inject(
    fault: Fault,
    fleet: &Arc<Mutex<Fleet>>,
    rng: &mut StdRng,
    durations: Durations,
) -> anyhow::Result<Injected> {
    let started = Instant::now();
    let (target, held) = match fault {
        Fault::KillProcessor | Fault::KillRelay => {
            let role = if fault == Fault::KillProcessor {
                Role::Processor
            } else {
                Role::Relay
            };
            let (i, name, _) = pick(fleet, role, rng)?;
            fleet
                .lock()
                .map_err(|_| anyhow::anyhow!("fleet lock poisoned"))?
                .kill(i);
            (name, Some(i))
        }
        Fault::PauseProcessor => {
            let (i, name, pid) = pick(fleet, Role::Processor, rng)?;
            if let Ok(mut f) = fleet.lock() {
                f.members[i].held = true;
            }
            fleet::signal(pid, "STOP")?;
            tokio::time::sleep(durations.pause).await;
            fleet::signal(pid, "CONT")?;
            if let Ok(mut f) = fleet.lock() {
                f.release(i);
            }
            (format!("{name} for {} s", durations.pause.as_secs()), None)
        }
        Fault::RestartKafka => {
            if let Err(e) = server("kafka", "restart").await {
                // a readiness wait that ran out on a loaded machine is not a broker that failed
                eprintln!("chaos: {e:#}; asking the broker once more");
                server("kafka", "status").await?;
            }
            ("broker".to_string(), None)
        }
        Fault::RestartMongo => {
            server("mongo", "kill").await?;
            server("mongo", "start").await?;
            ("server".to_string(), None)
        }
        Fault::RegistryDown => {
            let pid: u32 = server("registry", "pid").await?.parse()?;
            fleet::signal(pid, "STOP")?;
            tokio::time::sleep(durations.registry_down).await;
            fleet::signal(pid, "CONT")?;
            (format!("for {} s", durations.registry_down.as_secs()), None)
        }
    };
    Ok(Injected {
        target,
        started,
        ended: Instant::now(),
        held,
    })
}

/// Puts every server back as it was, whatever happened (called on every way out of the run).
pub async fn restore_servers() {
    if let Ok(pid) = server("registry", "pid").await
        && let Ok(pid) = pid.parse::<u32>()
    {
        let _ = fleet::signal(pid, "CONT");
    }
    let _ = server("kafka", "start").await;
    let _ = server("mongo", "start").await;
}

/// Injects `fault` into the fleet and waits (up to `timeout`) for the output to catch up with what
/// was acknowledged a second after its start and a second after its end.
pub async fn inject_and_wait(
    fault: Fault,
    (fleet, progress): (&Arc<Mutex<Fleet>>, &Arc<Progress>),
    rng: &mut StdRng,
    durations: Durations,
    timeout: Duration,
    t0: Instant,
) -> anyhow::Result<Recovery> {
    let say = |line: String| crate::say_at(t0, &line);
    say(format!("inject: {}", fault.label()));
    let started = Instant::now();
    let stall = {
        let progress = Arc::clone(progress);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let frontier = progress.frontier();
            crate::wait_for(timeout, || progress.reached(&frontier))
                .await
                .then(|| started.elapsed())
        })
    };
    let injected = inject(fault, fleet, rng, durations).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_traffic = !progress.producing_done.load(Ordering::SeqCst);
    let frontier = progress.frontier();
    let recovered = crate::wait_for(timeout, || progress.reached(&frontier))
        .await
        .then(|| injected.ended.elapsed());
    if let Some(i) = injected.held {
        crate::lock(fleet)?.release(i);
    }
    let stalled = stall.await.ok().flatten();
    say(format!(
        "{} ({}): {}",
        fault.label(),
        injected.target,
        recovered.map_or("NOT recovered".into(), |r| format!(
            "recovered in {:.1} s",
            r.as_secs_f64()
        ))
    ));
    Ok(Recovery {
        fault,
        target: injected.target,
        outage: injected.ended - injected.started,
        stalled,
        recovered,
        with_traffic,
    })
}
