//! `topology.toml` → raw serde mirror with spans → validation collecting every diagnostic → `Topology`.
//!
//! Nothing outside this module sees the raw types: the runtime accepts only a [`Topology`].

mod checks;
pub mod diagnostic;
pub mod env;
mod http;
mod items;
mod raw;
mod sections;
mod topology;
mod validate;

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

pub use diagnostic::{Code, Diagnostic, Severity};
pub use topology::*;
pub use validate::Context;

use diagnostic::{Diagnostics, did_you_mean};

/// A topology that passed validation, with the warnings and notes found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub topology: Topology,
    pub diagnostics: Vec<Diagnostic>,
}

/// Why a topology cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has {} error(s)", .path.display(), .diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

/// Reads and validates the topology file at `path` against the process environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    load_with(path, &env, &[])
}

/// Like [`load`], with the environment and the custom stages registered on the runtime.
pub fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    custom_stages: &[String],
) -> Result<Loaded, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let ctx = Context {
        base_dir,
        env,
        custom_stages,
    };
    parse_bytes(path, &bytes, &ctx)
}

/// Like [`parse`], for file contents not yet known to be UTF-8: invalid UTF-8 is an E001 at the
/// first bad byte's line:col (TOML files are UTF-8).
pub fn parse_bytes(file: &Path, bytes: &[u8], ctx: &Context<'_>) -> Result<Loaded, ConfigError> {
    let error = match std::str::from_utf8(bytes) {
        Ok(text) => return parse(file, text, ctx),
        Err(e) => e,
    };
    let at = error.valid_up_to();
    let text = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let mut diags = Diagnostics::new(file, text);
    diags.push(
        Code::Syntax,
        at..at,
        "",
        format!(
            "invalid UTF-8 (byte {:#04x} at offset {at}): a topology file must be UTF-8",
            bytes[at]
        ),
        None,
    );
    Err(ConfigError::Invalid {
        path: file.to_path_buf(),
        diagnostics: diags.into_vec(),
    })
}

/// Validates topology `text` as if read from `file`.
pub fn parse(file: &Path, text: &str, ctx: &Context<'_>) -> Result<Loaded, ConfigError> {
    let mut diags = Diagnostics::new(file, text);
    let invalid = |diags: Diagnostics<'_>| ConfigError::Invalid {
        path: file.to_path_buf(),
        diagnostics: diags.into_vec(),
    };
    let (table, syntax_errors) = DeTable::parse_recoverable(text);
    for e in &syntax_errors {
        let span = e.span().unwrap_or(0..0);
        diags.push(Code::Syntax, span, "", e.message().to_string(), None);
    }
    if !syntax_errors.is_empty() {
        return Err(invalid(diags));
    }
    let mut ignored = Vec::new();
    let deserializer = toml::de::Deserializer::from(table.clone());
    let raw = serde_ignored::deserialize(deserializer, |path| ignored.push(segments(&path)));
    let raw: raw::RawTopology = match raw {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            diags.push(Code::WrongType, span, "", e.message().to_string(), None);
            return Err(invalid(diags));
        }
    };
    for path in ignored {
        unknown_key(&mut diags, table.get_ref(), &path);
    }
    let topology = validate::Validator::new(&mut diags, text, ctx).topology(&raw, file);
    match topology {
        Some(topology) if !diags.has_errors() => Ok(Loaded {
            topology,
            diagnostics: diags.into_vec(),
        }),
        _ => Err(invalid(diags)),
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

/// The TOML path of an ignored key, without serde_spanned's internal wrapper fields.
fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = path;
    loop {
        match at {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Segment::Index(*index));
                at = parent;
            }
            serde_ignored::Path::Map { parent, key } => {
                if !key.starts_with("$__serde_spanned_private") {
                    out.push(Segment::Key(key.clone()));
                }
                at = parent;
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => at = parent,
        }
    }
    out.reverse();
    out
}

/// E003 at the key's own position, with the closest known key as a hint.
fn unknown_key(diags: &mut Diagnostics<'_>, root: &DeTable<'_>, path: &[Segment]) {
    let Some((Segment::Key(last), parents)) = path.split_last() else {
        return;
    };
    let mut table = root;
    let mut value: Option<&DeValue<'_>> = None;
    let mut shown = String::new();
    let mut schema_path = String::new();
    for seg in parents {
        value = match (value, seg) {
            (None, Segment::Key(k)) => table.get(k.as_str()).map(|v| v.get_ref()),
            (Some(DeValue::Table(t)), Segment::Key(k)) => t.get(k.as_str()).map(|v| v.get_ref()),
            (Some(DeValue::Array(a)), Segment::Index(i)) => a.get(*i).map(|v| v.get_ref()),
            _ => None,
        };
        match seg {
            Segment::Key(k) => {
                let dot = if shown.is_empty() { "" } else { "." };
                shown.push_str(&format!("{dot}{k}"));
                schema_path.push_str(&format!("{dot}{k}"));
            }
            Segment::Index(i) => shown.push_str(&format!("[{i}]")),
        }
        if let Some(DeValue::Table(t)) = value {
            table = t;
        }
    }
    let span = table
        .iter()
        .find(|(k, _)| k.get_ref() == last)
        .map_or(0..0, |(k, _)| k.span());
    let known = raw::known_keys(&schema_path);
    let full = if shown.is_empty() {
        last.clone()
    } else {
        format!("{shown}.{last}")
    };
    let hint = did_you_mean(last, known.iter().copied())
        .or_else(|| (!known.is_empty()).then(|| format!("known keys here: {}", known.join(", "))));
    diags.push(
        Code::UnknownKey,
        span,
        full,
        format!("unknown key `{last}`"),
        hint,
    );
}
