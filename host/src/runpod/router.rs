//! The job router: a RunPod job's `input` to its output, as `worker-infinity-embedding`
//! answers it, without its crashes.
//!
//! Routing, in the worker's order and with Python's truthiness: `openai_route` (with
//! `openai_input`: `/v1/models`, `/v1/embeddings` list-wrapped, and `/v1/rerank`, which the
//! worker lacks), then `query` (rerank with `docs`/`documents`), then `input` (embeddings, or
//! classification when the model the job addresses is a classifier).
//! Bad requests are the job's output in the worker's error shape
//! `{"object":"error","message":...,"type":"BadRequestError","param":null,"code":400}`; only
//! server faults fail the job.

use crate::api::fields::type_name;
use crate::api::{ApiError, AppState, ErrorKind};
use crate::routes::{self, Reply, Route, ROUTE_NAMES};
use ember_plugin_api::ModelKind;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// What a job ends with.
#[derive(Debug)]
pub enum JobResult {
    /// The job's output, as JSON text.
    Output(Box<RawValue>),
    /// A bad request: the job completes with the worker's error object as its output.
    Rejected(ApiError),
    /// The job failed on the server's side; the message becomes the job's `error`.
    Failed(String),
}

/// The body RunPod expects for a job's result.
#[derive(Serialize)]
struct Posted<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl JobResult {
    /// The job's output, with a rejection rendered as the worker's error object; `None` for
    /// a failed job. Moves the output's JSON text rather than copying it.
    pub fn into_output(self) -> Option<Box<RawValue>> {
        match self {
            JobResult::Output(v) => Some(v),
            JobResult::Rejected(e) => rejection(&e),
            JobResult::Failed(_) => None,
        }
    }

    /// The body RunPod expects for this result (`{"output": ...}` or `{"error": ...}`).
    pub fn to_platform(&self) -> String {
        let rejected;
        let posted = match self {
            JobResult::Output(v) => Posted {
                output: Some(v),
                error: None,
            },
            JobResult::Rejected(e) => {
                rejected = rejection(e);
                Posted {
                    output: rejected.as_deref(),
                    error: None,
                }
            }
            JobResult::Failed(e) => Posted {
                output: None,
                error: Some(e),
            },
        };
        // Serialising JSON text and a string cannot fail.
        serde_json::to_string(&posted).unwrap_or_default()
    }
}

/// The worker's error object of a rejected job, as JSON text.
fn rejection(e: &ApiError) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&error_object(e.kind, e.message.clone())).ok()
}

/// The worker's error object for an error's kind and message.
pub fn error_object(kind: ErrorKind, message: impl Into<String>) -> Value {
    json!({
        "object": "error",
        "message": message.into(),
        "type": kind.runpod_type(),
        "param": null,
        "code": kind.status(),
    })
}

impl From<ApiError> for JobResult {
    fn from(e: ApiError) -> Self {
        if e.kind.fails_job() {
            JobResult::Failed(e.message)
        } else {
            JobResult::Rejected(e)
        }
    }
}

impl From<Result<Reply, ApiError>> for JobResult {
    fn from(r: Result<Reply, ApiError>) -> Self {
        match r {
            Ok(reply) => JobResult::Output(reply.json),
            Err(e) => e.into(),
        }
    }
}

/// A job input the router cannot route: a 400 naming what was wrong.
fn bad_input(message: String) -> ApiError {
    ApiError::new(ErrorKind::Invalid, message)
}

/// Python's truthiness of a JSON value, as the worker tests its fields.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Whether a job's `input` is for a classifier: the model it names (or the only one) is one.
fn for_classifier(state: &AppState, job: &Map<String, Value>) -> bool {
    let name = job.get("model").and_then(Value::as_str);
    state
        .model(name)
        .is_ok_and(|m| m.manifest.abi.kind == ModelKind::Classify)
}

/// The route an `openai_route` names and the body it is answered with (borrowed from
/// `openai_input`; `Null` for routes that take none), or why there is none.
pub fn openai_request<'a>(
    name: &str,
    openai_input: Option<&'a Value>,
) -> Result<(Route, &'a Value), ApiError> {
    let Some(route) = Route::named(name) else {
        return Err(bad_input(format!(
            "Invalid OpenAI Route: {name} (supported: {ROUTE_NAMES})"
        )));
    };
    if !route.takes_body() {
        return Ok((route, &Value::Null));
    }
    match openai_input {
        // TEI's rerank shape is told apart on `/rerank` only, as on the worker's routes before.
        Some(v @ Value::Object(o)) if !o.is_empty() => {
            let route = if name == "/rerank" {
                route.for_body(v)
            } else {
                route
            };
            Ok((route, v))
        }
        Some(v) if truthy(Some(v)) => Err(bad_input(format!(
            "openai_input must be the JSON object of the {name} request, got {}",
            type_name(v)
        ))),
        _ => Err(bad_input(format!(
            "Missing input: openai_input must hold the body of the {name} request"
        ))),
    }
}

