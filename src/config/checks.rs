//! Checks across tables: cycles through topics, entity ids that are not the partition key, unused items.

use std::collections::{HashMap, HashSet};

use super::diagnostic::{Code, Diagnostics};
use super::raw::RawTopology;

fn name(s: &Option<super::raw::SStr>) -> Option<&str> {
    s.as_ref().map(|v| v.get_ref().as_str())
}

pub(super) fn cross_checks(diags: &mut Diagnostics<'_>, raw: &RawTopology) {
    cycles(diags, raw);
    entity_keys(diags, raw);
    unused(diags, raw);
}

/// E012: stage A emits to the topic stage B reads, ... back to A: every event would loop forever.
fn cycles(diags: &mut Diagnostics<'_>, raw: &RawTopology) {
    let topic_of_source: HashMap<&str, &str> = raw
        .sources
        .iter()
        .filter_map(|s| Some((name(&s.get_ref().name)?, name(&s.get_ref().topic)?)))
        .collect();
    // stage index -> stages it feeds, with the emit (index, span) that feeds them
    let reads: Vec<Option<&str>> = raw
        .stages
        .iter()
        .map(|s| name(&s.get_ref().source).and_then(|src| topic_of_source.get(src).copied()))
        .collect();
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); raw.stages.len()];
    for (i, stage) in raw.stages.iter().enumerate() {
        for (j, emit) in stage.get_ref().emit.iter().enumerate() {
            let Some(topic) = name(&emit.get_ref().topic) else {
                continue;
            };
            for (k, read) in reads.iter().enumerate() {
                if *read == Some(topic) {
                    edges[i].push((k, j));
                }
            }
        }
    }
    let mut reported = HashSet::new();
    for start in 0..raw.stages.len() {
        // depth-first search for a path back to `start`
        let mut stack = vec![(start, vec![start], None::<usize>)];
        let mut seen = HashSet::new();
        while let Some((at, path, first_emit)) = stack.pop() {
            for &(next, emit) in &edges[at] {
                let first_emit = first_emit.or(Some(emit));
                if next == start {
                    let mut members = path.clone();
                    members.sort_unstable();
                    if !reported.insert(members) {
                        continue;
                    }
                    let names: Vec<&str> = path
                        .iter()
                        .chain([&start])
                        .map(|&s| name(&raw.stages[s].get_ref().name).unwrap_or("?"))
                        .collect();
                    let emit_index = first_emit.unwrap_or(0);
                    let emit = &raw.stages[start].get_ref().emit[emit_index];
                    let span = emit
                        .get_ref()
                        .topic
                        .as_ref()
                        .map_or(emit.span(), |t| t.span());
                    diags.push(
                        Code::Cycle,
                        span,
                        format!("stages[{start}].emit[{emit_index}].topic"),
                        format!("stages feed each other in a cycle: {}", names.join(" → ")),
                        Some("every event would loop forever; break the cycle with a `when` on an emit or another topic".into()),
                    );
                } else if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer, first_emit));
                }
            }
        }
    }
}

/// W001: an entity keyed by anything but the Kafka key can be changed from two partitions at once.
fn entity_keys(diags: &mut Diagnostics<'_>, raw: &RawTopology) {
    let key_of_source: HashMap<&str, Option<&str>> = raw
        .sources
        .iter()
        .filter_map(|s| Some((name(&s.get_ref().name)?, name(&s.get_ref().key))))
        .collect();
    for (i, stage) in raw.stages.iter().enumerate() {
        let s = stage.get_ref();
        let Some(id) = s.entity.as_ref().and_then(|e| e.get_ref().id.as_ref()) else {
            continue;
        };
        let Some(key) = name(&s.source).and_then(|src| key_of_source.get(src)) else {
            continue;
        };
        let program: String = id
            .get_ref()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let is_key = program == ".meta.key"
            || key.is_some_and(|k| {
                program == format!(".event.{k}") || program == format!(".event[\"{k}\"]")
            });
        if !is_key {
            let hint = match key {
                Some(k) => format!("use `.event.{k}` (the source's `key`) or `.meta.key`"),
                None => "declare the source's `key` field, or use `.meta.key`".to_string(),
            };
            diags.push(
                Code::EntityIdNotKey,
                id.span(),
                format!("stages[{i}].entity.id"),
                format!("entity id `{}` is not the partition key: two partitions may update one entity out of order", id.get_ref().trim()),
                Some(hint),
            );
        }
    }
}

/// W002: entities no stage writes and sources no stage reads (not reported while a stage names
/// an undeclared one: that is a typo, already an error, and the real cause).
fn unused(diags: &mut Diagnostics<'_>, raw: &RawTopology) {
    let used_sources: HashSet<&str> = raw
        .stages
        .iter()
        .filter_map(|s| name(&s.get_ref().source))
        .collect();
    let used_entities: HashSet<&str> = raw
        .stages
        .iter()
        .filter_map(|s| {
            s.get_ref()
                .entity
                .as_ref()
                .and_then(|e| name(&e.get_ref().kind))
        })
        .collect();
    let declared_sources: HashSet<&str> = raw
        .sources
        .iter()
        .filter_map(|s| name(&s.get_ref().name))
        .collect();
    let declared_entities: HashSet<&str> = raw
        .entities
        .iter()
        .filter_map(|e| name(&e.get_ref().name))
        .collect();
    let check_sources = used_sources.is_subset(&declared_sources);
    let check_entities = used_entities.is_subset(&declared_entities);
    for (i, s) in raw.sources.iter().enumerate().filter(|_| check_sources) {
        if let Some(n) = &s.get_ref().name
            && !used_sources.contains(n.get_ref().as_str())
        {
            diags.push(
                Code::Unused,
                n.span(),
                format!("sources[{i}].name"),
                format!(
                    "no stage reads source `{}`: nothing subscribes to its topic",
                    n.get_ref()
                ),
                None,
            );
        }
    }
    for (i, e) in raw.entities.iter().enumerate().filter(|_| check_entities) {
        if let Some(n) = &e.get_ref().name
            && !used_entities.contains(n.get_ref().as_str())
        {
            diags.push(
                Code::Unused,
                n.span(),
                format!("entities[{i}].name"),
                format!("no stage writes entity `{}`", n.get_ref()),
                None,
            );
        }
    }
}
