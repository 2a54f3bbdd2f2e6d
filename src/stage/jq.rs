//! jq programs (via `jaq`): compiled once at validation, run per event with no I/O.

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program and its source text.
#[derive(Clone)]
pub struct JqProgram {
    code: Arc<str>,
    filter: Arc<Filter>,
}

impl fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JqProgram({:?})", self.code)
    }
}

/// Why a program did not compile: the message and the byte offset in the program text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JqCompileError {
    pub message: String,
    pub offset: usize,
}

/// Why a program failed on an input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("jq `{program}` failed: {message}")]
pub struct JqRunError {
    pub program: String,
    pub message: String,
}

/// Byte offset of `part` inside `whole`, when `part` is a slice of it.
fn offset_in(whole: &str, part: &str) -> usize {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at >= start && at <= start + whole.len() {
        at - start
    } else {
        0
    }
}

/// The deepest a program may nest, counting brackets and what is chained inside each: jaq lexes,
/// parses and compiles recursively, so a deeper program would overflow the stack (a crash, not an
/// error). Real stages nest a few dozen levels.
const MAX_NESTING: usize = 256;

/// Where `code` first nests deeper than [`MAX_NESTING`], estimated from above without parsing:
/// a bracket opens a level; an operator, comma or nesting keyword deepens the open level by one
/// until its bracket closes. Strings are skipped, except the code of their `\(...)` parts.
fn too_deep(code: &str) -> Option<usize> {
    let bytes = code.as_bytes();
    // per open level: is it a string interpolation, and how much depth it added
    let mut levels: Vec<(bool, usize)> = vec![(false, 0)];
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let mut deeper = false;
        if in_string {
            match c {
                b'\\' if bytes.get(i + 1) == Some(&b'(') => {
                    in_string = false;
                    levels.push((true, 0));
                    deeper = true;
                    i += 1;
                }
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'#' => {
                    while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                        i += 1;
                    }
                }
                b'(' | b'[' | b'{' => {
                    levels.push((false, 0));
                    deeper = true;
                }
                b')' | b']' | b'}' if levels.len() > 1 => {
                    if let Some((interpolation, added)) = levels.pop() {
                        depth -= added;
                        in_string = interpolation;
                    }
                }
                b'|' | b',' | b'+' | b'-' | b'*' | b'/' | b'%' | b'=' | b'<' | b'>' | b'!'
                | b'?' => deeper = true,
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                    let start = i;
                    while bytes
                        .get(i + 1)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    {
                        i += 1;
                    }
                    let word = code.get(start..=i).unwrap_or_default();
                    deeper = matches!(
                        word,
                        "and"
                            | "or"
                            | "as"
                            | "if"
                            | "elif"
                            | "try"
                            | "reduce"
                            | "foreach"
                            | "def"
                            | "label"
                    );
                }
                _ => {}
            }
        }
        if deeper {
            depth += 1;
            if let Some(level) = levels.last_mut() {
                level.1 += 1;
            }
            if depth > MAX_NESTING {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

impl JqProgram {
    /// Compiles `code` with jq's standard library.
    pub fn compile(code: &str) -> Result<Self, JqCompileError> {
        if let Some(offset) = too_deep(code) {
            return Err(JqCompileError {
                message: format!(
                    "nests deeper than {MAX_NESTING} levels (brackets and the operators chained in them)"
                ),
                offset,
            });
        }
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| {
                let (message, at) = match errors.into_iter().next() {
                    Some((_, jaq_core::load::Error::Lex(errs))) => match errs.first() {
                        Some((expect, at)) => (format!("expected {}", expect.as_str()), *at),
                        None => ("cannot be read".to_string(), ""),
                    },
                    Some((_, jaq_core::load::Error::Parse(errs))) => match errs.first() {
                        Some((expect, at)) => {
                            let found = if at.is_empty() { "end of program" } else { at };
                            (
                                format!("expected {}, found `{found}`", expect.as_str()),
                                *at,
                            )
                        }
                        None => ("cannot be parsed".to_string(), ""),
                    },
                    Some((_, jaq_core::load::Error::Io(errs))) => {
                        (format!("{} import error(s)", errs.len()), "")
                    }
                    None => ("cannot be parsed".to_string(), ""),
                };
                JqCompileError {
                    message,
                    offset: offset_in(code, at),
                }
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let first = errors.into_iter().flat_map(|(_, errs)| errs).next();
                match first {
                    Some((name, undefined)) => JqCompileError {
                        message: format!("undefined {} `{name}`", undefined.as_str()),
                        offset: offset_in(code, name),
                    },
                    None => JqCompileError {
                        message: "does not compile".to_string(),
                        offset: 0,
                    },
                }
            })?;
        Ok(Self {
            code: Arc::from(code),
            filter: Arc::new(filter),
        })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// Runs the program on `input` and collects every output.
    pub fn run(&self, input: &serde_json::Value) -> Result<Vec<serde_json::Value>, JqRunError> {
        self.run_on(&JqValue::from_json(input))
    }

    /// [`JqProgram::run`] on an input already converted: a stage runs several programs on one
    /// event, and converting it again for each was ~6% of the processor's CPU in the profile.
    pub fn run_on(&self, input: &JqValue) -> Result<Vec<serde_json::Value>, JqRunError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = Vec::new();
        for out in self.filter.id.run((ctx, input.0.clone())) {
            match jaq_core::unwrap_valr(out) {
                Ok(val) => outputs.push(val_to_json(&val).map_err(|message| self.error(message))?),
                Err(e) => return Err(self.error(e.to_string())),
            }
        }
        Ok(outputs)
    }

    /// Runs the program and insists on exactly one output.
    pub fn run_one(&self, input: &JqValue) -> Result<serde_json::Value, JqRunError> {
        let mut outputs = self.run_on(input)?;
        match outputs.len() {
            1 => Ok(outputs.remove(0)),
            n => Err(self.error(format!("produced {n} values, expected exactly one"))),
        }
    }

    /// jq truthiness: anything but `false` and `null` (and no output at all).
    pub fn holds(&self, input: &JqValue) -> Result<bool, JqRunError> {
        let outputs = self.run_on(input)?;
        Ok(outputs.first().is_some_and(|v| {
            !matches!(v, serde_json::Value::Null | serde_json::Value::Bool(false))
        }))
    }

    fn error(&self, message: String) -> JqRunError {
        JqRunError {
            program: self.code.trim().to_string(),
            message,
        }
    }
}

/// A program input converted once; cloning it is cheap (its parts are shared).
#[derive(Clone)]
pub struct JqValue(Val);

impl JqValue {
    pub fn from_json(json: &serde_json::Value) -> Self {
        Self(json_to_val(json))
    }

    /// An object of already converted fields, e.g. `{event, state, meta}`.
    pub fn object<'a>(fields: impl IntoIterator<Item = (&'a str, JqValue)>) -> Self {
        Self(Val::obj(
            fields
                .into_iter()
                .map(|(k, v)| (Val::from(k.to_string()), v.0))
                .collect(),
        ))
    }
}

