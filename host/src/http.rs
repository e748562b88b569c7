//! The HTTP server: OpenAI-style routes answering plain OpenAI JSON with HTTP status codes and
//! the `{"error": {...}}` envelope. Routes are served under `/v1`, `/openai/v1` and, as
//! Infinity does, at the root (`/embeddings`, `/rerank`, `/models`).

use crate::api::{
    self, ApiError, AppState, ClassifyRequest, EmbeddingsRequest, ErrorKind, RerankRequest,
};
use crate::body::json_body;
use crate::runpod::jobs::JobStore;
use crate::runpod::local_api::{self, Shared};
use crate::{cohere, tei};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind.openai_type(),
            "param": self.param,
            "code": self.status(),
        }});
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(Facts {
            error: Some(self.message),
            ..Facts::default()
        });
        response
    }
}

/// What a handler tells the request log about its request, as a response extension.
#[derive(Debug, Clone, Default)]
struct Facts {
    model: Option<String>,
    items: Option<usize>,
    tokens: Option<usize>,
    error: Option<String>,
}

/// Writes one log line per request (method, route, model, items, tokens, status, duration)
/// and counts it in the metrics by its matched route and a fixed set of methods, so that ids
/// in paths and made-up methods do not multiply the series.
async fn observe(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    let m = crate::metrics::global();
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
async fn metrics(State(state): State<Shared>) -> Response {
    let m = crate::metrics::global();
    for model in &state.app.models {
        m.queue_depth
            .with_label_values(&[&model.id])
            .set(model.engine.queued() as i64);
    }
    metrics_text()
}

/// The process's metrics as a Prometheus text response.
pub(crate) fn metrics_text() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::global().render(),
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

/// The 200 answer of an API call, carrying what the request log reports about it.
fn answered(body: impl serde::Serialize, model: &str, items: usize, tokens: usize) -> Response {
    let facts = Facts {
        model: Some(model.to_string()),
        items: Some(items),
        tokens: Some(tokens),
        error: None,
    };
    (axum::Extension(facts), Json(body)).into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.list_models())
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, body, state.max_request_bytes)?;
    let req = EmbeddingsRequest::parse(&value, state.max_items)?;
    let items = req.input.len();
    let r = api::embeddings(&state, req).await?;
    Ok(answered(&r, &r.model, items, r.usage.total_tokens))
}

async fn rerank(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, body, state.max_request_bytes)?;
    // TEI's shape (`texts`, answered as a bare list in TEI's error shape).
    if value.get("texts").is_some() && value.get("documents").is_none() {
        return match crate::tei::rerank_value(&state, &value).await {
            Ok(answer) => Ok(Json(answer).into_response()),
            Err(e) => Ok(crate::tei::TeiError(e).into_response()),
        };
    }
    let req = RerankRequest::parse(&value, state.max_items)?;
    let items = req.documents.len();
    let r = api::rerank(&state, req).await?;
    Ok(answered(&r, &r.model, items, r.usage.total_tokens))
}

async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, body, state.max_request_bytes)?;
    let req = ClassifyRequest::parse(&value, state.max_items)?;
    let items = req.inputs.len();
    let r = api::classify(&state, req).await?;
    Ok(answered(&r, &r.model, items, r.usage.total_tokens))
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
    let shared = Shared { app: state, jobs };
    let v1 = Router::new()
        .route("/models", get(models))
        .route("/embeddings", post(embeddings))
        .route("/rerank", post(rerank))
        .route("/classify", post(classify));
    let app = Router::new()
        .nest("/v1", v1.clone())
        .nest("/openai/v1", v1.clone())
        .merge(v1)
        .merge(local_api::routes())
        .route("/health", get(local_api::health))
        .route("/metrics", get(metrics))
        // Hugging Face TEI's routes (its `/rerank` shape is told apart by `texts`).
        .route("/", post(tei::root).get(local_api::health))
        .route("/embed", post(tei::embed))
        .route("/predict", post(tei::predict))
        .route("/tokenize", post(tei::tokenize))
        .route("/decode", post(tei::decode))
        .route("/info", get(tei::info))
        // Cohere's v2 routes, one segment shorter than the RunPod API's `/v2/{endpoint_id}/...`.
        .route("/v2/embed", post(cohere::embed))
        .route("/v2/rerank", post(cohere::rerank))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
        .layer(DefaultBodyLimit::max(limit));
    with_key(app, api_key).layer(axum::middleware::from_fn(observe))
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
