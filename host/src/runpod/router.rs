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

use crate::api::{
    self, ApiError, AppState, ClassifyRequest, EmbeddingsRequest, ErrorKind, RerankRequest,
};
use ember_plugin_api::ModelKind;
use serde_json::{json, Map, Value};

/// What a job ends with.
#[derive(Debug, Clone, PartialEq)]
pub enum JobResult {
    /// The job's output.
    Output(Value),
    /// A bad request: the job completes with the worker's error object as its output.
    Rejected(ApiError),
    /// The job failed on the server's side; the message becomes the job's `error`.
    Failed(String),
}

impl JobResult {
    /// The job's output, with a rejection rendered as the worker's error object; `None` for
    /// a failed job.
    pub fn output(&self) -> Option<Value> {
        match self {
            JobResult::Output(v) => Some(v.clone()),
            JobResult::Rejected(e) => Some(error_object(e.kind, e.message.clone())),
            JobResult::Failed(_) => None,
        }
    }

    /// The body RunPod expects for this result (`{"output": ...}` or `{"error": ...}`).
    pub fn to_platform(&self) -> Value {
        match (self, self.output()) {
            (_, Some(v)) => json!({ "output": v }),
            (JobResult::Failed(e), None) => json!({ "error": e }),
            (_, None) => unreachable!("only failed jobs have no output"),
        }
    }
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

/// A job input the router cannot route: a 400 naming what was wrong.
fn bad_input(message: String) -> JobResult {
    JobResult::Rejected(ApiError::new(ErrorKind::Invalid, message))
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

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The routes `openai_route` may name.
const OPENAI_ROUTES: &str = "/v1/models, /v1/embeddings, /v1/rerank, /v1/classify (or \
                             /classify), and the TEI and Cohere routes /embed, /rerank, \
                             /predict, /tokenize, /decode, /info, /v2/embed, /v2/rerank";

fn to_output(resp: impl serde::Serialize) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(resp)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    api::shorten_floats(&mut v);
    Ok(v)
}

async fn embeddings(state: &AppState, body: &Value) -> Result<Value, ApiError> {
    let req = EmbeddingsRequest::parse(body, state.max_items)?;
    to_output(api::embeddings(state, req).await?)
}

async fn rerank(state: &AppState, body: &Value) -> Result<Value, ApiError> {
    let req = RerankRequest::parse(body, state.max_items)?;
    to_output(api::rerank(state, req).await?)
}

async fn classify(state: &AppState, body: &Value) -> Result<Value, ApiError> {
    let req = ClassifyRequest::parse(body, state.max_items)?;
    to_output(api::classify(state, req).await?)
}

/// Whether a job's `input` is for a classifier: the model it names (or the only one) is one.
fn for_classifier(state: &AppState, job: &Map<String, Value>) -> bool {
    let name = job.get("model").and_then(Value::as_str);
    state
        .model(name)
        .is_ok_and(|m| m.manifest.abi.kind == ModelKind::Classify)
}

async fn openai(state: &AppState, job: &Map<String, Value>) -> JobResult {
    let route = match job.get("openai_route") {
        Some(Value::String(r)) => r.as_str(),
        Some(other) => {
            return bad_input(format!(
                "openai_route must be a string, got {}",
                kind_of(other)
            ))
        }
        None => unreachable!("checked by the caller"),
    };
    match route {
        "/v1/models" => return JobResult::Output(state.list_models()),
        "/info" => return answered(crate::tei::info_value(state)),
        "/v1/embeddings" | "/v1/rerank" | "/v1/classify" | "/classify" | "/embed" | "/rerank"
        | "/predict" | "/tokenize" | "/decode" | "/v2/embed" | "/v2/rerank" => {}
        _ => {
            return bad_input(format!(
                "Invalid OpenAI Route: {route} (supported: {OPENAI_ROUTES})"
            ))
        }
    }
    let body = match job.get("openai_input") {
        Some(v @ Value::Object(o)) if !o.is_empty() => v,
        Some(v) if truthy(Some(v)) => {
            return bad_input(format!(
                "openai_input must be the JSON object of the {route} request, got {}",
                kind_of(v)
            ))
        }
        _ => {
            return bad_input(format!(
                "Missing input: openai_input must hold the body of the {route} request"
            ))
        }
    };
    match route {
        // The worker list-wraps embeddings on this route; the platform's gateway unwraps.
        "/v1/embeddings" => answered(embeddings(state, body).await.map(|v| json!([v]))),
        "/embed" => answered(crate::tei::embed_value(state, body).await),
        // TEI's shape has `texts`; Infinity's and Cohere's `documents`, as on the HTTP route.
        "/rerank" if body.get("texts").is_some() && body.get("documents").is_none() => {
            answered(crate::tei::rerank_value(state, body).await)
        }
        "/v1/classify" | "/classify" => answered(classify(state, body).await),
        "/predict" => answered(crate::tei::predict_value(state, body).await),
        "/tokenize" => answered(crate::tei::tokenize_value(state, body).await),
        "/decode" => answered(crate::tei::decode_value(state, body)),
        "/v2/embed" => answered(crate::cohere::embed_value(state, body).await),
        "/v2/rerank" => answered(crate::cohere::rerank_value(state, body).await),
        _ => answered(rerank(state, body).await),
    }
}

/// A route's answer as a job's result.
fn answered(result: Result<Value, ApiError>) -> JobResult {
    match result {
        Ok(v) => JobResult::Output(v),
        Err(e) => e.into(),
    }
}

/// Runs one job's `input`.
pub async fn run(state: &AppState, input: &Value) -> JobResult {
    let Some(job) = input.as_object() else {
        return bad_input(format!(
            "Invalid input: the job's input must be a JSON object, got {}",
            kind_of(input)
        ));
    };
    if truthy(job.get("openai_route")) {
        return openai(state, job).await;
    }
    let result = if truthy(job.get("query")) {
        rerank(state, input).await
    } else if truthy(job.get("input")) && for_classifier(state, job) {
        classify(state, input).await
    } else if truthy(job.get("input")) {
        embeddings(state, input).await
    } else {
        let keys: Vec<&str> = job.keys().map(String::as_str).collect();
        return bad_input(format!(
            "Invalid input: expected \"input\" (texts or images to embed, or texts to \
                 classify), \"query\" with \"docs\" (rerank) or \"openai_route\"; got keys [{}]",
            keys.join(", ")
        ));
    };
    match result {
        Ok(v) => JobResult::Output(v),
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
    fn error_objects_have_the_worker_shape() {
        let e = error_object(ErrorKind::Invalid, "bad");
        assert_eq!(
            e,
            json!({"object": "error", "message": "bad", "type": "BadRequestError",
                   "param": null, "code": 400})
        );
        let r: JobResult = ApiError::new(ErrorKind::Internal, "boom").into();
        assert_eq!(r.to_platform(), json!({"error": "boom"}));
        let r: JobResult = ApiError::invalid("input", "no").into();
        assert_eq!(r.to_platform()["output"]["type"], "BadRequestError");
        assert_eq!(r.to_platform()["output"]["code"], 400);
    }
}
