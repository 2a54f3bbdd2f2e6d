//! Validation of the repeated tables: sources, output topics and stages with their emits.

use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use super::diagnostic::{Code, did_you_mean};
use super::raw::*;
use super::topology::*;
use super::validate::Validator;

impl Validator<'_, '_> {
    pub(super) fn source(&mut self, raw: &Spanned<RawSource>, i: usize) -> Option<Source> {
        let path = format!("sources[{i}]");
        let s = raw.get_ref();
        let name = self.required_key(&s.name, raw.span(), &path, "name");
        let topic = self.required_key(&s.topic, raw.span(), &path, "topic");
        let partitions = self.positive_key(&s.partitions, &format!("{path}.partitions"), 3, 10_000);
        let strategy = match &s.subject_strategy {
            Some(w) => self.word_key(
                w,
                &format!("{path}.subject_strategy"),
                &SubjectStrategy::ALL,
            ),
            None => Some(SubjectStrategy::TopicName),
        };
        if s.schemas.is_empty() {
            self.diags.push(
                Code::MissingKey,
                raw.span(),
                &path,
                "missing required key `schemas` (the Avro schemas of the records on this topic)",
                None,
            );
        }
        let schemas: Vec<_> = s
            .schemas
            .iter()
            .enumerate()
            .filter_map(|(j, f)| self.schema(f, &format!("{path}.schemas[{j}]")))
            .collect();
        if strategy == Some(SubjectStrategy::TopicName) && s.schemas.len() > 1 {
            let at = s.subject_strategy.as_ref().map_or(raw.span(), |w| w.span());
            self.diags.push(
                Code::SubjectStrategy,
                at,
                format!("{path}.subject_strategy"),
                format!(
                    "subject strategy topic_name gives one subject per topic, but {} schemas are listed",
                    s.schemas.len()
                ),
                Some("use subject_strategy = \"topic_record_name\" for several event types on one topic".into()),
            );
        }
        for (field, key) in [(&s.key, "key"), (&s.event_id, "event_id")] {
            if let Some(f) = field {
                for schema in &schemas {
                    if !schema.field_names().contains(&f.get_ref().as_str()) {
                        self.diags.push(
                            Code::InvalidValue,
                            f.span(),
                            format!("{path}.{key}"),
                            format!(
                                "field `{}` is not in record `{}`",
                                f.get_ref(),
                                schema.full_name
                            ),
                            did_you_mean(f.get_ref(), schema.field_names()),
                        );
                    }
                }
            }
        }
        let dlq_topic = match (&s.dlq, &topic) {
            (Some(d), _) => d.get_ref().clone(),
            (None, Some(t)) => {
                let default = format!("{}.dlq", t.get_ref());
                self.diags.push(
                    Code::DlqDefault,
                    raw.span(),
                    &path,
                    format!("no `dlq` given: dead letters go to `{default}`"),
                    Some(format!("set `dlq = \"{default}\"` to make it explicit")),
                );
                default
            }
            (None, None) => String::new(),
        };
        let batch = self.batch(s.batch.as_ref(), &format!("{path}.batch"));
        Some(Source {
            name: name?.get_ref().clone(),
            topic: topic?.get_ref().clone(),
            partitions: partitions as i32,
            subject_strategy: strategy?,
            schemas,
            key_field: s.key.as_ref().map(|k| k.get_ref().clone()),
            event_id_field: s.event_id.as_ref().map(|k| k.get_ref().clone()),
            dlq_topic,
            batch,
        })
    }

    fn batch(&mut self, raw: Option<&Spanned<RawBatch>>, path: &str) -> BatchSettings {
        let default = BatchSettings::default();
        let Some(raw) = raw else { return default };
        let b = raw.get_ref();
        BatchSettings {
            max_records: self.positive_key(
                &b.max_records,
                &format!("{path}.max_records"),
                default.max_records as i64,
                100_000,
            ) as usize,
            max_bytes: self.positive_key(
                &b.max_bytes,
                &format!("{path}.max_bytes"),
                default.max_bytes as i64,
                256 << 20,
            ) as usize,
            linger: Duration::from_millis(self.positive_key(
                &b.linger_ms,
                &format!("{path}.linger_ms"),
                default.linger.as_millis() as i64,
                60_000,
            ) as u64),
        }
    }

    pub(super) fn output_topic(
        &mut self,
        raw: &Spanned<RawTopic>,
        i: usize,
    ) -> Option<OutputTopic> {
        let path = format!("topics[{i}]");
        let t = raw.get_ref();
        let name = self.required_key(&t.name, raw.span(), &path, "name");
        let partitions = self.positive_key(&t.partitions, &format!("{path}.partitions"), 3, 10_000);
        let schema = self.required_key(&t.schema, raw.span(), &path, "schema");
        let schema = schema.and_then(|s| self.schema(s, &format!("{path}.schema")));
        let strategy = match &t.subject_strategy {
            Some(w) => self.word_key(
                w,
                &format!("{path}.subject_strategy"),
                &SubjectStrategy::ALL,
            ),
            None => Some(SubjectStrategy::TopicName),
        };
        Some(OutputTopic {
            name: name?.get_ref().clone(),
            partitions: partitions as i32,
            schema: schema?,
            subject_strategy: strategy?,
        })
    }