fn json_to_val(json: &serde_json::Value) -> Val {
    use serde_json::Value as J;
    match json {
        J::Null => Val::Null,
        J::Bool(b) => Val::from(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() || isize::try_from(i).is_ok() => {
                Val::from(i as isize)
            }
            _ => Val::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Val::from(s.clone()),
        J::Array(items) => items.iter().map(json_to_val).collect(),
        J::Object(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (Val::from(k.clone()), json_to_val(v)))
                .collect(),
        ),
    }
}

/// A jaq value as JSON, walked directly; big or decimal numbers and keys that are not strings go
/// through jaq's own JSON printing.
fn val_to_json(val: &Val) -> Result<serde_json::Value, String> {
    use jaq_json::Num;
    use serde_json::Value as J;
    let via_text = |v: &Val| {
        let text = v.to_string();
        serde_json::from_str::<J>(&text).map_err(|e| format!("result `{text}` is not JSON: {e}"))
    };
    Ok(match val {
        Val::Null => J::Null,
        Val::Bool(b) => J::Bool(*b),
        Val::Num(Num::Int(i)) => J::from(*i as i64),
        Val::Num(Num::Float(f)) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Val::Num(_) => via_text(val)?,
        Val::TStr(b) | Val::BStr(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(items) => J::Array(items.iter().map(val_to_json).collect::<Result<_, _>>()?),
        Val::Obj(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => return via_text(val),
                };
                out.insert(key, val_to_json(v)?);
            }
            J::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn program(code: &str) -> JqProgram {
        match JqProgram::compile(code) {
            Ok(p) => p,
            Err(e) => panic!("{code}: {e:?}"),
        }
    }

    #[test]
    fn runs_over_event_and_state() {
        let p = program("(.state // {n: 0}) + {n: ((.state.n // 0) + .event.by)}");
        let out = p.run_one(&JqValue::from_json(
            &json!({"event": {"by": 2}, "state": {"n": 40}}),
        ));
        assert_eq!(out.ok(), Some(json!({"n": 42})));
    }

    #[test]
    fn an_object_of_converted_parts_keeps_their_order_and_values() {
        let event = JqValue::from_json(&json!({"by": 2}));
        let input = JqValue::object([
            ("event", event.clone()),
            ("state", JqValue::from_json(&json!({"n": 40}))),
            ("meta", JqValue::from_json(&json!({"offset": 7}))),
        ]);
        let keys = program("to_entries | map(.key)").run_one(&input).ok();
        assert_eq!(keys, Some(json!(["event", "state", "meta"])));
        let sum = program(".state.n + .event.by + .meta.offset")
            .run_one(&input)
            .ok();
        assert_eq!(sum, Some(json!(49)));
        let again = JqValue::object([("event", event)]);
        assert_eq!(program(".event.by").run_one(&again).ok(), Some(json!(2)));
    }

    #[test]
    fn truthiness_follows_jq() {
        assert_eq!(
            program(".a")
                .holds(&JqValue::from_json(&json!({"a": 0})))
                .ok(),
            Some(true)
        );
        assert_eq!(
            program(".a")
                .holds(&JqValue::from_json(&json!({"a": null})))
                .ok(),
            Some(false)
        );
        assert_eq!(
            program("empty").holds(&JqValue::from_json(&json!({}))).ok(),
            Some(false)
        );
    }

    #[test]
    fn compile_errors_point_into_the_program() {
        let err = JqProgram::compile(".a | nosuchfn").err();
        assert_eq!(
            err,
            Some(JqCompileError {
                message: "undefined filter `nosuchfn`".to_string(),
                offset: 5
            })
        );
        let err = JqProgram::compile("{a: }").err();
        assert!(err.is_some_and(|e| e.message.starts_with("expected")));
    }

    #[test]
    fn results_convert_to_the_same_json_as_jq_prints() {
        let p = program(r#"{a: 1, b: 2.5, c: "x", d: [null, true], e: {f: -3}, g: (1/3)}"#);
        let out = p.run_one(&JqValue::from_json(&json!({}))).ok();
        assert_eq!(
            out,
            Some(
                json!({"a": 1, "b": 2.5, "c": "x", "d": [null, true], "e": {"f": -3}, "g": 1.0 / 3.0})
            )
        );
    }

    #[test]
    fn deep_programs_are_refused_not_a_stack_overflow() {
        for deep in [
            format!("{}.{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}1{}", "[".repeat(300), "]".repeat(300)),
            vec!["."; 100_000].join("|"),
            "if . then ".repeat(10_000),
            ". as $x | ".repeat(10_000),
            "-".repeat(10_000),
            format!("\"{}\"", "\\(".repeat(10_000)),
        ] {
            let err = JqProgram::compile(&deep).err();
            assert!(
                err.as_ref()
                    .is_some_and(|e| e.message.contains("nests deeper")),
                "{err:?}"
            );
        }
        // strings and comments do not count; a wide object is not deep
        let wide: Vec<String> = (0..200).map(|i| format!("f{i}: .x")).collect();
        program(&format!("{{{}}}", wide.join(", ")));
        program(&format!(
            "\"{}\" # {}",
            "((((|||".repeat(100),
            "[".repeat(1000)
        ));
    }

    #[test]
    fn runtime_errors_are_values_not_panics() {
        let err = program(".a + 1").run(&json!({"a": "x"})).err();
        assert!(err.is_some_and(|e| e.message.contains("cannot")));
    }
}
