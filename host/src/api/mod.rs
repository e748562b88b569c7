//! The operations every transport shares: request validation, model lookup, embeddings and
//! the model list, with one error type that transports turn into their own shapes.

mod classify;
pub mod compact;
mod embeddings;
mod error;
pub(crate) mod fields;
mod hybrid;
mod multi_vector;
mod rerank;
mod sparse;
mod token_states;

pub use classify::{
    classify, predictions, Activation, Classified, ClassifyRequest, ClassifyResponse, Prediction,
    Sequence,
};
pub use embeddings::{
    check, check_format, embeddings, normalize, text_error, vectors, Embedding, EmbeddingData,
    EmbeddingsRequest, EmbeddingsResponse, EncodingFormat, Finish, InputType, Vectors, Writer,
};
pub use error::{ApiError, ErrorKind};
pub use hybrid::{Packed, SparseEmbedding, Wants};
pub use rerank::{query, rerank, RerankRequest, RerankResponse, RerankResult};
pub use sparse::{sparse_embeddings, SparseVector};
pub use token_states::{token_states, TextsRequest, TokenMatrix, MAX_STATE_VALUES};

use crate::engine::{Engine, Payload};
use crate::images::Images;
use crate::metrics::Metrics;
use crate::models::manifest::Manifest;
use crate::text::{LateEncoder, TextEncoder, TextError, Tokens};
use ember_plugin_api::{ModelKind, Outputs};
use serde::Serialize;
use std::sync::Arc;

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
    /// Its tokenizer for queries and documents, when it is a late-interaction model.
    pub late: Option<Arc<LateEncoder>>,
    /// Its batching engine.
    pub engine: Engine,
    /// Length of its vectors.
    pub dim: usize,
    /// Device it runs on.
    pub device: String,
    /// The outputs its plugin offers besides its kind's own.
    pub outputs: Outputs,
    /// Its raw vectors of the int8/uint8 calibration corpus, once a request needed them.
    pub calibration: tokio::sync::OnceCell<Arc<Vec<Vec<f32>>>>,
}

impl DeployedModel {
    /// What the model can do, as the API reports it.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut kind = match self.manifest.abi.kind {
            ModelKind::Embed => vec!["embed"],
            ModelKind::Rerank => vec!["rerank"],
            ModelKind::Clip => vec!["embed", "image_embed"],
            ModelKind::Classify => vec!["classify"],
        };
        // A SPLADE model's embeddings are its sparse weights; a late-interaction model's are
        // one vector per token, which also rerank.
        if self.manifest.sparse.is_some() {
            kind.retain(|c| *c != "embed");
        }
        if self.manifest.is_multi_vector() {
            kind = vec!["multi_vector", "rerank"];
        }
        // bge-m3's heads: sparse weights and token vectors besides its dense embeddings.
        if self.manifest.lexical.is_some() {
            kind.push("sparse");
        }
        if self
            .manifest
            .multi_vector
            .as_ref()
            .is_some_and(|m| !m.primary)
        {
            kind.push("multi_vector");
        }
        kind.extend(self.outputs.names());
        kind
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
    /// The shared image downloader.
    pub images: Arc<Images>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
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
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::ModelNotFound,
                        format!(
                            "model '{n}' is not deployed; deployed models: {}",
                            self.deployed()
                        ),
                    )
                    .at("model")
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
    pub fn list_models(&self) -> ModelList<'_> {
        let data = self
            .models
            .iter()
            .map(|m| {
                let kind = m.manifest.abi.kind;
                let classes = m.manifest.classes.as_ref();
                ModelEntry {
                    id: &m.id,
                    object: "model",
                    owned_by: "ember",
                    created: self.created,
                    backend: &self.backend,
                    kind: kind.as_str(),
                    capabilities: m.capabilities(),
                    stats: ModelStats {
                        queued: m.engine.queued(),
                    },
                    dimensions: m.dim,
                    max_input_tokens: m.manifest.abi.max_input_tokens,
                    max_items_per_request: self.max_items,
                    prompts: &m.manifest.prompts,
                    default_prompt_name: m.manifest.default_prompt_name.as_deref(),
                    device: &m.device,
                    encoding_formats: matches!(kind, ModelKind::Embed | ModelKind::Clip)
                        .then_some(ENCODING_FORMATS),
                    labels: classes.map(|c| c.labels.as_slice()),
                    multi_label: classes.map(|c| c.multi_label),
                }
            })
            .collect();
        ModelList {
            object: "list",
            data,
        }
    }
}

