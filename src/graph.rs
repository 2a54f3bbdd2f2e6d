//! Draws a topology (sources, stages, entities, output and dead-letter topics) as Mermaid or DOT.

use std::fmt::Write;

use crate::config::Topology;

/// The drawing formats `outflow graph` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// A node id safe in both Mermaid and DOT.
fn id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{clean}")
}

struct Node {
    id: String,
    label: String,
    shape: Shape,
}

#[derive(Clone, Copy)]
enum Shape {
    Topic,
    Stage,
    Entity,
    DeadLetter,
}

/// Nodes and edges in a stable order (declaration order), shared by both renderers.
fn model(t: &Topology) -> (Vec<Node>, Vec<(String, String, &'static str)>) {
    let mut nodes: Vec<Node> = Vec::new();
    let mut edges = Vec::new();
    let add = |nodes: &mut Vec<Node>, node: Node| {
        if !nodes.iter().any(|n| n.id == node.id) {
            nodes.push(node);
        }
    };
    for s in &t.sources {
        add(
            &mut nodes,
            Node {
                id: id("topic", &s.topic),
                label: s.topic.clone(),
                shape: Shape::Topic,
            },
        );
        add(
            &mut nodes,
            Node {
                id: id("dlq", &s.dlq_topic),
                label: s.dlq_topic.clone(),
                shape: Shape::DeadLetter,
            },
        );
        edges.push((
            id("topic", &s.topic),
            id("dlq", &s.dlq_topic),
            "dead letters",
        ));
    }
    for st in &t.stages {
        let stage = id("stage", &st.name);
        add(
            &mut nodes,
            Node {
                id: stage.clone(),
                label: st.name.clone(),
                shape: Shape::Stage,
            },
        );
        if let Some(src) = t.source(&st.source) {
            edges.push((id("topic", &src.topic), stage.clone(), ""));
        }
        add(
            &mut nodes,
            Node {
                id: id("entity", &st.entity_kind),
                label: st.entity_kind.clone(),
                shape: Shape::Entity,
            },
        );
        edges.push((stage.clone(), id("entity", &st.entity_kind), "state"));
        for e in &st.emits {
            add(
                &mut nodes,
                Node {
                    id: id("topic", &e.topic),
                    label: e.topic.clone(),
                    shape: Shape::Topic,
                },
            );
            edges.push((stage.clone(), id("topic", &e.topic), "outbox"));
        }
    }
    (nodes, edges)
}

/// Renders the topology in `format`.
pub fn render(t: &Topology, format: GraphFormat) -> String {
    let (nodes, edges) = model(t);
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            let _ = writeln!(out, "flowchart LR");
            for n in &nodes {
                let (open, close) = match n.shape {
                    Shape::Topic | Shape::DeadLetter => ("[/", "/]"),
                    Shape::Stage => ("[", "]"),
                    Shape::Entity => ("[(", ")]"),
                };
                let _ = writeln!(out, "    {}{open}\"{}\"{close}", n.id, n.label);
            }
            for (from, to, label) in &edges {
                if label.is_empty() {
                    let _ = writeln!(out, "    {from} --> {to}");
                } else {
                    let _ = writeln!(out, "    {from} -->|{label}| {to}");
                }
            }
            let _ = writeln!(out, "    classDef dlq stroke:#c00,color:#c00");
            let dlqs: Vec<&str> = nodes
                .iter()
                .filter(|n| matches!(n.shape, Shape::DeadLetter))
                .map(|n| n.id.as_str())
                .collect();
            if !dlqs.is_empty() {
                let _ = writeln!(out, "    class {} dlq", dlqs.join(","));
            }
        }
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{\n    rankdir=LR;", t.name);
            for n in &nodes {
                let attrs = match n.shape {
                    Shape::Topic => "shape=parallelogram",
                    Shape::DeadLetter => "shape=parallelogram, color=red",
                    Shape::Stage => "shape=box",
                    Shape::Entity => "shape=cylinder",
                };
                let _ = writeln!(out, "    {} [label=\"{}\", {attrs}];", n.id, n.label);
            }
            for (from, to, label) in &edges {
                let _ = writeln!(out, "    {from} -> {to} [label=\"{label}\"];");
            }
            let _ = writeln!(out, "}}");
        }
    }
    out
}
