//! The `outflow` binary as a child process of a test: its log, signals, and a kill when dropped.

use super::*;

/// A running `outflow` process, killed when dropped.
pub struct Outflow {
    pub child: Child,
    pub log: PathBuf,
}

impl Outflow {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to log `text`; whether it did.
    pub async fn logged(&self, text: &str, timeout: Duration) -> bool {
        eventually(timeout, async || self.log_text().contains(text)).await
    }

    /// The last `lines` lines the process logged, for a failing assertion's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits for the process to end by itself; its exit code (None if killed by a signal or still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM and wait for a graceful exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // the caller's assertion fails next, when this is no longer there to ask
        eprintln!(
            "--- {} did not stop within 60 s of SIGTERM; last lines ---\n{}",
            self.log.display(),
            self.log_tail(60)
        );
        None
    }
}

impl Drop for Outflow {
    fn drop(&mut self) {
        // a failing test's message says what went wrong; the process's own log says why
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