async fn openai(state: &AppState, job: &Map<String, Value>) -> Result<Reply, ApiError> {
    let name = match job.get("openai_route") {
        Some(Value::String(r)) => r.as_str(),
        Some(other) => {
            return Err(bad_input(format!(
                "openai_route must be a string, got {}",
                type_name(other)
            )))
        }
        None => unreachable!("checked by the caller"),
    };
    let (route, body) = openai_request(name, job.get("openai_input"))?;
    let reply = routes::answer(state, route, body).await?;
    // The worker list-wraps embeddings on this route; the platform's gateway unwraps.
    Ok(if route == Route::Embeddings {
        reply.list_wrapped()
    } else {
        reply
    })
}

/// The route a job's plain `input` asks for, by the worker's tests of its fields.
fn plain_route(state: &AppState, job: &Map<String, Value>) -> Result<Route, ApiError> {
    if truthy(job.get("query")) {
        Ok(Route::Rerank)
    } else if truthy(job.get("input")) && for_classifier(state, job) {
        Ok(Route::Classify)
    } else if truthy(job.get("input")) {
        Ok(Route::Embeddings)
    } else {
        let keys: Vec<&str> = job.keys().map(String::as_str).collect();
        Err(bad_input(format!(
            "Invalid input: expected \"input\" (texts or images to embed, or texts to \
                 classify), \"query\" with \"docs\" (rerank) or \"openai_route\"; got keys [{}]",
            keys.join(", ")
        )))
    }
}

/// Runs one job's `input`.
pub async fn run(state: &AppState, input: &Value) -> JobResult {
    let Some(job) = input.as_object() else {
        return bad_input(format!(
            "Invalid input: the job's input must be a JSON object, got {}",
            type_name(input)
        ))
        .into();
    };
    if truthy(job.get("openai_route")) {
        return openai(state, job).await.into();
    }
    match plain_route(state, job) {
        Ok(route) => routes::answer(state, route, input).await.into(),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_pythons() {
        for falsy in [
            json!(null),
            json!(""),
            json!([]),
            json!({}),
            json!(0),
            json!(false),
        ] {
            assert!(!truthy(Some(&falsy)), "{falsy}");
        }
        for t in [
            json!("a"),
            json!([1]),
            json!({"a": 1}),
            json!(2),
            json!(true),
        ] {
            assert!(truthy(Some(&t)), "{t}");
        }
        assert!(!truthy(None));
    }

    #[test]
    fn tei_rerank_bodies_are_told_apart_on_slash_rerank_only() {
        let tei = json!({"query": "q", "texts": ["a"]});
        let route = |name: &str| openai_request(name, Some(&tei)).map(|(r, _)| r);
        assert_eq!(route("/rerank"), Ok(Route::TeiRerank));
        assert_eq!(route("/v1/rerank"), Ok(Route::Rerank));
        assert_eq!(
            openai_request("/v1/models", None).map(|(r, _)| r),
            Ok(Route::Models)
        );
        let e = openai_request("/v1/embeddings", None).unwrap_err();
        assert!(e.message.starts_with("Missing input"), "{}", e.message);
        let e = openai_request("/v1/nope", Some(&tei)).unwrap_err();
        assert!(e.message.contains("Invalid OpenAI Route"), "{}", e.message);
    }

    #[test]
    fn error_objects_have_the_worker_shape() {
        let e = error_object(ErrorKind::Invalid, "bad");
        assert_eq!(
            e,
            json!({"object": "error", "message": "bad", "type": "BadRequestError",
                   "param": null, "code": 400})
        );
        let posted = |r: JobResult| -> Value { serde_json::from_str(&r.to_platform()).unwrap() };
        let r: JobResult = ApiError::new(ErrorKind::Internal, "boom").into();
        assert_eq!(posted(r), json!({"error": "boom"}));
        let r: JobResult = ApiError::invalid("input", "no").into();
        assert_eq!(posted(r)["output"]["type"], "BadRequestError");
        let r: JobResult = ApiError::invalid("input", "no").into();
        assert_eq!(posted(r)["output"]["code"], 400);
    }
}
