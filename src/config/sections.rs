//! Validation of the connection tables: `[kafka]`, `[registry]`, `[mongo]` and `[relay]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diagnostic::Code;
use super::env;
use super::raw::*;
use super::topology::*;
use super::validate::Validator;

impl Validator<'_, '_> {
    pub(super) fn kafka(
        &mut self,
        raw: Option<&Spanned<RawKafka>>,
        name: &str,
    ) -> Option<KafkaSettings> {
        let Some(raw) = raw else {
            self.diags.push(
                Code::MissingKey,
                0..0,
                "kafka",
                "missing table [kafka]",
                None,
            );
            return None;
        };
        let k = raw.get_ref();
        let brokers = self.required_key(&k.brokers, raw.span(), "kafka", "brokers");
        let brokers = brokers.and_then(|b| self.expanded(b, "kafka.brokers"));
        let group_id = match &k.group_id {
            Some(g) => self.expanded(g, "kafka.group_id")?,
            None => format!("outflow-{name}"),
        };
        let mut properties = BTreeMap::new();
        for (key, value) in &k.properties {
            let path = format!("kafka.properties.\"{key}\"");
            let secret = crate::kafka_auth::is_secret_key(key);
            // `${VAR:-default}` would put the secret in the file as the default
            let inline = !env::is_reference(value.get_ref()) || value.get_ref().contains(":-");
            if secret && inline {
                self.diags.push(
                    Code::InlineSecret,
                    value.span(),
                    &path,
                    format!("`{key}` is a secret and is written inline"),
                    Some(format!(
                        "write `\"${{VAR}}\"` and set VAR in the environment for `{key}`"
                    )),
                );
                continue;
            }
            let Some(v) = self.expanded(value, &path) else {
                continue;
            };
            match crate::kafka_client::refused_property(key, &v) {
                None => {
                    properties.insert(key.clone(), v);
                }
                Some(crate::kafka_client::Refused::Unknown) => self.diags.push(
                    Code::UnknownKey,
                    value.span(),
                    &path,
                    format!("`{key}` is not a librdkafka property"),
                    Some("librdkafka's CONFIGURATION.md lists them all: is it misspelt?".into()),
                ),
                Some(crate::kafka_client::Refused::Invalid(why)) => self.diags.push(
                    Code::InvalidValue,
                    value.span(),
                    &path,
                    format!("librdkafka refuses `{key}`: {why}"),
                    None,
                ),
            }
        }
        Some(KafkaSettings {
            brokers: brokers?,
            group_id,
            properties,
        })
    }

    pub(super) fn registry(
        &mut self,
        raw: Option<&Spanned<RawRegistry>>,
    ) -> Option<RegistrySettings> {
        let Some(raw) = raw else {
            self.diags.push(
                Code::MissingKey,
                0..0,
                "registry",
                "missing table [registry]",
                None,
            );
            return None;
        };
        let r = raw.get_ref();
        let url = self.required_key(&r.url, raw.span(), "registry", "url");
        let url = url.and_then(|u| self.expanded(u, "registry.url"));
        let compatibility = match &r.compatibility {
            Some(c) => self.word_key(c, "registry.compatibility", &CompatLevel::ALL)?,
            None => CompatLevel::Backward,
        };
        Some(RegistrySettings {
            url: url?.trim_end_matches('/').to_string(),
            compatibility,
            auto_register: r.auto_register.as_ref().is_none_or(|a| *a.get_ref()),
        })
    }

    pub(super) fn mongo(&mut self, raw: Option<&Spanned<RawMongo>>) -> Option<MongoSettings> {
        let Some(raw) = raw else {
            self.diags.push(
                Code::MissingKey,
                0..0,
                "mongo",
                "missing table [mongo]",
                None,
            );
            return None;
        };
        let m = raw.get_ref();
        let uri = self.required_key(&m.uri, raw.span(), "mongo", "uri");
        if let Some(u) = uri
            && has_inline_password(u.get_ref())
        {
            self.diags.push(
                Code::InlineSecret,
                u.span(),
                "mongo.uri",
                "the Mongo URI holds a password inline",
                Some("write `uri = \"${OUTFLOW_MONGO_URI}\"` and set it in the environment".into()),
            );
        }
        let uri = uri.and_then(|u| self.expanded(u, "mongo.uri"));
        let database = self.required_key(&m.database, raw.span(), "mongo", "database");
        let database = database.and_then(|d| self.expanded(d, "mongo.database"));
        let max_concurrent_batches = self.positive_key(
            &m.max_concurrent_batches,
            "mongo.max_concurrent_batches",
            MongoSettings::DEFAULT_CONCURRENT_BATCHES as i64,
            1024,
        ) as usize;
        Some(MongoSettings {
            uri: uri?,
            database: database?,
            max_concurrent_batches,
        })
    }

    pub(super) fn relay(&mut self, raw: Option<&Spanned<RawRelay>>, name: &str) -> RelaySettings {
        let r = raw.map(|r| r.get_ref());
        let none = None;
        RelaySettings {
            batch_records: self.positive_key(
                r.map_or(&none, |r| &r.batch_records),
                "relay.batch_records",
                1000,
                100_000,
            ) as usize,
            poll_interval: Duration::from_millis(self.positive_key(
                r.map_or(&none, |r| &r.poll_interval_ms),
                "relay.poll_interval_ms",
                50,
                60_000,
            ) as u64),
            checkpoint_topic: r.and_then(|r| r.checkpoint_topic.as_ref()).map_or_else(
                || format!("outflow-{name}.relay-checkpoints"),
                |t| t.get_ref().clone(),
            ),
            lease_ttl: Duration::from_millis(self.positive_key(
                r.map_or(&none, |r| &r.lease_ttl_ms),
                "relay.lease_ttl_ms",
                10_000,
                600_000,
            ) as u64),
        }
    }
}

/// Stands for a `${VAR}` without a default in [`as_written`].
const FROM_ENV: char = '\u{1}';

/// The value as written in the file: `${VAR:-default}` → default, `${VAR}` → [`FROM_ENV`].
fn as_written(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        match after[..end].split_once(":-") {
            Some((_, default)) => out.push_str(default),
            None => out.push(FROM_ENV),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `user:password@` with a password written in the file, also as a `${VAR:-default}`'s default;
/// `mongodb://app:${MONGO_PASSWORD}@db/` and `${OUTFLOW_MONGO_URI}` are fine.
fn has_inline_password(uri: &str) -> bool {
    let uri = as_written(uri);
    let rest = uri.split_once("://").map_or(uri.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| password.chars().any(|c| c != FROM_ENV))
}

#[cfg(test)]
mod tests {
    use super::has_inline_password;

    #[test]
    fn passwords_written_in_the_file_are_found() {
        assert!(has_inline_password("mongodb://app:s3cret@db/"));
        assert!(has_inline_password("mongodb://app:s3cret@${HOST}/"));
        assert!(has_inline_password("${URI:-mongodb://app:s3cret@db/}"));
        assert!(!has_inline_password("${OUTFLOW_MONGO_URI}"));
        assert!(!has_inline_password("mongodb://app:${MONGO_PASSWORD}@db/"));
        assert!(!has_inline_password(
            "${URI:-mongodb://db:27017/?replicaSet=rs0}"
        ));
        assert!(!has_inline_password("mongodb://app@db/"));
    }
}
