//! `outflow test`: config-driven topology tests, in memory (no servers), with JUnit output.

use std::path::PathBuf;

use crate::testkit::cases::{CaseResult, run_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test files (default: every `*_test.toml` under `tests/topology/`).
    files: Vec<PathBuf>,
    /// Also write a JUnit report here.
    #[arg(long)]
    junit: Option<PathBuf>,
}

fn default_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/topology")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("_test.toml"))
        .collect();
    files.sort();
    files
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let files = if args.files.is_empty() {
        default_files()
    } else {
        args.files
    };
    if files.is_empty() {
        eprintln!("error: no test files given and none under tests/topology/*_test.toml");
        return Ok(super::exit::USAGE);
    }
    let mut all: Vec<(PathBuf, CaseResult)> = Vec::new();
    let mut broken = 0;
    for file in &files {
        match run_file(file) {
            Ok(results) => all.extend(results.into_iter().map(|r| (file.clone(), r))),
            Err(e) => {
                broken += 1;
                eprintln!("error: {}: {e}", file.display());
            }
        }
    }
    let failed = all.iter().filter(|(_, r)| !r.failures.is_empty()).count();
    for (file, r) in &all {
        if r.failures.is_empty() {
            say!("ok    {} :: {}", file.display(), r.name)?;
        } else {
            say!("FAIL  {} :: {}", file.display(), r.name)?;
            for f in &r.failures {
                say!("  {f}")?;
            }
        }
    }
    say!("{} passed, {failed} failed", all.len() - failed)?;
    if let Some(path) = &args.junit {
        let escape = super::xml_escape;
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites><testsuite name=\"outflow test\" tests=\"{}\" failures=\"{failed}\">\n",
            all.len()
        );
        for (file, r) in &all {
            xml.push_str(&format!(
                "  <testcase classname=\"{}\" name=\"{}\">",
                escape(&file.display().to_string()),
                escape(&r.name)
            ));
            if !r.failures.is_empty() {
                xml.push_str(&format!(
                    "<failure message=\"{} expectation(s) failed\">{}</failure>",
                    r.failures.len(),
                    escape(&r.failures.join("\n"))
                ));
            }
            xml.push_str("</testcase>\n");
        }
        xml.push_str("</testsuite></testsuites>\n");
        std::fs::write(path, xml)?;
    }
    Ok(if failed > 0 || broken > 0 {
        super::exit::FAILURE
    } else {
        super::exit::OK
    })
}
