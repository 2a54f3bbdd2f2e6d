//! Every check on a raw topology, collected in one pass, resolving names into the typed `Topology`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_spanned::Spanned;

use super::diagnostic::{Code, Diagnostics, did_you_mean};
use super::env::{self, EnvError};
use super::raw::*;
use super::topology::*;
use crate::schema::avsc::{AvroSchema, AvscError};
use crate::stage::jq::JqProgram;

/// What validation may consult besides the file: the environment and the registered custom stages.
pub struct Context<'a> {
    pub base_dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub custom_stages: &'a [String],
}

pub(super) struct Validator<'a, 'd> {
    pub diags: &'d mut Diagnostics<'a>,
    source_text: &'a str,
    ctx: &'a Context<'a>,
    schemas: HashMap<PathBuf, Option<Arc<AvroSchema>>>,
}

impl<'a, 'd> Validator<'a, 'd> {
    pub fn new(diags: &'d mut Diagnostics<'a>, source_text: &'a str, ctx: &'a Context<'a>) -> Self {
        Self {
            diags,
            source_text,
            ctx,
            schemas: HashMap::new(),
        }
    }

    /// A required string, or E004 at the enclosing table.
    pub(super) fn required_key<'v>(
        &mut self,
        value: &'v Option<SStr>,
        table: Range<usize>,
        path: &str,
        key: &str,
    ) -> Option<&'v SStr> {
        if value.is_none() {
            self.diags.push(
                Code::MissingKey,
                table,
                path,
                format!("missing required key `{key}`"),
                None,
            );
        }
        value.as_ref()
    }

    /// A string with `${VAR}` expanded, or E013.
    pub(super) fn expanded(&mut self, value: &SStr, path: &str) -> Option<String> {
        match env::expand(value.get_ref(), self.ctx.env) {
            Ok(v) => Some(v),
            Err(EnvError::Missing { name, .. }) => {
                self.diags.push(
                    Code::EnvMissing,
                    value.span(),
                    path,
                    format!("environment variable `{name}` is not set and has no default"),
                    Some(format!("export {name}=... or write `${{{name}:-default}}`")),
                );
                None
            }
            Err(EnvError::Unclosed { .. }) => {
                self.diags.push(
                    Code::InvalidValue,
                    value.span(),
                    path,
                    "`${` without a closing `}`",
                    None,
                );
                None
            }
        }
    }

    /// A positive integer within `max`, or E015; `default` when absent.
    pub(super) fn positive_key(
        &mut self,
        value: &Option<Spanned<i64>>,
        path: &str,
        default: i64,
        max: i64,
    ) -> i64 {
        match value {
            None => default,
            Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.diags.push(
                    Code::InvalidValue,
                    v.span(),
                    path,
                    format!("{} is out of range: expected 1 to {max}", v.get_ref()),
                    None,
                );
                default
            }
        }
    }

    /// One of a fixed set of words, or E015 with a suggestion.
    pub(super) fn word_key<T: Copy>(
        &mut self,
        value: &SStr,
        path: &str,
        words: &[(&'static str, T)],
    ) -> Option<T> {
        let found = words
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(value.get_ref()));
        if found.is_none() {
            let allowed: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
            self.diags.push(
                Code::InvalidValue,
                value.span(),
                path,
                format!(
                    "`{}` is not one of: {}",
                    value.get_ref(),
                    allowed.join(", ")
                ),
                did_you_mean(value.get_ref(), allowed.iter().copied()),
            );
        }
        found.map(|(_, t)| *t)
    }

    /// The parsed schema file (E009 / E010), each file read once.
    pub fn schema(&mut self, value: &SStr, path: &str) -> Option<Arc<AvroSchema>> {
        let rel = PathBuf::from(value.get_ref());
        if let Some(cached) = self.schemas.get(&rel) {
            return cached.clone();
        }
        let loaded = match AvroSchema::load(self.ctx.base_dir, &rel) {
            Ok(schema) => Some(Arc::new(schema)),
            Err(AvscError::Read { path: full, source }) => {
                self.diags.push(
                    Code::SchemaNotFound,
                    value.span(),
                    path,
                    format!("schema file `{}` cannot be read: {source}", full.display()),
                    Some("paths are relative to the topology file's folder".into()),
                );
                None
            }
            Err(AvscError::Invalid { reason, .. }) => {
                self.diags.push(
                    Code::SchemaInvalid,
                    value.span(),
                    path,
                    format!("`{}` is not a valid Avro schema: {reason}", value.get_ref()),
                    None,
                );
                None
            }
        };
        self.schemas.insert(rel, loaded.clone());
        loaded
    }

    /// A compiled jq program, or E011 pointing inside the program text.
    pub fn jq(&mut self, value: &SStr, path: &str) -> Option<JqProgram> {
        match JqProgram::compile(value.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                let start = self.program_start(value.span()) + e.offset;
                self.diags.push(
                    Code::JqInvalid,
                    start..start,
                    path,
                    format!("jq program does not compile: {}", e.message),
                    None,
                );
                None
            }
        }
    }

    pub(super) fn ctx_custom_stages(&self) -> &'a [String] {
        self.ctx.custom_stages
    }

    /// Where the text of a TOML string starts, past its quotes (and a `'''` line break).
    fn program_start(&self, span: Range<usize>) -> usize {
        let raw = self.source_text.get(span.clone()).unwrap_or("");
        let skip = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            3 + usize::from(raw[3..].starts_with('\n'))
                + 2 * usize::from(raw[3..].starts_with("\r\n"))
        } else {
            1
        };
        span.start + skip.min(raw.len())
    }

    /// E005 for every name seen before.
    fn unique<'n>(&mut self, items: impl IntoIterator<Item = (&'n SStr, String)>, what: &str) {
        let mut seen = HashSet::new();
        for (name, path) in items {
            if !seen.insert(name.get_ref().clone()) {
                self.diags.push(
                    Code::DuplicateName,
                    name.span(),
                    path,
                    format!("{what} `{}` is declared twice", name.get_ref()),
                    None,
                );
            }
        }
    }

    pub fn topology(&mut self, raw: &RawTopology, file: &Path) -> Option<Topology> {
        let whole = 0..0;
        let name = raw
            .topology
            .as_ref()
            .and_then(|m| m.get_ref().name.as_ref())
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| {
                file.file_stem()
                    .map_or("topology".into(), |s| s.to_string_lossy().into_owned())
            });
        let kafka = self.kafka(raw.kafka.as_ref(), &name);
        let registry = self.registry(raw.registry.as_ref());
        let mongo = self.mongo(raw.mongo.as_ref());
        let relay = self.relay(raw.relay.as_ref(), &name);
        self.unique(
            raw.sources.iter().enumerate().filter_map(|(i, s)| {
                s.get_ref()
                    .name
                    .as_ref()
                    .map(|n| (n, format!("sources[{i}].name")))
            }),
            "source",
        );
        self.unique(
            raw.entities.iter().enumerate().filter_map(|(i, s)| {
                s.get_ref()
                    .name
                    .as_ref()
                    .map(|n| (n, format!("entities[{i}].name")))
            }),
            "entity",
        );
        self.unique(
            raw.topics.iter().enumerate().filter_map(|(i, s)| {
                s.get_ref()
                    .name
                    .as_ref()
                    .map(|n| (n, format!("topics[{i}].name")))
            }),
            "topic",
        );
        self.unique(
            raw.stages.iter().enumerate().filter_map(|(i, s)| {
                s.get_ref()
                    .name
                    .as_ref()
                    .map(|n| (n, format!("stages[{i}].name")))
            }),
            "stage",
        );
        let sources: Vec<Source> = raw
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.source(s, i))
            .collect();
        let entities: Vec<Entity> = raw
            .entities
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let path = format!("entities[{i}]");
                let name = self.required_key(&e.get_ref().name, e.span(), &path, "name")?;
                Some(Entity {
                    name: name.get_ref().clone(),
                    collection: e
                        .get_ref()
                        .collection
                        .as_ref()
                        .map_or_else(|| name.get_ref().clone(), |c| c.get_ref().clone()),
                })
            })
            .collect();
        let topics: Vec<OutputTopic> = raw
            .topics
            .iter()
            .enumerate()
            .filter_map(|(i, t)| self.output_topic(t, i))
            .collect();
        let stages: Vec<StageDef> = raw
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.stage(s, i, &sources, &entities, &topics))
            .collect();
        let ingress: Vec<IngressRoute> = raw
            .ingress
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.ingress_route(r, i, &sources))
            .collect();
        let http = self.http(raw.http.as_ref());
        super::checks::cross_checks(self.diags, raw);
        if raw.sources.is_empty() {
            self.diags.push(
                Code::MissingKey,
                whole,
                "sources",
                "the topology has no [[sources]]",
                Some("declare at least one source topic".into()),
            );
        }
        let topology = Topology {
            name,
            file: file.to_path_buf(),
            kafka: kafka?,
            registry: registry?,
            mongo: mongo?,
            relay,
            sources,
            entities,
            topics,
            stages,
            ingress,
            http,
        };
        (!self.diags.has_errors()).then_some(topology)
    }
}
