//! Entity queries ("interactive queries"): current state of an entity and its event log, over HTTP.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use serde_json::json;

use crate::http::AppState;
use crate::store::documents::{EVENT_LOG, to_json};

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

fn unavailable(e: mongodb::error::Error) -> Response {
    tracing::warn!("query failed: {e}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        axum::Json(json!({ "error": "the store is unavailable" })),
    )
        .into_response()
}

/// The ETag of an entity version.
fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

/// `GET /entities/{kind}/{id}`: state, version, updatedAt, lastEventId; `If-None-Match` → 304.
pub async fn entity(
    State(app): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(entity) = app.topology.entity(&kind) else {
        let kinds: Vec<&str> = app
            .topology
            .entities
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        return not_found(format!(
            "unknown entity kind `{kind}` (known: {})",
            kinds.join(", ")
        ));
    };
    let found = app
        .store
        .database()
        .collection::<Document>(&entity.collection)
        .find_one(doc! { "_id": &id })
        .await;
    let doc = match found {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(format!("no {kind} `{id}`")),
        Err(e) => return unavailable(e),
    };
    let version = doc.get_i64("version").unwrap_or(0);
    let tag = etag(version);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    let body = json!({
        "kind": kind,
        "id": id,
        "state": doc.get("state").cloned().map(to_json),
        "version": version,
        "updatedAt": doc.get_datetime("updatedAt").ok().and_then(|t| t.try_to_rfc3339_string().ok()),
        "lastEventId": doc.get_str("lastEventId").ok(),
    });
    (StatusCode::OK, [(header::ETAG, tag)], axum::Json(body)).into_response()
}

/// `GET /entities/{kind}/{id}/events?limit=&after=`: the entity's events by version, paged.
pub async fn events(
    State(app): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if app.topology.entity(&kind).is_none() {
        return not_found(format!("unknown entity kind `{kind}`"));
    }
    let number = |name: &str, default: i64| -> Result<i64, String> {
        match params.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("`{name}` must be a non-negative integer, got `{v}`")),
        }
    };
    let (limit, after) = match (number("limit", 50), number("after", 0)) {
        (Ok(l), Ok(a)) => (l.clamp(1, 1000), a),
        (Err(e), _) | (_, Err(e)) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": e }))).into_response();
        }
    };
    let cursor = app
        .store
        .database()
        .collection::<Document>(EVENT_LOG)
        .find(doc! { "entityKind": &kind, "entityId": &id, "version": { "$gt": after } })
        .sort(doc! { "version": 1 })
        .limit(limit)
        .await;
    let docs: Vec<Document> = match cursor {
        Ok(c) => match c.try_collect().await {
            Ok(d) => d,
            Err(e) => return unavailable(e),
        },
        Err(e) => return unavailable(e),
    };
    if docs.is_empty() && after == 0 {
        return not_found(format!("no events for {kind} `{id}`"));
    }
    let next = (docs.len() as i64 == limit)
        .then(|| docs.last().and_then(|d| d.get_i64("version").ok()))
        .flatten();
    let events: Vec<serde_json::Value> = docs
        .into_iter()
        .map(|d| {
            json!({
                "eventId": d.get_str("_id").ok(),
                "type": d.get_str("type").ok(),
                "version": d.get_i64("version").ok(),
                "payload": d.get("payload").cloned().map(to_json),
                "source": d.get("source").cloned().map(to_json),
                "recordedAt": d.get_datetime("recordedAt").ok().and_then(|t| t.try_to_rfc3339_string().ok()),
            })
        })
        .collect();
    axum::Json(json!({ "kind": kind, "id": id, "events": events, "next": next })).into_response()
}
