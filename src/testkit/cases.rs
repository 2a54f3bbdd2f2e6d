//! Config-driven topology tests (`outflow test`): input events, expected entities, outputs and
//! dead letters, run in memory through [`TopologyTestDriver`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use super::{TestkitError, TopologyTestDriver};

/// A test file: the topology it tests and its cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The topology, relative to the test file.
    pub topology: PathBuf,
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub input: Vec<Input>,
    #[serde(default)]
    pub expect_entity: Vec<ExpectEntity>,
    #[serde(default)]
    pub expect_output: Vec<ExpectOutput>,
    /// How many dead letters, and optionally their classes in order.
    pub expect_dead_letters: Option<ExpectDead>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub topic: String,
    #[serde(rename = "type")]
    pub record_type: Option<String>,
    /// The event as a TOML table (converted to JSON and encoded against the topic's schema).
    pub event: toml::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectEntity {
    pub kind: String,
    pub id: String,
    pub version: Option<i64>,
    /// The whole state must equal this.
    pub equals: Option<toml::Value>,
    /// The state must contain these fields with these values.
    pub contains: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectOutput {
    pub topic: String,
    pub count: Option<usize>,
    /// Which record (0-based; negative counts from the end) `equals`/`contains` look at.
    #[serde(default = "last")]
    pub index: i64,
    pub key: Option<String>,
    pub equals: Option<toml::Value>,
    pub contains: Option<toml::Value>,
}

fn last() -> i64 {
    -1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectDead {
    pub count: usize,
    #[serde(default)]
    pub classes: Vec<String>,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    /// Empty when the case passed; otherwise one readable explanation per failed expectation.
    pub failures: Vec<String>,
}

fn to_json(value: &toml::Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// Does `actual` contain everything in `expected` (objects by key, recursively; anything else equal)?
fn contains(actual: &Json, expected: &Json) -> bool {
    match (actual, expected) {
        (Json::Object(a), Json::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|x| contains(x, v))),
        (Json::Number(a), Json::Number(e)) => a.as_f64() == e.as_f64(),
        _ => actual == expected,
    }
}

/// A readable diff of two JSON values, line by line (`-` expected, `+` actual).
pub fn diff(expected: &Json, actual: &Json) -> String {
    let e = serde_json::to_string_pretty(expected).unwrap_or_default();
    let a = serde_json::to_string_pretty(actual).unwrap_or_default();
    let (el, al): (Vec<&str>, Vec<&str>) = (e.lines().collect(), a.lines().collect());
    let mut out = String::new();
    for line in &el {
        if !al.contains(line) {
            out.push_str(&format!("    - {line}\n"));
        }
    }
    for line in &al {
        if !el.contains(line) {
            out.push_str(&format!("    + {line}\n"));
        }
    }
    out
}

fn check_value(
    what: &str,
    actual: &Json,
    equals: Option<&toml::Value>,
    contained: Option<&toml::Value>,
    failures: &mut Vec<String>,
) {
    if let Some(expected) = equals.map(to_json)
        && (!contains(actual, &expected) || !contains(&expected, actual))
    {
        failures.push(format!(
            "{what} is not equal to the expectation:\n{}",
            diff(&expected, actual)
        ));
    }
    if let Some(expected) = contained.map(to_json)
        && !contains(actual, &expected)
    {
        failures.push(format!(
            "{what} does not contain the expectation:\n{}",
            diff(&expected, actual)
        ));
    }
}

/// Runs every case of `file` on a fresh driver each.
pub fn run_file(file: &Path) -> Result<Vec<CaseResult>, TestkitError> {
    let text = std::fs::read_to_string(file).map_err(|e| TestkitError::Invalid {
        schema: String::new(),
        errors: format!("cannot read {}: {e}", file.display()),
    })?;
    let parsed: TestFile = toml::from_str(&text).map_err(|e| TestkitError::Invalid {
        schema: String::new(),
        errors: format!("{}: {e}", file.display()),
    })?;
    let topology = file
        .parent()
        .unwrap_or(Path::new("."))
        .join(&parsed.topology);
    let mut results = Vec::new();
    for case in &parsed.cases {
        let mut driver = TopologyTestDriver::new(&topology)?;
        let mut failures = Vec::new();
        for (i, input) in case.input.iter().enumerate() {
            if let Err(e) = driver.pipe(
                &input.topic,
                input.record_type.as_deref(),
                &to_json(&input.event),
            ) {
                failures.push(format!("input #{} was refused: {e}", i + 1));
            }
        }
        for e in &case.expect_entity {
            match driver.entity(&e.kind, &e.id) {
                None => failures.push(format!("entity {} `{}` does not exist", e.kind, e.id)),
                Some(view) => {
                    if let Some(v) = e.version.filter(|v| *v != view.version) {
                        failures.push(format!(
                            "entity {} `{}` is at version {}, expected {v}",
                            e.kind, e.id, view.version
                        ));
                    }
                    check_value(
                        &format!("entity {} `{}`", e.kind, e.id),
                        &view.state,
                        e.equals.as_ref(),
                        e.contains.as_ref(),
                        &mut failures,
                    );
                }
            }
        }
        for o in &case.expect_output {
            let records = driver.outputs(&o.topic);
            if let Some(n) = o.count.filter(|n| *n != records.len()) {
                failures.push(format!(
                    "{} records on `{}`, expected {n}",
                    records.len(),
                    o.topic
                ));
            }
            if o.equals.is_some() || o.contains.is_some() || o.key.is_some() {
                let at = if o.index < 0 {
                    records.len() as i64 + o.index
                } else {
                    o.index
                };
                match usize::try_from(at).ok().and_then(|i| records.get(i)) {
                    None => failures.push(format!(
                        "no record #{} on `{}` ({} there)",
                        o.index,
                        o.topic,
                        records.len()
                    )),
                    Some(r) => {
                        if let Some(k) = o.key.as_ref().filter(|k| **k != r.key) {
                            failures.push(format!(
                                "record #{} on `{}` has key `{}`, expected `{k}`",
                                o.index, o.topic, r.key
                            ));
                        }
                        check_value(
                            &format!("record #{} on `{}`", o.index, o.topic),
                            &r.value,
                            o.equals.as_ref(),
                            o.contains.as_ref(),
                            &mut failures,
                        );
                    }
                }
            }
        }
        if let Some(d) = &case.expect_dead_letters {
            let classes: Vec<&str> = driver.dead_letters().iter().map(|x| x.class).collect();
            if classes.len() != d.count {
                failures.push(format!(
                    "{} dead letters ({}), expected {}",
                    classes.len(),
                    classes.join(", "),
                    d.count
                ));
            }
            if !d.classes.is_empty()
                && d.classes
                    .iter()
                    .map(String::as_str)
                    .ne(classes.iter().copied())
            {
                failures.push(format!(
                    "dead-letter classes [{}], expected [{}]",
                    classes.join(", "),
                    d.classes.join(", ")
                ));
            }
        }
        results.push(CaseResult {
            name: case.name.clone(),
            failures,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contains_is_recursive_and_numeric() {
        assert!(contains(
            &json!({"a": {"b": 1.0, "c": 2}}),
            &json!({"a": {"b": 1}})
        ));
        assert!(!contains(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    #[test]
    fn diff_shows_both_sides() {
        let d = diff(
            &json!({"status": "PRICED"}),
            &json!({"status": "REQUESTED"}),
        );
        assert!(
            d.contains("-   \"status\": \"PRICED\"") && d.contains("+   \"status\": \"REQUESTED\""),
            "{d}"
        );
    }
}
