//! The operations every transport shares: request validation, model lookup, embeddings and
//! the model list, with one error type that transports turn into their own shapes.

use crate::engine::{Engine, EngineError, Output, Payload};
use crate::models::manifest::Manifest;
use crate::text::TextEncoder;
use base64::Engine as _;
use ember_plugin_api::{ErrorCode, ModelKind};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// An API error: HTTP status, OpenAI error type, message, and the offending parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// OpenAI-style error type (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// What went wrong, naming the field and item index where there is one.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// A status with a type and message and no parameter.
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::Overloaded { .. } => ApiError::new(429, "rate_limit_error", e.to_string()),
            EngineError::Stopped(_) => ApiError::new(503, "server_error", e.to_string()),
            EngineError::Plugin(p) => match p.code {
                ErrorCode::InvalidInput => {
                    ApiError::new(400, "invalid_request_error", e.to_string())
                }
                ErrorCode::Unsupported => {
                    ApiError::new(400, "invalid_request_error", e.to_string())
                }
                // Out of memory even alone: the server cannot take this input now.
                ErrorCode::OutOfMemory => ApiError::new(503, "server_error", e.to_string()),
                ErrorCode::Device | ErrorCode::Internal => {
                    ApiError::new(500, "server_error", e.to_string())
                }
            },
        }
    }
}

/// One deployed model.
pub struct DeployedModel {
    /// Its id, as written in `MODEL_NAMES`.
    pub id: String,
    /// Infinity's served name: the last two path components of the id.
    pub alias: String,
    /// What the host read from its configuration.
    pub manifest: Manifest,
    /// Its tokenizer.
    pub encoder: Arc<TextEncoder>,
    /// Its batching engine.
    pub engine: Engine,
    /// Length of its vectors.
    pub dim: usize,
    /// Device it runs on.
    pub device: String,
}

impl DeployedModel {
    /// What the model can do, as the API reports it.
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self.manifest.abi.kind {
            ModelKind::Embed => vec!["embed"],
            ModelKind::Rerank => vec!["rerank"],
            ModelKind::Clip => vec!["embed", "image_embed"],
        }
    }

    /// The 400 for a request that needs a capability this model lacks, blaming `param`.
    pub fn lacks(&self, capability: &str, param: &str) -> ApiError {
        ApiError::invalid(
            param,
            format!(
                "model '{}' does not expose the '{capability}' capability; detected \
                 capabilities: {}",
                self.id,
                self.capabilities().join(", ")
            ),
        )
    }
}

/// Everything the operations need.
pub struct AppState {
    /// Deployed models in `MODEL_NAMES` order.
    pub models: Vec<DeployedModel>,
    /// Backend plugin name.
    pub backend: String,
    /// Most inputs in one request.
    pub max_items: usize,
    /// Largest accepted request body in bytes.
    pub max_request_bytes: usize,
    /// Start time, reported as `created` in the model list.
    pub created: u64,
}

impl AppState {
    /// Finds the model a request names; with one model deployed, a missing name means it.
    pub fn model(&self, name: Option<&str>) -> Result<&DeployedModel, ApiError> {
        match name {
            None if self.models.len() == 1 => Ok(&self.models[0]),
            None => Err(ApiError::invalid(
                "model",
                format!(
                    "model is required when several models are deployed; deployed: {}",
                    self.deployed()
                ),
            )),
            Some(n) => self
                .models
                .iter()
                .find(|m| m.id == n)
                .or_else(|| self.models.iter().find(|m| m.alias == n))
                .ok_or_else(|| ApiError {
                    status: 404,
                    kind: "model_not_found",
                    message: format!(
                        "model '{n}' is not deployed; deployed models: {}",
                        self.deployed()
                    ),
                    param: Some("model".into()),
                }),
        }
    }