/// The encodings an embedding model answers in.
const ENCODING_FORMATS: [&str; 6] = ["float", "base64", "int8", "uint8", "binary", "ubinary"];

/// The OpenAI model list, with ember's additions per model.
#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    /// Always `list`.
    pub object: &'static str,
    /// One entry per deployed model, in `MODEL_NAMES` order.
    pub data: Vec<ModelEntry<'a>>,
}

/// One model of the list.
#[derive(Debug, Serialize)]
pub struct ModelEntry<'a> {
    /// Its id.
    pub id: &'a str,
    /// Always `model`.
    pub object: &'static str,
    /// Always `ember`.
    pub owned_by: &'static str,
    /// Server start time (Unix seconds).
    pub created: u64,
    /// The backend plugin serving it.
    pub backend: &'a str,
    /// `embed`, `rerank`, `clip` or `classify`.
    pub kind: &'static str,
    /// What it can do.
    pub capabilities: Vec<&'static str>,
    /// Its queue now.
    pub stats: ModelStats,
    /// Length of its vectors.
    pub dimensions: usize,
    /// Longest input in tokens.
    pub max_input_tokens: u32,
    /// Most inputs per request.
    pub max_items_per_request: usize,
    /// Its named prompts.
    pub prompts: &'a std::collections::BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_prompt_name: Option<&'a str>,
    /// The device it runs on.
    pub device: &'a str,
    /// Encodings it answers in (embedding models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_formats: Option<[&'static str; 6]>,
    /// Its labels (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<&'a [String]>,
    /// Whether its labels are independent (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<bool>,
}

/// A model's queue.
#[derive(Debug, Serialize)]
pub struct ModelStats {
    /// Inputs waiting or running.
    pub queued: usize,
}

/// Runs a model's tokenization on a blocking thread, timing it in the tokenize metric; the
/// outer error is a failed task, the inner one the tokenizer's.
pub(crate) async fn tokenized<T: Send + 'static>(
    model: &DeployedModel,
    work: impl FnOnce() -> Result<T, TextError> + Send + 'static,
) -> Result<Result<T, TextError>, ApiError> {
    let timer = model.engine.metrics().tokenize_seconds.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let out = work();
        timer.observe(started.elapsed().as_secs_f64());
        out
    })
    .await
    .map_err(tokenizer_failed)
}

/// Tokenizes with `work` on a blocking thread, blaming tokenizer errors on `param`; returns
/// the model's payloads (each input's tokens wrapped by `payload`) and the tokens read.
pub(crate) async fn encode(
    model: &DeployedModel,
    param: &str,
    payload: fn(Tokens) -> Payload,
    work: impl FnOnce() -> Result<Vec<Tokens>, TextError> + Send + 'static,
) -> Result<(Vec<Payload>, usize), ApiError> {
    let tokens = tokenized(model, work)
        .await?
        .map_err(|e| text_error(param, e))?;
    let count = tokens.iter().map(Tokens::len).sum();
    Ok((tokens.into_iter().map(payload).collect(), count))
}

/// The error for a tokenizer task that did not finish (it panicked or was cancelled).
pub fn tokenizer_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("tokenizer task failed: {e}"))
}

/// Token counts.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Usage {
    /// Tokens in the inputs, special tokens included, after truncation.
    pub prompt_tokens: usize,
    /// Same as `prompt_tokens`.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage of `tokens` prompt tokens (embeddings and rerank count no completion tokens).
    pub fn of(tokens: usize) -> Usage {
        Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_touches_the_named_field_only() {
        let e = ApiError::invalid("input", "input[3] is too long; see input_type")
            .renamed("input", "texts");
        assert_eq!(e.param.as_deref(), Some("texts"));
        assert_eq!(e.message, "texts[3] is too long; see input_type");
        let e = ApiError::invalid("model", "model input is odd").renamed("input", "texts");
        assert_eq!(e.message, "model input is odd");
        assert_eq!(e.param.as_deref(), Some("model"));
    }
}
