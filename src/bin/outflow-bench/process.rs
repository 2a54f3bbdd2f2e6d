//! The `outflow run` process a run starts: asked whether it still runs, killed when dropped.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Mutex;

/// A started outflow. A run that outlives its process fails at once with the process's last
/// error, instead of waiting out its reader's timeout and printing figures of nothing.
pub struct Running {
    child: Mutex<Child>,
    pub pid: u32,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Running {
    pub fn new(child: Child, log: PathBuf) -> Self {
        Self {
            pid: child.id(),
            child: Mutex::new(child),
            log,
        }
    }

    /// `None` while the process runs; once it has exited, its status and last error line.
    pub fn gone(&self) -> Option<String> {
        let status = self.child.lock().ok()?.try_wait().ok()??;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last_error = log
            .lines()
            .rev()
            .find(|l| l.contains(" ERROR ") || l.starts_with("error:"))
            .unwrap_or("(no error in its log)");
        Some(format!(
            "outflow exited ({status}) before the run was over: {last_error} (log: {})",
            self.log.display()
        ))
    }

    /// Resolves once the process has exited (checked every second), with [`Self::gone`]'s words.
    pub async fn exited(&self) -> String {
        loop {
            if let Some(gone) = self.gone() {
                return gone;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Kills the process (if it still runs) and reaps it.
    pub fn stop(&self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
