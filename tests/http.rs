//! The HTTP API against `outflow run` on the real local stack: ingress, queries, OpenAPI, admin.

mod common;

use std::time::Duration;

use common::{TestTopology, eventually, read_committed, wait_ready};
use mongodb::bson::doc;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn post(
    base: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client()
        .post(format!("{base}{path}"))
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// GET `url`; a request that gets no answer fails the test, naming the url.
async fn get(url: impl AsRef<str>) -> reqwest::Response {
    let url = url.as_ref();
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET `url` as JSON (`Value::Null` when the body is not JSON).
async fn get_json(url: impl AsRef<str>) -> Value {
    get(url).await.json().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_posted_quote_reaches_mongo_and_entity_updates_and_can_be_queried() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let _outflow = t.run(&[]);
    let base = t.http_base();
    wait_ready(&base).await;
    let quote = json!({"quoteId": "http-q1", "customerId": "c1", "product": "TRAVEL", "coverageAmount": 2500.0, "requestedAt": 1});
    let (status, body, _) = post(
        &base,
        "/quotes",
        &quote.to_string(),
        &[JSON, ("idempotency-key", "req-1")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["eventId"], "req-1",
        "the Idempotency-Key is the event id"
    );
    assert_eq!(body["topic"], t.topic("quote-events"));
    assert!(
        body["offset"].as_i64().is_some() && body["partition"].as_i64().is_some(),
        "{body}"
    );
    // the same request again: accepted, but processed once
    let (status, _, _) = post(
        &base,
        "/quotes",
        &quote.to_string(),
        &[JSON, ("idempotency-key", "req-1")],
    )
    .await;
    assert_eq!(status, 202);
    let priced = json!({"quoteId": "http-q1", "premium": 31.0, "validUntil": 2, "pricedAt": 2});
    let (status, body, _) = post(&base, "/quotes/prices", &priced.to_string(), &[JSON]).await;
    assert_eq!(status, 202, "{body}");

    let url = format!("{base}/entities/quote/http-q1");
    let priced_state = eventually(Duration::from_secs(60), async || {
        let r = client().get(&url).send().await;
        match r {
            Ok(r) if r.status() == 200 => r.json::<Value>().await.is_ok_and(|v| v["version"] == 2),
            _ => false,
        }
    })
    .await;
    assert!(priced_state, "GET {url} never showed version 2");
    let response = get(&url).await;
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let entity: Value = response.json().await.unwrap_or_default();
    assert_eq!(entity["state"]["status"], "PRICED");
    assert_eq!(entity["state"]["premium"], 31.0);
    assert_eq!(
        entity["lastEventId"].as_str().map(str::len),
        Some(36),
        "a generated UUIDv7 event id: {entity}"
    );
    assert_eq!(etag.as_deref(), Some("\"v2\""));
    let not_modified = client()
        .get(&url)
        .header("if-none-match", "\"v2\"")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(not_modified.status(), 304);

    let events: Value = get_json(format!("{url}/events?limit=1")).await;
    assert_eq!(events["events"][0]["eventId"], "req-1");
    assert_eq!(events["events"][0]["version"], 1);
    assert_eq!(events["next"], 1);
    let page2: Value = get_json(format!("{url}/events?limit=1&after=1")).await;
    assert_eq!(page2["events"][0]["type"], "QuotePriced");

    let updates = read_committed(
        &t.topic("entity-updates"),
        3,
        2,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(
        updates.len(),
        2,
        "two updates for two events (the repeated request was a no-op)"
    );
    assert_eq!(t.count("event_log", doc! {}).await, 2);

    // the metrics the dashboards use are there after traffic
    let metrics = get(format!("{base}/metrics"))
        .await
        .text()
        .await
        .unwrap_or_default();
    for name in [
        "outflow_source_records_total",
        "outflow_store_txn_seconds",
        "outflow_relay_published_total",
        "outflow_ingress_requests_total",
        "outflow_batch_size",
        "outflow_source_record_age_seconds",
        "outflow_batch_phase_seconds{phase=\"collect\"",
        "outflow_batch_phase_seconds{phase=\"read\"",
        "outflow_batch_phase_seconds{phase=\"commit\"",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains("status=\"202\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_says_why() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let _outflow = t.run(&[]);
    let base = t.http_base();
    wait_ready(&base).await;
    let (status, body, _) = post(&base, "/quotes", "{not json", &[JSON]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "body is not JSON");
    let (status, body, _) = post(
        &base,
        "/quotes",
        r#"{"quoteId": 5, "product": "BOAT"}"#,
        &[JSON],
    )
    .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(
        fields,
        vec![
            "$.quoteId",
            "$.customerId",
            "$.product",
            "$.coverageAmount",
            "$.requestedAt"
        ],
        "{body}"
    );
    assert_eq!(body["fields"][0]["expected"], "string");
    assert_eq!(body["fields"][0]["got"], "integer 5");
    let (status, body, _) = post(
        &base,
        "/quotes",
        &format!("{{\"pad\": \"{}\"}}", "x".repeat(20_000)),
        &[JSON],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["limit"], 16384);
    let (status, body, _) = post(
        &base,
        "/quotes",
        "quoteId=1",
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let (status, _, _) = post(&base, "/quotes", &deep, &[JSON]).await;
    assert_eq!(status, 400, "deeply nested JSON is refused, not a crash");
    let unknown = get(format!("{base}/entities/policy/p1")).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap_or_default();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown entity kind `policy`")),
        "{body}"
    );
    let missing = get(format!("{base}/entities/quote/nope")).await;
    assert_eq!(missing.status(), 404);
    let bad_limit = get(format!("{base}/entities/quote/nope/events?limit=abc")).await;
    assert_eq!(bad_limit.status(), 400);
    assert_eq!(
        t.count("event_log", doc! {}).await,
        0,
        "nothing refused was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_tokens_guard_their_route_groups() {
    let t = TestTopology::with_extra(
        "pipeline.toml",
        "tokens = { ingress = \"env:IT_INGRESS_TOKEN\", admin = \"env:IT_ADMIN_TOKEN\" }",
    );
    t.prepare().await;
    let server = t.run_with_env(
        &[],
        &[
            ("IT_INGRESS_TOKEN", "s3cret-ingress"),
            ("IT_ADMIN_TOKEN", "s3cret-admin"),
        ],
    );
    let base = t.http_base();
    let up = eventually(Duration::from_secs(60), async || {
        client().get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    assert!(up);
    let quote = json!({"quoteId": "tok-1", "customerId": "c", "product": "AUTO", "coverageAmount": 1.0, "requestedAt": 1}).to_string();
    let (status, body, headers) = post(&base, "/quotes", &quote, &[JSON]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let (status, body, _) = post(
        &base,
        "/quotes",
        &quote,
        &[JSON, ("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, _, _) = post(
        &base,
        "/quotes",
        &quote,
        &[JSON, ("authorization", "Bearer s3cret-ingress")],
    )
    .await;
    assert_eq!(status, 202);
    let metrics = get(format!("{base}/metrics")).await;
    assert_eq!(metrics.status(), 401, "admin routes have their own token");
    let metrics = client()
        .get(format!("{base}/metrics"))
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metrics.status(), 200);
    let open = get(format!("{base}/entities/quote/tok-1")).await;
    assert_ne!(open.status(), 401, "query routes have no token here");
    assert!(
        !server.log_text().contains("s3cret"),
        "a token leaked into the log"
    );
    // without its token variable a server refuses to start, naming the variable
    let mut no_token = t.run(&[]);
    let status = no_token.wait_exit(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.code() == Some(1)), "{status:?}");
    assert!(
        no_token.log_text().contains("IT_INGRESS_TOKEN"),
        "{}",
        no_token.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_is_valid_and_its_examples_are_accepted() {
    let t = TestTopology::new("pipeline.toml");
    t.prepare().await;
    let _outflow = t.run(&[]);
    let base = t.http_base();
    wait_ready(&base).await;
    let doc: Value = get_json(format!("{base}/openapi.json")).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let file = t.path.with_extension("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let validator = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local/openapi-validate.sh"
    );
    let out = std::process::Command::new(validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut posted = 0;
    for (path, item) in &paths {
        if let Some(example) =
            item["post"]["requestBody"]["content"]["application/json"]["example"].as_object()
        {
            let (status, body, _) = post(
                &base,
                path,
                &Value::Object(example.clone()).to_string(),
                &[JSON],
            )
            .await;
            assert_eq!(
                status, 202,
                "the example of POST {path} was refused: {body}"
            );
            posted += 1;
        }
    }
    assert_eq!(posted, 4, "one example per ingress route");
    assert!(
        paths.contains_key("/entities/quote/{id}")
            && paths.contains_key("/entities/enrollment/{id}/events")
    );
}
