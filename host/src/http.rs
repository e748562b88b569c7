//! The HTTP router: every [`Route`] mounted at its paths (the OpenAI-style ones under `/v1`,
//! `/openai/v1` and, as Infinity does, at the root; TEI's and Cohere's at theirs), the local
//! RunPod API, `/health` and `/metrics`, behind the API key when there is one, with one log
//! line and the request metrics per request. Answers and their error shapes are
//! `respond.rs`'s.

use crate::api::{ApiError, AppState, ErrorKind};
use crate::metrics::Metrics;
use crate::respond::serve;
use crate::routes::{Facts, Route};
use crate::runpod::jobs::JobStore;
use crate::runpod::local_api::{self, Shared};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

/// Writes one log line per request (method, route, model, items, tokens, status, duration)
/// and counts it in the metrics by its matched route and a fixed set of methods, so that ids
/// in paths and made-up methods do not multiply the series.
async fn observe(
    State(m): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    m.requests
        .with_label_values(&[
            crate::metrics::method_label(method.as_str()),
            &route,
            &status.to_string(),
        ])
        .inc();
    m.request_seconds.with_label_values(&[&route]).observe(secs);
    if route == "/metrics" || route == "/health" {
        return response; // scraped and probed every few seconds: counted, not logged
    }
    let facts = response
        .extensions()
        .get::<Facts>()
        .cloned()
        .unwrap_or_default();
    tracing::info!(
        method = %method,
        route,
        model = facts.model,
        items = facts.items,
        tokens = facts.tokens,
        status,
        ms = secs * 1e3,
        error = facts.error,
        "request"
    );
    response
}

/// `GET /metrics`: Prometheus text format, with each model's queue depth as of now.
async fn scrape(State(state): State<Shared>) -> Response {
    let m = &state.app.metrics;
    for model in &state.app.models {
        m.queue_depth
            .with_label_values(&[&model.id])
            .set(model.engine.queued() as i64);
    }
    metrics_text(m)
}

/// `metrics` as a Prometheus text response.
pub(crate) fn metrics_text(metrics: &Metrics) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// `router` behind the API key when there is one (`/health` and `/metrics` stay open).
fn with_key(router: Router, api_key: Option<&str>) -> Router {
    match api_key {
        Some(key) => router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(key),
            require_key,
        )),
        None => router,
    }
}

