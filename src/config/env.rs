//! `${VAR}` and `${VAR:-default}` in topology values, expanded from the environment.

/// A `${...}` reference that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvError {
    /// The variable is unset and has no default; `offset` is where `${` starts in the value.
    Missing { name: String, offset: usize },
    /// `${` without a closing `}`.
    Unclosed { offset: usize },
}

/// Expands every reference in `value`, looking variables up with `lookup`.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, EnvError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(EnvError::Unclosed {
            offset: consumed + start,
        })?;
        let reference = &after[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        match lookup(name).filter(|v| !v.is_empty()) {
            Some(v) => out.push_str(&v),
            None => match default {
                Some(d) => out.push_str(d),
                None => {
                    return Err(EnvError::Missing {
                        name: name.to_string(),
                        offset: consumed + start,
                    });
                }
            },
        }
        consumed += start + 2 + end + 1;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// True when the whole value is one `${VAR}` reference (how secrets must be given).
pub fn is_reference(value: &str) -> bool {
    value.starts_with("${") && value.ends_with('}') && value.matches("${").count() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOST").then(|| "kafka:9092".to_string())
    }

    #[test]
    fn expands_set_and_defaulted_variables() {
        assert_eq!(expand("${HOST}", env).ok().as_deref(), Some("kafka:9092"));
        assert_eq!(expand("a-${NOPE:-b}-c", env).ok().as_deref(), Some("a-b-c"));
        assert_eq!(expand("plain", env).ok().as_deref(), Some("plain"));
    }

    #[test]
    fn reports_missing_and_unclosed() {
        assert_eq!(
            expand("x${NOPE}", env),
            Err(EnvError::Missing {
                name: "NOPE".into(),
                offset: 1
            })
        );
        assert_eq!(expand("${HOST", env), Err(EnvError::Unclosed { offset: 0 }));
    }

    #[test]
    fn secret_references() {
        assert!(is_reference("${KAFKA_PASSWORD}"));
        assert!(!is_reference("hunter2"));
        assert!(!is_reference("${A}${B}"));
    }
}
