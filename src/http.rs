//! The HTTP server: ingress and query routes, `/openapi.json`, and the admin routes (`/metrics`,
//! `/healthz`, `/readyz`), with optional bearer tokens per route group and a request id per request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::watch;

use crate::config::{TokenSource, Topology};
use crate::ingress::EventProducer;
use crate::ingress::http::{IngressContext, ingest};
use crate::store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("token for {group} routes: {reason}")]
    Token { group: &'static str, reason: String },
    #[error(transparent)]
    Produce(#[from] crate::ingress::ProduceError),
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub topology: Arc<Topology>,
    pub store: Store,
    pub metrics: Option<PrometheusHandle>,
    /// The processor's consumer group (`None`: this process runs no processor).
    pub processor_group: Option<Arc<crate::source::GroupStatus>>,
}

/// Reads a token from its source once, at start-up.
fn resolve(
    group: &'static str,
    source: &Option<TokenSource>,
) -> Result<Option<Arc<str>>, HttpError> {
    let token = match source {
        None => return Ok(None),
        Some(TokenSource::Env(name)) => std::env::var(name).map_err(|_| HttpError::Token {
            group,
            reason: format!("environment variable `{name}` is not set"),
        })?,
        Some(TokenSource::File(path)) => std::fs::read_to_string(path)
            .map_err(|e| HttpError::Token {
                group,
                reason: format!("cannot read {}: {e}", path.display()),
            })?
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        return Err(HttpError::Token {
            group,
            reason: "the token is empty".into(),
        });
    }
    Ok(Some(Arc::from(token)))
}

/// Equal in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({ "error": "unauthorized" })),
        )
            .into_response(),
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => next.run(request).await,
        Some(_) => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({ "error": "forbidden" })),
        )
            .into_response(),
    }
}

/// Gives every request an id (the caller's `X-Request-Id`, or a new one), logs it and returns it.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert("x-request-id", value.clone());
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let started = std::time::Instant::now();
        let mut response = next.run(request).await;
        tracing::info!(request_id = %id, %method, path, status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "http");
        response.headers_mut().insert("x-request-id", value);
        return response;
    }
    next.run(request).await
}

fn guarded(router: Router, token: Option<Arc<str>>) -> Router {
    match token {
        Some(t) => router.layer(middleware::from_fn_with_state(t, require_token)),
        None => router,
    }
}

/// The public routes: ingress (when `producer` is given), entity queries and `/openapi.json`.
pub fn public_router(
    state: AppState,
    producer: Option<Arc<EventProducer>>,
) -> Result<Router, HttpError> {
    let t = &state.topology;
    let mut ingress = Router::new();
    if let Some(producer) = producer {
        for route in &t.ingress {
            let ctx = Arc::new(IngressContext {
                topology: Arc::clone(t),
                producer: Arc::clone(&producer),
                route: route.clone(),
            });
            let filter = if route.method == "PUT" {
                MethodFilter::PUT
            } else {
                MethodFilter::POST
            };
            ingress = ingress.route(
                &route.path,
                on(filter, move |headers: HeaderMap, body: Body| {
                    ingest(Arc::clone(&ctx), headers, body)
                }),
            );
        }
    }
    let query = Router::new()
        .route("/entities/{kind}/{id}", get(crate::query::entity))
        .route("/entities/{kind}/{id}/events", get(crate::query::events))
        .with_state(state.clone());
    let openapi = serde_json::to_string(&crate::openapi::document(t)).unwrap_or_default();
    let docs = Router::new().route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], openapi) }),
    );
    Ok(Router::new()
        .merge(guarded(ingress, resolve("ingress", &t.http.ingress_token)?))
        .merge(guarded(query, resolve("query", &t.http.query_token)?))
        .merge(docs))
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(state: AppState) -> Result<Router, HttpError> {
    let token = resolve("admin", &state.topology.http.admin_token)?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .with_state(state);
    Ok(guarded(router, token).route("/healthz", get(|| async { "ok" })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not recorded in this process",
        )
            .into_response(),
    }
}

/// Ready when Kafka, Mongo and the registry answer, and (for a processor) the group was joined
/// once; a later rebalance is named in the processor check but leaves the process ready.
async fn readyz(State(state): State<AppState>) -> Response {
    let timeout = Duration::from_secs(2);
    let t = &state.topology;
    let (kafka, registry, mongo) = tokio::join!(
        crate::health::kafka_topics(&t.kafka, timeout),
        crate::health::registry_subjects(&t.registry, timeout),
        crate::health::mongo_ping(&t.mongo, timeout)
    );
    let (processor, processor_ready) = state
        .processor_group
        .as_ref()
        .map_or(("not running here".to_string(), true), |g| g.check());
    let checks = json!({
        "kafka": kafka.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone()),
        "registry": registry.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone()),
        "mongo": mongo.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone()),
        "processor": processor,
    });
    let ready = kafka.is_ok() && registry.is_ok() && mongo.is_ok() && processor_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "checks": checks })),
    )
        .into_response()
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Binds the listeners (so a taken port fails the start) and serves in the background until
/// `stop` turns true. Admin routes share the public listener unless `admin_listen` is set; `api`
/// false serves the admin routes alone (processor-only and relay-only processes).
pub async fn start(
    state: AppState,
    producer: Option<Arc<EventProducer>>,
    api: bool,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, HttpError> {
    let settings = state.topology.http.clone();
    let public = if api {
        public_router(state.clone(), producer)?
    } else {
        Router::new()
    };
    let admin = admin_router(state)?;
    let shutdown = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let listener = bind(&settings.listen).await?;
    match &settings.admin_listen {
        None => {
            tracing::info!(addr = %settings.listen, "http listening (api and admin)");
            let app = public.merge(admin).layer(middleware::from_fn(request_id));
            Ok(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown(stop))
                    .await
                {
                    tracing::error!("the http server stopped: {e}");
                }
            }))
        }
        Some(admin_addr) => {
            let admin_listener = bind(admin_addr).await?;
            tracing::info!(addr = %settings.listen, admin = %admin_addr, "http listening");
            let public = axum::serve(listener, public.layer(middleware::from_fn(request_id)))
                .with_graceful_shutdown(shutdown(stop.clone()));
            let admin = axum::serve(admin_listener, admin).with_graceful_shutdown(shutdown(stop));
            Ok(tokio::spawn(async move {
                let (public, admin) = tokio::join!(public, admin);
                for (which, result) in [("api", public), ("admin", admin)] {
                    if let Err(e) = result {
                        tracing::error!("the {which} http server stopped: {e}");
                    }
                }
            }))
        }
    }
}