    fn deployed(&self) -> String {
        self.models
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether every model's worker is alive and answered its last call; else the reasons.
    pub fn health(&self) -> Result<(), Vec<String>> {
        let failures: Vec<String> = self
            .models
            .iter()
            .filter_map(|m| {
                m.engine
                    .health
                    .status()
                    .err()
                    .map(|r| format!("{}: {r}", m.id))
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// The OpenAI model list.
    pub fn list_models(&self) -> Value {
        let data: Vec<Value> = self
            .models
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "object": "model",
                    "owned_by": "ember",
                    "created": self.created,
                    "backend": self.backend,
                    "capabilities": m.capabilities(),
                    "stats": {"queued": m.engine.queued()},
                    "dimensions": m.dim,
                    "max_input_tokens": m.manifest.abi.max_input_tokens,
                    "device": m.device,
                })
            })
            .collect();
        json!({"object": "list", "data": data})
    }
}

/// Output encoding of vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// Little-endian float32 bytes, base64-encoded.
    Base64,
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// Requested model, if named.
    pub model: Option<String>,
    /// Texts, in order.
    pub input: Vec<String>,
    /// Vector encoding.
    pub encoding_format: EncodingFormat,
    /// Truncate vectors to this many dimensions (then re-normalise).
    pub dimensions: Option<usize>,
    /// `text` or `image`.
    pub modality: String,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid(
            key,
            format!("{key} must be a string, got {}", type_name(other)),
        )),
    }
}

impl EmbeddingsRequest {
    /// Validates a JSON body, naming the field (and item index) of the first problem.
    pub fn parse(body: &Value, max_items: usize) -> Result<Self, ApiError> {
        let body = body.as_object().ok_or_else(|| {
            ApiError::invalid(
                "body",
                format!(
                    "request body must be a JSON object, got {}",
                    type_name(body)
                ),
            )
        })?;
        let input = match body.get("input") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    "input",
                    "input is required: a string or a list of strings",
                ))
            }
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(ApiError::invalid(
                        "input",
                        "input must not be an empty list",
                    ));
                }
                if items.len() > max_items {
                    return Err(ApiError {
                        status: 413,
                        kind: "invalid_request_error",
                        message: format!(
                            "input has {} items; at most {max_items} are accepted per request \
                             (MAX_ITEMS_PER_REQUEST)",
                            items.len()
                        ),
                        param: Some("input".into()),
                    });
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            return Err(ApiError::invalid(
                                "input",
                                format!(
                                    "input[{i}] must be a string, got {} (token-id arrays are \
                                     not accepted)",
                                    type_name(other)
                                ),
                            ))
                        }
                    }
                }
                out
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "input",
                    format!(
                        "input must be a string or a list of strings, got {}",
                        type_name(other)
                    ),
                ))
            }
        };
        let encoding_format = match opt_str(body, "encoding_format")?.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(other) => {
                return Err(ApiError::invalid(
                    "encoding_format",
                    format!("encoding_format must be 'float' or 'base64', got '{other}'"),
                ))
            }
        };
        let dimensions = match body.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(d) if d >= 1 => Some(d as usize),
                _ => {
                    return Err(ApiError::invalid(
                        "dimensions",
                        format!("dimensions must be a positive integer, got {v}"),
                    ))
                }
            },
        };
        let modality = opt_str(body, "modality")?.unwrap_or_else(|| "text".into());
        Ok(EmbeddingsRequest {
            model: opt_str(body, "model")?,
            input,
            encoding_format,
            dimensions,
            modality,
        })
    }
}

/// A vector as the response carries it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Embedding {
    /// JSON numbers, written in float32's shortest round-trip form.
    Float(Vec<f32>),
    /// Little-endian float32 bytes, base64-encoded.
    Base64(String),
}

/// One embedding in a response.
#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: &'static str,
    /// Numbers, or a base64 string of little-endian float32.
    pub embedding: Embedding,
    /// Position in the input.
    pub index: usize,
}

