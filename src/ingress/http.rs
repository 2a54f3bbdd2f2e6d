//! The ingress HTTP handler: JSON body → checked against the route's Avro schema → 202 once Kafka acked.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::{EventProducer, ProduceError};
use crate::config::{IngressRoute, Topology};

/// What an ingress route needs at request time.
pub struct IngressContext {
    pub topology: Arc<Topology>,
    pub producer: Arc<EventProducer>,
    pub route: IngressRoute,
}

fn error(status: StatusCode, body: Json) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Handles one request; every refusal says why and writes nothing.
pub async fn ingest(ctx: Arc<IngressContext>, headers: HeaderMap, body: Body) -> Response {
    let route_label = format!("{} {}", ctx.route.method, ctx.route.path);
    let response = handle(&ctx, &headers, body).await;
    metrics::counter!(crate::metrics::INGRESS_REQUESTS, "route" => route_label, "status" => response.status().as_u16().to_string()).increment(1);
    response
}

async fn handle(ctx: &IngressContext, headers: &HeaderMap, body: Body) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({ "error": "unsupported content type", "detail": format!("expected application/json, got `{content_type}`") }),
        );
    }
    let limit = ctx.topology.http.max_body_bytes;
    let Ok(bytes) = to_bytes(body, limit).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": "body too large", "limit": limit }),
        );
    };
    let mut event: Json = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({ "error": "body is not JSON", "detail": e.to_string(), "line": e.line(), "column": e.column() }),
            );
        }
    };
    if !event.is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            json!({ "error": "body must be a JSON object" }),
        );
    }
    let source = ctx.topology.source_for_topic(&ctx.route.topic);
    let id_field = source.and_then(|s| s.event_id_field.clone());
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let event_id = settle_event_id(&mut event, id_field.as_deref(), idempotency_key);
    let key = match &ctx.route.key {
        Some(program) => match program.run_one(&crate::stage::jq::JqValue::from_json(&event)) {
            Ok(Json::String(s)) if !s.is_empty() => Some(s),
            Ok(Json::Number(n)) => Some(n.to_string()),
            Ok(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "no key", "detail": format!("the key `{}` gave {other}", program.code().trim()) }),
                );
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "no key", "detail": e.to_string() }),
                );
            }
        },
        None => None,
    };
    let produced = ctx
        .producer
        .produce_keyed(
            &ctx.route.topic,
            Some(ctx.route.schema.short_name()),
            &event,
            &event_id,
            key,
        )
        .await;
    match produced {
        Ok(p) => (StatusCode::ACCEPTED, axum::Json(p)).into_response(),
        Err(ProduceError::Invalid { schema, errors }) => error(
            StatusCode::BAD_REQUEST,
            json!({ "error": "body does not fit the schema", "schema": schema, "fields": errors }),
        ),
        Err(ProduceError::MissingKey(field)) => error(
            StatusCode::BAD_REQUEST,
            json!({ "error": "no key", "detail": format!("field `{field}` is missing or not a string/number") }),
        ),
        // the registry refused the route's schema (incompatible, invalid): a deployment problem
        // that no retry of the request fixes
        Err(ProduceError::Registry(e)) if !e.transient => {
            tracing::error!(event_id, "ingress could not produce: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "the schema registry refused this route's schema; sending again will not help", "detail": e.message, "eventId": event_id }),
            )
        }
        Err(e) => {
            tracing::warn!(event_id, "ingress could not produce: {e}");
            let body = if e.may_be_written() {
                json!({ "error": "Kafka did not acknowledge the event in time; it may have been written: send it again with `Idempotency-Key` set to this eventId (outflow processes it once)", "eventId": event_id })
            } else {
                json!({ "error": "Kafka or the schema registry is unavailable; nothing was written", "eventId": event_id })
            };
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, body);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
    }
}

/// The event's id: the `Idempotency-Key` header, else the body's id field (text or a number),
/// else a new UUIDv7; written into the body's id field, a number kept a number (an Avro `long`).
fn settle_event_id(event: &mut Json, field: Option<&str>, idempotency_key: Option<&str>) -> String {
    let in_body = field.and_then(|f| event.get(f)).cloned();
    let from_body = match &in_body {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let id = idempotency_key
        .map(str::to_string)
        .or(from_body)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if let (Some(field), Some(map)) = (field, event.as_object_mut()) {
        let value = match (&in_body, id.parse::<i64>()) {
            (Some(Json::Number(_)), Ok(n)) => Json::from(n),
            _ => Json::String(id.clone()),
        };
        map.insert(field.to_string(), value);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::settle_event_id;
    use serde_json::json;

    #[test]
    fn the_event_id_comes_from_the_header_the_body_or_a_new_uuid_and_keeps_its_type() {
        let mut numeric = json!({"eventId": 42, "x": 1});
        assert_eq!(settle_event_id(&mut numeric, Some("eventId"), None), "42");
        assert_eq!(numeric["eventId"], 42, "a long stays a long");
        let mut keyed = json!({"eventId": 42});
        assert_eq!(
            settle_event_id(&mut keyed, Some("eventId"), Some("77")),
            "77"
        );
        assert_eq!(keyed["eventId"], 77);
        let mut text = json!({"eventId": "e-1"});
        assert_eq!(settle_event_id(&mut text, Some("eventId"), Some("k")), "k");
        assert_eq!(text["eventId"], "k");
        let mut none = json!({});
        let id = settle_event_id(&mut none, Some("eventId"), None);
        assert!(uuid::Uuid::parse_str(&id).is_ok() && none["eventId"] == id.as_str());
        let mut unnamed = json!({"a": 1});
        assert!(!settle_event_id(&mut unnamed, None, Some("h")).is_empty());
        assert_eq!(
            unnamed,
            json!({"a": 1}),
            "no id field: the body is left alone"
        );
    }
}