/// The handler of `route`: `POST` where it takes a body, else `GET`.
fn at(route: Route) -> MethodRouter<Shared> {
    let handler = move |State(state): State<Arc<AppState>>,
                        headers: HeaderMap,
                        body: Result<Bytes, BytesRejection>| async move {
        serve(&state, route, &headers, body).await
    };
    if route.takes_body() {
        post(handler)
    } else {
        get(handler)
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::RouteNotFound,
        "no such route; see GET /v1/models, POST /v1/embeddings and POST /v1/rerank",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Compares two byte strings in time that depends on their lengths only.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses requests without the API key (`Authorization: Bearer <key>`, or on the RunPod API
/// routes the raw key as RunPod's API accepts it); `/health` and `/metrics` stay open for load
/// balancers and scrapers.
async fn require_key(
    State(key): State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match key_refusal(&request, &key) {
        Some(refused) => refused.into_response(),
        None => next.run(request).await,
    }
}

/// Whether `path` is a route of the local RunPod API, where the raw key is accepted as on
/// RunPod's API: `/run`, `/runsync`, `/status/{id}`, `/stream/{id}`, `/cancel/{id}`,
/// `/purge-queue`, and these and `/health` under `/v2/{endpoint_id}/` (not the OpenAI
/// gateway under it, which takes `Bearer` as OpenAI clients send it).
fn is_runpod_route(path: &str) -> bool {
    let (rest, under_v2) = match path.strip_prefix("/v2/") {
        Some(after) => match after.split_once('/') {
            Some((endpoint, rest)) if !endpoint.is_empty() => (rest, true),
            _ => return false,
        },
        None => match path.strip_prefix('/') {
            Some(rest) => (rest, false),
            None => return false,
        },
    };
    match rest.split_once('/') {
        None => matches!(rest, "run" | "runsync" | "purge-queue") || (under_v2 && rest == "health"),
        Some(("status" | "stream" | "cancel", id)) => !id.is_empty() && !id.contains('/'),
        Some(_) => false,
    }
}

/// The key in an `Authorization` value: after `Bearer ` (any case), or the whole value when
/// `raw` keys are accepted; `None` for a raw value where they are not.
fn given_key(value: &str, raw: bool) -> Option<&str> {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => Some(value[7..].trim()),
        _ if raw => Some(value.trim()),
        _ => None,
    }
}

/// The 401 a request gets without the API key `key`; none for `/health` and `/metrics`.
pub(crate) fn key_refusal(request: &axum::extract::Request, key: &str) -> Option<ApiError> {
    let path = request.uri().path();
    if matches!(path, "/health" | "/metrics") {
        return None;
    }
    let Some(value) = request.headers().get(axum::http::header::AUTHORIZATION) else {
        return Some(ApiError::new(
            ErrorKind::Unauthorized,
            "missing API key: send Authorization: Bearer <API_KEY>",
        ));
    };
    let given = value
        .to_str()
        .ok()
        .and_then(|v| given_key(v, is_runpod_route(path)));
    match given {
        Some(k) if same_key(k.as_bytes(), key.as_bytes()) => None,
        Some(_) => Some(ApiError::new(
            ErrorKind::Unauthorized,
            "invalid API key (API_KEY)",
        )),
        None => Some(ApiError::new(
            ErrorKind::Unauthorized,
            "invalid API key: send Authorization: Bearer <API_KEY> (the raw key is accepted \
             on the RunPod API routes only)",
        )),
    }
}

/// Builds the router: OpenAI routes, TEI's and Cohere's routes, the local RunPod API, `/health`, `/metrics`; behind
/// `api_key` when set; every request logged and counted.
pub fn router(state: Arc<AppState>, jobs: Arc<JobStore>, api_key: Option<&str>) -> Router {
    let limit = state.max_request_bytes;
    let metrics = state.metrics.clone();
    let shared = Shared { app: state, jobs };
    let v1 = Router::new()
        .route("/models", at(Route::Models))
        .route("/embeddings", at(Route::Embeddings))
        .route("/rerank", at(Route::Rerank))
        .route("/classify", at(Route::Classify));
    let app = Router::new()
        .nest("/v1", v1.clone())
        .nest("/openai/v1", v1.clone())
        .merge(v1)
        .merge(local_api::routes())
        .route("/health", get(local_api::health))
        .route("/metrics", get(scrape))
        // Hugging Face TEI's routes (its `/rerank` shape is told apart by `texts`).
        .route("/", at(Route::TeiRoot).get(local_api::health))
        .route("/embed", at(Route::TeiEmbed))
        .route("/embed_all", at(Route::TeiEmbedAll))
        .route("/embed_sparse", at(Route::TeiEmbedSparse))
        .route("/predict", at(Route::TeiPredict))
        .route("/tokenize", at(Route::TeiTokenize))
        .route("/decode", at(Route::TeiDecode))
        .route("/info", at(Route::TeiInfo))
        // Cohere's v2 routes, one segment shorter than the RunPod API's `/v2/{endpoint_id}/...`.
        .route("/v2/embed", at(Route::CohereEmbed))
        .route("/v2/rerank", at(Route::CohereRerank))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
        .layer(DefaultBodyLimit::max(limit));
    with_key(app, api_key).layer(axum::middleware::from_fn_with_state(metrics, observe))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, auth: Option<&str>) -> axum::extract::Request {
        let mut builder = axum::http::Request::builder().method("POST").uri(path);
        if let Some(a) = auth {
            builder = builder.header("authorization", a);
        }
        builder
            .body(axum::body::Body::empty())
            .expect("valid request")
    }

    #[test]
    fn runpod_routes_are_told_apart() {
        for path in [
            "/run",
            "/runsync",
            "/status/abc",
            "/stream/abc",
            "/cancel/abc",
            "/purge-queue",
            "/v2/ep/run",
            "/v2/ep/runsync",
            "/v2/ep/status/abc",
            "/v2/ep/stream/abc",
            "/v2/ep/cancel/abc",
            "/v2/ep/purge-queue",
            "/v2/ep/health",
        ] {
            assert!(is_runpod_route(path), "{path}");
        }
        for path in [
            "/v1/embeddings",
            "/embeddings",
            "/rerank",
            "/openai/v1/embeddings",
            "/v2/ep/openai/v1/embeddings",
            "/v2/ep/openai/v1/models",
            "/v1/models",
            "/status",
            "/status/",
            "/status/a/b",
            "/run/x",
            "/v2//run",
            "/v2/run",
            "/v2/ep/v1/embeddings",
            "/v2/embed",
            "/v2/rerank",
            "/health/x",
            "run",
            "",
        ] {
            assert!(!is_runpod_route(path), "{path}");
        }
    }

    #[test]
    fn raw_key_only_on_runpod_routes_bearer_everywhere() {
        let key = "s3cret";
        let refused = |path: &str, auth: Option<&str>| key_refusal(&request(path, auth), key);
        for path in [
            "/v1/embeddings",
            "/rerank",
            "/v2/ep/openai/v1/embeddings",
            "/run",
        ] {
            assert!(refused(path, Some("Bearer s3cret")).is_none(), "{path}");
            assert!(refused(path, Some("bearer s3cret")).is_none(), "{path}");
            assert_eq!(refused(path, None).map(|e| e.status()), Some(401), "{path}");
            let wrong = refused(path, Some("Bearer nope")).expect("refused");
            assert!(
                wrong.message.contains("invalid API key"),
                "{}",
                wrong.message
            );
        }
        for path in [
            "/run",
            "/runsync",
            "/status/x",
            "/v2/ep/run",
            "/v2/ep/health",
        ] {
            assert!(refused(path, Some("s3cret")).is_none(), "{path}");
            assert_eq!(refused(path, Some("nope")).map(|e| e.status()), Some(401));
        }
        for path in [
            "/v1/embeddings",
            "/v1/models",
            "/v2/ep/openai/v1/embeddings",
        ] {
            let e = refused(path, Some("s3cret")).expect("raw key refused");
            assert_eq!(e.status(), 401);
            assert!(e.message.contains("Bearer"), "{}", e.message);
        }
        assert!(refused("/health", None).is_none());
        assert!(refused("/metrics", None).is_none());
    }
}
