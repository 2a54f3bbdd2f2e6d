//! What the servers and the fleet said last, printed when a run fails or is cut short, so a CI log
//! that shows only its tail still shows why.

use std::path::Path;

/// Prints the stack's status, the tail of each server's log, and the last warnings and errors of
/// each fleet log in `dir`.
pub fn print(dir: &Path) {
    eprintln!("--- diagnosis: what the servers and the fleet said last");
    if let Ok(root) = crate::checkout() {
        let stack = root.join("deploy/local/stack.sh");
        for args in [&["status"][..], &["logs", "12"][..]] {
            match std::process::Command::new(&stack)
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
            {
                Ok(out) => {
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                    // status prints exports on stdout: only logs' stdout is of interest
                    if args[0] == "logs" {
                        eprint!("{}", String::from_utf8_lossy(&out.stdout));
                    }
                }
                Err(e) => eprintln!("{} {}: {e}", stack.display(), args.join(" ")),
            }
        }
    }
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let worrying: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect();
        let name = log
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        eprintln!(
            "--- {name}: {} warnings/errors, the last 3:",
            worrying.len()
        );
        for line in worrying.iter().rev().take(3).rev() {
            eprintln!("  {}", line.chars().take(300).collect::<String>());
        }
    }
}
