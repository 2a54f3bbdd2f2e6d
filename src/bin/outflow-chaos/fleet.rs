//! The fleet: the `outflow run` processes under test, restarted like a supervisor would when they die.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a fleet member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Processor,
    Relay,
}

impl Role {
    fn flag(self) -> &'static str {
        match self {
            Role::Processor => "--processor-only",
            Role::Relay => "--relay-only",
        }
    }
}

/// One `outflow run` process and its restarts.
pub struct Member {
    pub name: String,
    pub role: Role,
    child: Option<Child>,
    /// A fault holds the member down (killed, waiting for the takeover to be measured): no restart.
    pub held: bool,
    pub starts: u32,
    /// Exits nobody asked for (a crash or a start-up failure), with their status.
    pub unexpected_exits: Vec<String>,
    port: u16,
    started_at: Option<Instant>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The admin address of this member (metrics, health).
    pub fn admin(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// How long a started process may take before it handles SIGTERM.
const START_UP: Duration = Duration::from_secs(5);

/// Every process of the run; dropping the fleet kills whatever is still running.
pub struct Fleet {
    exe: PathBuf,
    topology: PathBuf,
    logs: PathBuf,
    pub members: Vec<Member>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sends `signal` (a name such as STOP) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{signal} {pid}: {status}"
        )))
    }
}

impl Fleet {
    /// `processors` processor-only and `relays` relay-only members, not started yet.
    pub fn new(
        topology: &Path,
        logs: &Path,
        processors: usize,
        relays: usize,
    ) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?.with_file_name("outflow");
        if !exe.exists() {
            return Err(std::io::Error::other(format!(
                "{} not found: build it first (cargo build --bins)",
                exe.display()
            )));
        }
        let mut members = Vec::new();
        for (role, count, name) in [
            (Role::Processor, processors, "processor"),
            (Role::Relay, relays, "relay"),
        ] {
            for i in 1..=count {
                members.push(Member {
                    name: format!("{name}-{i}"),
                    role,
                    child: None,
                    held: false,
                    starts: 0,
                    unexpected_exits: Vec::new(),
                    port: free_port()?,
                    started_at: None,
                });
            }
        }
        Ok(Self {
            exe,
            topology: topology.to_path_buf(),
            logs: logs.to_path_buf(),
            members,
        })
    }

    /// Starts member `i` with a log file of its own per start.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let m = &mut self.members[i];
        m.starts += 1;
        let log = std::fs::File::create(self.logs.join(format!("{}.{}.log", m.name, m.starts)))?;
        let child = Command::new(&self.exe)
            .arg("run")
            .arg(m.role.flag())
            .arg(&self.topology)
            .env("OUTFLOW_HTTP_LISTEN", m.admin())
            .env("HOSTNAME", &m.name)
            .env(
                "RUST_LOG",
                std::env::var("OUTFLOW_CHAOS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        m.child = Some(child);
        m.started_at = Some(Instant::now());
        Ok(())
    }

    pub fn start_all(&mut self) -> std::io::Result<()> {
        (0..self.members.len()).try_for_each(|i| self.start(i))
    }

    /// Restarts members that died and are not held down; returns a line per restart.
    pub fn supervise(&mut self) -> Vec<String> {
        let mut restarted = Vec::new();
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            let exited = match m.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                Some(Ok(None)) => None,
                None => Some("not running".to_string()),
            };
            let Some(status) = exited else { continue };
            if m.held {
                continue;
            }
            if m.child.take().is_some() {
                m.unexpected_exits.push(status.clone());
            }
            let line = match self.start(i) {
                Ok(()) => format!("{} exited ({status}); restarted", self.members[i].name),
                Err(e) => format!(
                    "{} exited ({status}); restart failed: {e}",
                    self.members[i].name
                ),
            };
            restarted.push(line);
        }
        restarted
    }

    /// SIGKILL member `i` and hold it down until [`Fleet::release`].
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.held = true;
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Lets the supervisor restart member `i` again.
    pub fn release(&mut self, i: usize) {
        self.members[i].held = false;
    }

    /// Indices of members with `role` that are running now.
    pub fn running(&self, role: Role) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].role == role && self.members[i].child.is_some())
            .collect()
    }

    /// SIGTERM to every member, then waits up to `grace` for clean exits; returns the members that
    /// had to be killed or exited non-zero.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<String> {
        // a member restarted a moment ago may not handle SIGTERM yet: give it time to start
        let youngest = self.members.iter().filter_map(|m| m.started_at).max();
        if let Some(wait) =
            youngest.and_then(|t| (t + START_UP).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        for m in &self.members {
            if let Some(pid) = m.pid() {
                let _ = signal(pid, "CONT");
                let _ = signal(pid, "TERM");
            }
        }
        let deadline = Instant::now() + grace;
        let mut unclean = Vec::new();
        for m in &mut self.members {
            let Some(mut child) = m.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        unclean.push(format!("{}: {status}", m.name));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        unclean.push(format!("{}: killed after {grace:?}", m.name));
                        break;
                    }
                }
            }
        }
        unclean
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
