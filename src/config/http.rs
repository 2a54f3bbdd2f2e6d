//! Validation of the HTTP side: `[[ingress]]` routes and `[http]` (listen addresses, limits, tokens).

use std::path::PathBuf;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diagnostic::{Code, did_you_mean};
use super::raw::*;
use super::topology::*;
use super::validate::Validator;

impl Validator<'_, '_> {
    pub(super) fn ingress_route(
        &mut self,
        raw: &Spanned<RawIngress>,
        i: usize,
        sources: &[Source],
    ) -> Option<IngressRoute> {
        let path = format!("ingress[{i}]");
        let r = raw.get_ref();
        let method = r
            .method
            .as_ref()
            .map_or("POST".to_string(), |m| m.get_ref().to_ascii_uppercase());
        if !["POST", "PUT"].contains(&method.as_str()) {
            let span = r.method.as_ref().map_or(raw.span(), |m| m.span());
            self.diags.push(
                Code::InvalidValue,
                span,
                format!("{path}.method"),
                format!("ingress method `{method}` is not POST or PUT"),
                None,
            );
        }
        let route = self.required_key(&r.path, raw.span(), &path, "path");
        if let Some(p) = route
            && (!p.get_ref().starts_with('/') || p.get_ref().contains(['{', '}', '*']))
        {
            self.diags.push(
                Code::InvalidValue,
                p.span(),
                format!("{path}.path"),
                format!(
                    "path `{}` must start with `/` and have no parameters",
                    p.get_ref()
                ),
                None,
            );
        }
        let topic = self.required_key(&r.topic, raw.span(), &path, "topic");
        let source = topic.and_then(|t| {
            let found = sources.iter().find(|s| &s.topic == t.get_ref());
            if found.is_none() {
                self.diags.push(
                    Code::UnknownTopic,
                    t.span(),
                    format!("{path}.topic"),
                    format!(
                        "ingress produces to `{}`, which no source reads",
                        t.get_ref()
                    ),
                    did_you_mean(t.get_ref(), sources.iter().map(|s| s.topic.as_str())),
                );
            }
            found
        });
        let schema = match (&r.record_type, source) {
            (Some(t), Some(s)) => {
                let found = s.schema_for(t.get_ref()).cloned();
                if found.is_none() {
                    self.diags.push(
                        Code::InvalidValue,
                        t.span(),
                        format!("{path}.type"),
                        format!(
                            "topic `{}` carries no record type `{}`",
                            s.topic,
                            t.get_ref()
                        ),
                        did_you_mean(t.get_ref(), s.schemas.iter().map(|x| x.short_name())),
                    );
                }
                found
            }
            (None, Some(s)) if s.schemas.len() == 1 => s.schemas.first().cloned(),
            (None, Some(_)) => {
                self.diags.push(
                    Code::MissingKey,
                    raw.span(),
                    &path,
                    "missing `type`: the topic carries several record types",
                    None,
                );
                None
            }
            _ => None,
        };
        let key = match &r.key {
            Some(k) => Some(self.jq(k, &format!("{path}.key"))?),
            None => {
                if source.is_some_and(|s| s.key_field.is_none()) {
                    self.diags.push(
                        Code::MissingKey,
                        raw.span(),
                        &path,
                        "missing `key`: the source declares no key field",
                        Some("add `key = \".someId\"` (jq over the body)".into()),
                    );
                }
                None
            }
        };
        Some(IngressRoute {
            method,
            path: route?.get_ref().clone(),
            topic: source?.topic.clone(),
            schema: schema?,
            key,
        })
    }

    pub(super) fn http(&mut self, raw: Option<&Spanned<RawHttp>>) -> HttpSettings {
        let defaults = HttpSettings::default();
        let Some(raw) = raw else { return defaults };
        let h = raw.get_ref();
        let listen = h
            .listen
            .as_ref()
            .and_then(|l| self.expanded(l, "http.listen"))
            .unwrap_or(defaults.listen);
        let admin_listen = h
            .admin_listen
            .as_ref()
            .and_then(|l| self.expanded(l, "http.admin_listen"));
        let max_body = self.positive_key(
            &h.max_body_bytes,
            "http.max_body_bytes",
            defaults.max_body_bytes as i64,
            64 << 20,
        );
        let timeout = self.positive_key(
            &h.produce_timeout_ms,
            "http.produce_timeout_ms",
            defaults.produce_timeout.as_millis() as i64,
            300_000,
        );
        let tokens = h.tokens.as_ref().map(|t| t.get_ref());
        let mut token = |value: Option<&SStr>, key: &str| {
            value.and_then(|v| self.token_source(v, &format!("http.tokens.{key}")))
        };
        HttpSettings {
            ingress_token: token(tokens.and_then(|t| t.ingress.as_ref()), "ingress"),
            query_token: token(tokens.and_then(|t| t.query.as_ref()), "query"),
            admin_token: token(tokens.and_then(|t| t.admin.as_ref()), "admin"),
            listen,
            admin_listen,
            max_body_bytes: max_body as usize,
            produce_timeout: Duration::from_millis(timeout as u64),
        }
    }

    /// `env:NAME` or `file:/path`; anything else would be the secret itself (E014).
    fn token_source(&mut self, value: &SStr, path: &str) -> Option<TokenSource> {
        let text = value.get_ref();
        if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            return Some(TokenSource::Env(name.to_string()));
        }
        if let Some(file) = text.strip_prefix("file:").filter(|f| !f.is_empty()) {
            return Some(TokenSource::File(PathBuf::from(file)));
        }
        self.diags.push(
            Code::InlineSecret,
            value.span(),
            path,
            "a token must be given as `env:NAME` or `file:/path`, never inline",
            Some("write `ingress = \"env:OUTFLOW_INGRESS_TOKEN\"`".into()),
        );
        None
    }
}