    pub(super) fn stage(
        &mut self,
        raw: &Spanned<RawStage>,
        i: usize,
        sources: &[Source],
        entities: &[Entity],
        topics: &[OutputTopic],
    ) -> Option<StageDef> {
        let path = format!("stages[{i}]");
        let s = raw.get_ref();
        let name = self.required_key(&s.name, raw.span(), &path, "name");
        let source = self.required_key(&s.source, raw.span(), &path, "source");
        if let Some(src) = source
            && !sources.iter().any(|x| &x.name == src.get_ref())
        {
            self.diags.push(
                Code::UnknownSource,
                src.span(),
                format!("{path}.source"),
                format!(
                    "stage reads from source `{}`, which is not declared",
                    src.get_ref()
                ),
                did_you_mean(src.get_ref(), sources.iter().map(|x| x.name.as_str())),
            );
        }
        let kind = match s.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("jq") => {
                let state = self.required_key(&s.state, raw.span(), &path, "state");
                state
                    .and_then(|p| self.jq(p, &format!("{path}.state")))
                    .map(|state| StageKind::Jq { state })
            }
            Some(custom) => {
                let known = self.ctx_custom_stages();
                if known.iter().any(|k| k == custom) {
                    Some(StageKind::Custom {
                        name: custom.to_string(),
                    })
                } else {
                    let span = s.kind.as_ref().map_or(raw.span(), |k| k.span());
                    self.diags.push(
                        Code::UnknownStageKind,
                        span,
                        format!("{path}.kind"),
                        format!("stage kind `{custom}` is neither `jq` nor a registered custom stage"),
                        did_you_mean(custom, known.iter().map(String::as_str).chain(["jq"]))
                            .or_else(|| Some("custom stages are registered on the runtime builder of your own binary".into())),
                    );
                    None
                }
            }
        };
        let when = s
            .when
            .as_ref()
            .and_then(|w| self.jq(w, &format!("{path}.when")));
        let when_ok = s.when.is_none() || when.is_some();
        let entity = match &s.entity {
            Some(e) => Some(e),
            None => {
                self.diags.push(
                    Code::MissingKey,
                    raw.span(),
                    &path,
                    "missing required key `entity` ({ kind, id })",
                    None,
                );
                None
            }
        };
        let (mut entity_kind, mut entity_id) = (None, None);
        if let Some(e) = entity {
            let epath = format!("{path}.entity");
            if let Some(k) = self.required_key(&e.get_ref().kind, e.span(), &epath, "kind") {
                if entities.iter().any(|x| &x.name == k.get_ref()) {
                    entity_kind = Some(k.get_ref().clone());
                } else {
                    self.diags.push(
                        Code::UnknownEntity,
                        k.span(),
                        format!("{epath}.kind"),
                        format!(
                            "entity kind `{}` is not declared in [[entities]]",
                            k.get_ref()
                        ),
                        did_you_mean(k.get_ref(), entities.iter().map(|x| x.name.as_str())),
                    );
                }
            }
            if let Some(id) = self.required_key(&e.get_ref().id, e.span(), &epath, "id") {
                entity_id = self.jq(id, &format!("{epath}.id"));
            }
        }
        let emits: Vec<Option<EmitDef>> = s
            .emit
            .iter()
            .enumerate()
            .map(|(j, e)| self.emit(e, &format!("{path}.emit[{j}]"), sources, topics))
            .collect();
        let emits: Option<Vec<EmitDef>> = emits.into_iter().collect();
        if !when_ok {
            return None;
        }
        Some(StageDef {
            name: name?.get_ref().clone(),
            source: source?.get_ref().clone(),
            kind: kind?,
            when,
            entity_kind: entity_kind?,
            entity_id: entity_id?,
            emits: emits?,
        })
    }

    fn emit(
        &mut self,
        raw: &Spanned<RawEmit>,
        path: &str,
        sources: &[Source],
        topics: &[OutputTopic],
    ) -> Option<EmitDef> {
        let e = raw.get_ref();
        let topic = self.required_key(&e.topic, raw.span(), path, "topic");
        let key = self.required_key(&e.key, raw.span(), path, "key");
        let value = self.required_key(&e.value, raw.span(), path, "value");
        let key = key.and_then(|k| self.jq(k, &format!("{path}.key")));
        let value = value.and_then(|v| self.jq(v, &format!("{path}.value")));
        let when = e
            .when
            .as_ref()
            .and_then(|w| self.jq(w, &format!("{path}.when")));
        let explicit = e
            .schema
            .as_ref()
            .and_then(|s| self.schema(s, &format!("{path}.schema")));
        let topic = topic?;
        let output = topics.iter().find(|t| &t.name == topic.get_ref());
        let chained = sources.iter().find(|s| &s.topic == topic.get_ref());
        let (schema, strategy) = match (output, chained) {
            (Some(t), _) => (
                explicit.or_else(|| Some(Arc::clone(&t.schema))),
                t.subject_strategy,
            ),
            (None, Some(s)) => {
                let schema =
                    explicit.or_else(|| (s.schemas.len() == 1).then(|| Arc::clone(&s.schemas[0])));
                if schema.is_none() && e.schema.is_none() {
                    self.diags.push(
                        Code::MissingKey,
                        raw.span(),
                        path,
                        "missing `schema`: the target source topic carries several record types",
                        None,
                    );
                }
                (schema, s.subject_strategy)
            }
            (None, None) => {
                let known: Vec<&str> = topics
                    .iter()
                    .map(|t| t.name.as_str())
                    .chain(sources.iter().map(|s| s.topic.as_str()))
                    .collect();
                self.diags.push(
                    Code::UnknownTopic,
                    topic.span(),
                    format!("{path}.topic"),
                    format!("emit targets topic `{}`, which is neither in [[topics]] nor a source topic", topic.get_ref()),
                    did_you_mean(topic.get_ref(), known).or_else(|| Some("declare it under [[topics]] with its schema".into())),
                );
                return None;
            }
        };
        if e.when.is_some() && when.is_none() {
            return None;
        }
        Some(EmitDef {
            topic: topic.get_ref().clone(),
            schema: schema?,
            subject_strategy: strategy,
            when,
            key: key?,
            value: value?,
        })
    }
}
