//! Configuration diagnostics: a stable code, a severity, the TOML path, `file:line:col` and a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a finding is. Errors stop `validate` (exit 78); warnings only with `--deny-warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A default was applied; shown so nothing is implicit.
    Info,
    /// Legal but probably not what you meant.
    Warning,
    /// The topology cannot run.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// Every diagnostic code outflow emits. Codes are stable: tests and CI scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Code {
    /// E001: the file is not valid TOML.
    Syntax,
    /// E002: a value has the wrong type.
    WrongType,
    /// E003: a key that outflow does not know.
    UnknownKey,
    /// E004: a required key is missing.
    MissingKey,
    /// E005: two items of one kind share a name.
    DuplicateName,
    /// E006: a stage names a source that does not exist.
    UnknownSource,
    /// E007: a stage names an entity kind that does not exist.
    UnknownEntity,
    /// E008: an emit or ingress route names a topic that is not declared.
    UnknownTopic,
    /// E009: a schema file does not exist.
    SchemaNotFound,
    /// E010: a schema file is not a valid Avro schema.
    SchemaInvalid,
    /// E011: a jq program does not compile.
    JqInvalid,
    /// E012: stages feed each other in a cycle through topics.
    Cycle,
    /// E013: `${VAR}` names an environment variable that is not set and has no default.
    EnvMissing,
    /// E014: a secret written inline instead of `${VAR}`.
    InlineSecret,
    /// E015: a value out of range or not one of the allowed words.
    InvalidValue,
    /// E016: one subject per topic cannot hold several record types.
    SubjectStrategy,
    /// E017: a custom stage kind that the runtime did not register.
    UnknownStageKind,
    /// W001: the entity id is not the partition key, so two partitions may race on one entity.
    EntityIdNotKey,
    /// W002: something declared that nothing uses.
    Unused,
    /// I001: no dead-letter topic given; the default applies.
    DlqDefault,
}

impl Code {
    /// The stable short code, e.g. `E012`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "E001",
            Code::WrongType => "E002",
            Code::UnknownKey => "E003",
            Code::MissingKey => "E004",
            Code::DuplicateName => "E005",
            Code::UnknownSource => "E006",
            Code::UnknownEntity => "E007",
            Code::UnknownTopic => "E008",
            Code::SchemaNotFound => "E009",
            Code::SchemaInvalid => "E010",
            Code::JqInvalid => "E011",
            Code::Cycle => "E012",
            Code::EnvMissing => "E013",
            Code::InlineSecret => "E014",
            Code::InvalidValue => "E015",
            Code::SubjectStrategy => "E016",
            Code::UnknownStageKind => "E017",
            Code::EntityIdNotKey => "W001",
            Code::Unused => "W002",
            Code::DlqDefault => "I001",
        }
    }

    /// The severity that goes with the code.
    pub fn severity(self) -> Severity {
        match self.as_str().as_bytes()[0] {
            b'W' => Severity::Warning,
            b'I' => Severity::Info,
            _ => Severity::Error,
        }
    }
}

/// One finding, located in the file.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    /// TOML path of the offending value, e.g. `stages[1].entity.id`.
    pub path: String,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// `file:line:col` of the finding.
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}[{}]: {}",
            self.location(),
            self.severity,
            self.code,
            self.message
        )?;
        if !self.path.is_empty() {
            write!(f, "\n  at `{}`", self.path)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file, turning byte spans into line:col.
pub struct Diagnostics<'a> {
    file: &'a Path,
    source: &'a str,
    /// Byte offset where each line starts, so locating a finding does not rescan the file.
    line_starts: Vec<usize>,
    items: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: &'a Path, source: &'a str) -> Self {
        Self {
            file,
            source,
            line_starts: line_starts(source),
            items: Vec::new(),
        }
    }

    /// Records a finding at `span` (a byte range in the file).
    pub fn push(
        &mut self,
        code: Code,
        span: Range<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = locate(self.source, &self.line_starts, span.start);
        self.items.push(Diagnostic {
            code: code.as_str(),
            severity: code.severity(),
            message: message.into(),
            path: path.into(),
            file: self.file.to_path_buf(),
            line,
            column,
            hint,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// All findings, in file order.
    pub fn into_vec(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by(|a, b| (a.line, a.column, a.code).cmp(&(b.line, b.column, b.code)));
        self.items
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    locate(source, &line_starts(source), offset)
}

/// Byte offset where each line of `source` starts.
fn line_starts(source: &str) -> Vec<usize> {
    let newlines = source.match_indices('\n').map(|(i, _)| i + 1);
    std::iter::once(0).chain(newlines).collect()
}

/// [`line_col`] with the line starts computed once per file (a file may have many findings).
fn locate(source: &str, line_starts: &[usize], offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let line = line_starts.partition_point(|&start| start <= offset);
    let start = line_starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
    let column = source
        .get(start..offset)
        .map_or(offset - start, |s| s.chars().count());
    (line, column + 1)
}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, src.find('=').unwrap_or(0)), (1, 3));
        assert_eq!(line_col(src, 10), (2, 4));
    }

    #[test]
    fn suggestion_only_for_near_misses() {
        assert_eq!(
            did_you_mean("tpoic", ["topic", "name"]).as_deref(),
            Some("did you mean `topic`?")
        );
        assert_eq!(did_you_mean("zzz", ["topic", "name"]), None);
    }
}
