//! The local RunPod API on the HTTP server: `/run`, `/runsync` (`?wait=` ms), `/status/{id}`
//! (GET or POST), `/stream/{id}`, `/cancel/{id}`, `/purge-queue`, and the same under
//! `/v2/{endpoint_id}/` with `/v2/{endpoint_id}/health`, so that the official runpod client
//! works against it through `RUNPOD_ENDPOINT_BASE_URL`. `/v2/{endpoint_id}/openai/v1/...` is
//! mapped to the router's `openai_route` as the platform's gateway does, answering plain
//! OpenAI JSON. When too many jobs (or too many bytes of job inputs) wait, `/run` and
//! `/runsync` answer 429 with `Retry-After`; `/status` of a finished job that was dropped says
//! why instead of calling it unknown.

use super::jobs::{JobStore, Missing, QueueFull, RETRY_AFTER_SECS};
use super::router;
use crate::api::AppState;
use crate::body::json_body;
use crate::routes;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Default wait of `/runsync` before it answers with the job still running.
const DEFAULT_WAIT_MS: u64 = 90_000;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct Shared {
    /// Models and settings.
    pub app: Arc<AppState>,
    /// Jobs of the local RunPod API.
    pub jobs: Arc<JobStore>,
}

impl FromRef<Shared> for Arc<AppState> {
    fn from_ref(s: &Shared) -> Self {
        s.app.clone()
    }
}

/// A local-API error, answered in the platform's `{"error": "..."}` shape.
struct PlatformError(StatusCode, String);

impl IntoResponse for PlatformError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A job refused because the queue is full: 429 with `Retry-After`.
fn queue_full(e: QueueFull) -> Response {
    let mut resp = platform_error(StatusCode::TOO_MANY_REQUESTS, e.0).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
    resp
}

fn platform_error(status: StatusCode, message: impl Into<String>) -> PlatformError {
    PlatformError(status, message.into())
}

/// The `input` of a `/run` or `/runsync` body.
fn job_input(
    state: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, PlatformError> {
    let parsed = json_body(headers, body, state.app.max_request_bytes).map_err(|e| {
        platform_error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.message,
        )
    })?;
    let Value::Object(mut body) = parsed else {
        return Err(platform_error(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object with an \"input\" field",
        ));
    };
    if body.contains_key("webhook") {
        return Err(platform_error(
            StatusCode::BAD_REQUEST,
            "webhook is not supported by ember's local RunPod API; poll /status/{id} instead",
        ));
    }
    body.remove("input").ok_or_else(|| {
        platform_error(
            StatusCode::BAD_REQUEST,
            "the request body has no \"input\" field (expected {\"input\": {...}})",
        )
    })
}

fn job_id(params: &HashMap<String, String>) -> String {
    params.get("job_id").cloned().unwrap_or_default()
}

/// 404 for a job that is not there: unknown, or finished and dropped (saying why).
fn missing(id: &str, why: Missing) -> Response {
    let message = match why {
        Missing::Unknown => format!(
            "job {id} not found (finished jobs are kept for {} minutes)",
            super::jobs::KEEP_FINISHED.as_secs() / 60
        ),
        Missing::Dropped(message) => message,
    };
    platform_error(StatusCode::NOT_FOUND, message).into_response()
}

async fn run(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match job_input(&state, &headers, body) {
        Ok(input) => match state.jobs.submit(state.app.clone(), "", input) {
            Ok(id) => Json(json!({"id": id, "status": "IN_QUEUE"})).into_response(),
            Err(full) => queue_full(full),
        },
        Err(e) => e.into_response(),
    }
}

async fn runsync(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let wait = match query.get("wait").map(|w| w.parse::<u64>()) {
        None => DEFAULT_WAIT_MS,
        Some(Ok(ms)) => ms.clamp(1_000, 300_000),
        Some(Err(_)) => {
            return platform_error(
                StatusCode::BAD_REQUEST,
                "wait must be a number of milliseconds (1000 to 300000)",
            )
            .into_response()
        }
    };
    let input = match job_input(&state, &headers, body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let id = match state.jobs.submit(state.app.clone(), "sync-", input) {
        Ok(id) => id,
        Err(full) => return queue_full(full),
    };
    match state.jobs.wait(&id, Duration::from_millis(wait)).await {
        Ok(v) => Json(v).into_response(),
        Err(why) => missing(&id, why),
    }
}

async fn status(
    State(state): State<Shared>,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let id = job_id(&params);
    match state.jobs.view(&id) {
        Ok(v) => Json(v).into_response(),
        Err(why) => missing(&id, why),
    }
}

async fn stream(
    State(state): State<Shared>,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let id = job_id(&params);
    match state.jobs.view(&id) {
        Ok(v) => Json(v.streamed()).into_response(),
        Err(why) => missing(&id, why),
    }
}

async fn cancel(
    State(state): State<Shared>,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let id = job_id(&params);
    match state.jobs.cancel(&id) {
        Ok(v) => Json(json!({"id": id, "status": v.status()})).into_response(),
        Err(why) => missing(&id, why),
    }
}

async fn purge_queue(State(state): State<Shared>) -> Json<Value> {
    let removed = state.jobs.purge_queue();
    Json(json!({"removed": removed, "status": "completed"}))
}

/// Job and worker counts plus model health, 503 while a model is unhealthy.
pub async fn health(State(state): State<Shared>) -> Response {
    let mut body = state.jobs.counts();
    let status = match state.app.health() {
        Ok(()) => {
            body["status"] = json!("ok");
            StatusCode::OK
        }
        Err(reasons) => {
            body["status"] = json!("unhealthy");
            body["reasons"] = json!(reasons);
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (status, Json(body)).into_response()
}

/// `/v2/{endpoint_id}/openai/v1/{route}`: the route the gateway's job would name, answered
/// as plain OpenAI JSON (not list-wrapped, as the gateway unwraps it).
async fn gateway(
    State(state): State<Shared>,
    Path(params): Path<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let name = format!(
        "/v1/{}",
        params.get("route").map(String::as_str).unwrap_or("")
    );
    let parsed = if method == Method::GET {
        None
    } else {
        match json_body(&headers, body, state.app.max_request_bytes) {
            Ok(body) => Some(body),
            Err(e) => return e.into_response(),
        }
    };
    let (route, body) = match router::openai_request(&name, parsed.as_ref()) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match routes::answer(&state.app, route, body).await {
        Ok(reply) => reply.into_response(),
        Err(e) => e.into_response(),
    }
}

fn job_routes() -> Router<Shared> {
    Router::new()
        .route("/run", post(run))
        .route("/runsync", post(runsync))
        .route("/status/{job_id}", get(status).post(status))
        .route("/stream/{job_id}", get(stream).post(stream))
        .route("/cancel/{job_id}", post(cancel))
        .route("/purge-queue", post(purge_queue))
}

/// The local RunPod API routes.
pub fn routes() -> Router<Shared> {
    let v2 = job_routes()
        .route("/health", get(health))
        .route("/openai/v1/{*route}", any(gateway));
    job_routes().nest("/v2/{endpoint_id}", v2)
}