/// Token counts.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Usage {
    /// Tokens in the inputs, special tokens included, after truncation.
    pub prompt_tokens: usize,
    /// Same as `prompt_tokens`.
    pub total_tokens: usize,
}

/// The OpenAI embeddings response.
#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    /// One entry per input, in order.
    pub data: Vec<EmbeddingData>,
    /// The model that answered.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn encode(v: Vec<f32>, format: EncodingFormat) -> Embedding {
    match format {
        EncodingFormat::Float => Embedding::Float(v),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// Computes embeddings for a validated request.
pub async fn embeddings(
    state: &AppState,
    req: EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ApiError> {
    let model = state.model(req.model.as_deref())?;
    match req.modality.as_str() {
        "text" => {}
        "image" => return Err(model.lacks("image", "modality")),
        "audio" => {
            return Err(ApiError::new(
                501,
                "not_implemented",
                "audio modality is not yet implemented; supported modalities: 'text', 'image'",
            ))
        }
        other => {
            return Err(ApiError::invalid(
                "modality",
                format!("invalid modality '{other}'; supported: 'text', 'image', 'audio' (not yet implemented)"),
            ))
        }
    }
    if model.manifest.abi.kind == ModelKind::Rerank {
        return Err(model.lacks("embed", "model"));
    }
    if let Some(d) = req.dimensions {
        if d > model.dim {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "dimensions must be at most {} for model '{}', got {d}",
                    model.dim, model.id
                ),
            ));
        }
    }
    let encoder = model.encoder.clone();
    let texts = req.input;
    let tokens = tokio::task::spawn_blocking(move || encoder.encode(&texts))
        .await
        .map_err(|e| ApiError::new(500, "server_error", format!("tokenizer task failed: {e}")))?
        .map_err(|e| ApiError::invalid("input", e.to_string()))?;
    let prompt_tokens: usize = tokens.iter().map(|t| t.len()).sum();
    let outputs = model
        .engine
        .run(tokens.into_iter().map(Payload::Tokens).collect())
        .await?;
    let data = outputs
        .into_iter()
        .enumerate()
        .map(|(index, out)| {
            let Output::Vector(mut v) = out;
            normalize(&mut v);
            if let Some(d) = req.dimensions {
                v.truncate(d);
                normalize(&mut v);
            }
            EmbeddingData {
                object: "embedding",
                embedding: encode(v, req.encoding_format),
                index,
            }
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list",
        data,
        model: model.id.clone(),
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<EmbeddingsRequest, ApiError> {
        EmbeddingsRequest::parse(&v, 4)
    }

    #[test]
    fn accepts_string_and_list_inputs() {
        let r = parse(json!({"input": "hi", "model": "m"})).unwrap();
        assert_eq!(r.input, vec!["hi"]);
        assert_eq!(r.encoding_format, EncodingFormat::Float);
        let r = parse(json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}))
            .unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
        assert_eq!(r.dimensions, Some(8));
    }

    #[test]
    fn errors_name_field_and_index() {
        let e = parse(json!({"input": ["a", 3]})).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
        assert!(e.message.contains("input[1]"), "{}", e.message);
        let e = parse(json!({"input": "a", "encoding_format": "hex"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
        let e = parse(json!({"input": "a", "dimensions": 0})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("dimensions"));
        let e = parse(json!({"input": []})).unwrap_err();
        assert!(e.message.contains("empty"));
        let e = parse(json!({"input": vec!["a"; 5]})).unwrap_err();
        assert_eq!(e.status, 413);
        let e = parse(json!(["a"])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("body"));
        let e = parse(json!({"input": "a", "model": 5})).unwrap_err();
        assert!(e.message.contains("model must be a string"));
    }

    #[test]
    fn base64_is_little_endian_float32() {
        let Embedding::Base64(v) = encode(vec![1.0, -2.5], EncodingFormat::Base64) else {
            panic!("expected base64")
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn normalize_handles_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
