//! Hugging Face text-embeddings-inference (TEI) routes, with TEI's request and response shapes
//! and error shape (`{"error", "error_type"}`, 422 for invalid input): `POST /embed`,
//! `POST /embed_all` (every token's state, for models whose plugin offers them),
//! `POST /embed_sparse` (SPLADE models),
//! `POST /rerank` with `texts`, `POST /predict`, `POST /tokenize`, `POST /decode`,
//! `GET /info`, and `POST /`, which answers as `/embed`, `/rerank` or `/predict` by the
//! model's kind, as TEI does (it is where `huggingface_hub`'s `InferenceClient` posts; its
//! text classification, which sends `parameters`, gets the Inference API's `[[...]]`). Each route takes an optional `model` (an
//! extension); without it the route uses the only model, or the first that can answer it.

use crate::api::fields::{object, opt_bool, opt_positive, opt_str, texts, truncation, type_name};
use crate::api::{self, ApiError, AppState, DeployedModel, EncodingFormat, ErrorKind};
use crate::api::{EmbeddingsRequest, RerankRequest, TextsRequest, TokenMatrix};
use ember_plugin_api::{ModelKind, Outputs};
use serde::Serialize;
use serde_json::{json, Map, Value};

mod predict;

use predict::text_classification;
pub use predict::{predict, Predicted};

/// The model a TEI request addresses: the one it names, else the only one, else the first
/// that `can` serve the route.
pub(super) fn model_for<'a>(
    state: &'a AppState,
    body: &Map<String, Value>,
    can: impl Fn(&DeployedModel) -> bool,
) -> Result<&'a DeployedModel, ApiError> {
    let name = opt_str(body, "model")?;
    if name.is_some() || state.models.len() == 1 {
        return state.model(name.as_deref());
    }
    state
        .models
        .iter()
        .find(|m| can(m))
        .ok_or_else(|| ApiError::invalid("model", "no deployed model can answer this route"))
}

fn embeds(m: &DeployedModel) -> bool {
    matches!(m.manifest.abi.kind, ModelKind::Embed | ModelKind::Clip)
        && m.manifest.sparse.is_none()
        && !m.manifest.is_multi_vector()
}

/// Whether the model answers sparse weights (SPLADE, bge-m3's lexical head).
fn sparse(m: &DeployedModel) -> bool {
    m.manifest.sparse.is_some() || m.manifest.lexical.is_some()
}

fn has_token_states(m: &DeployedModel) -> bool {
    m.outputs.has(Outputs::TOKEN_STATES)
}

pub(super) fn classifies(m: &DeployedModel) -> bool {
    m.manifest.abi.kind == ModelKind::Classify
}

pub(super) fn reranks(m: &DeployedModel) -> bool {
    m.manifest.abi.kind == ModelKind::Rerank
}

/// `POST /embed`: `inputs` (a string or a list), `normalize`, `truncate`,
/// `truncation_direction`, `prompt_name`, `dimensions`; answers a list of vectors.
pub async fn embed(state: &AppState, value: &Value) -> Result<Vec<Vec<f32>>, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, embeds)?;
    let req = EmbeddingsRequest {
        model: Some(model.id.clone()),
        input: texts(body, "inputs", state.max_items)?,
        encoding_format: EncodingFormat::Float,
        dimensions: opt_positive(body, "dimensions")?,
        modality: "text".into(),
        prompt_name: opt_str(body, "prompt_name")?,
        input_type: None,
        normalize: opt_bool(body, "normalize")?.unwrap_or(true),
        truncation: truncation(body)?,
        max_tokens: None,
        outputs: None,
        return_tokens: false,
    };
    let done = api::vectors(state, req)
        .await
        .map_err(|e| e.renamed("input", "inputs"))?;
    Ok(done.vectors)
}

/// `POST /embed_all`: `inputs` (a string or a list), `truncate`, `truncation_direction`,
/// `prompt_name`; answers each input's token states, `[inputs][tokens][dim]`.
pub async fn embed_all(state: &AppState, value: &Value) -> Result<Vec<TokenMatrix>, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, has_token_states)?;
    let req = TextsRequest {
        model: Some(model.id.clone()),
        input: texts(body, "inputs", state.max_items)?,
        prompt_name: opt_str(body, "prompt_name")?,
        input_type: None,
        truncation: truncation(body)?,
    };
    api::token_states(state, req)
        .await
        .map_err(|e| e.renamed("input", "inputs"))
}

/// One entry of TEI's sparse embedding.
#[derive(Debug, Serialize)]
pub struct SparseValue {
    /// The token id.
    pub index: u32,
    /// Its weight.
    pub value: f32,
}

/// `POST /embed_sparse` (SPLADE models): `inputs` (a string or a list), `truncate`,
/// `truncation_direction`, `prompt_name`; answers each input's non-zero weights as
/// `[{index, value}]`, ascending ids.
pub async fn embed_sparse(
    state: &AppState,
    value: &Value,
) -> Result<Vec<Vec<SparseValue>>, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, sparse)?;
    let req = TextsRequest {
        model: Some(model.id.clone()),
        input: texts(body, "inputs", state.max_items)?,
        prompt_name: opt_str(body, "prompt_name")?,
        input_type: None,
        truncation: truncation(body)?,
    };
    let vectors = api::sparse_embeddings(state, req)
        .await
        .map_err(|e| e.renamed("input", "inputs"))?;
    Ok(vectors
        .into_iter()
        .map(|v| {
            v.indices
                .into_iter()
                .zip(v.values)
                .map(|(index, value)| SparseValue { index, value })
                .collect()
        })
        .collect())
}

/// One document of TEI's rerank answer.
#[derive(Debug, Serialize)]
pub struct Rank {
    /// Its position in `texts`.
    pub index: usize,
    /// Its score.
    pub score: f32,
    /// Its text, with `return_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /rerank` in TEI's shape (`query`, `texts`, `raw_scores`, `return_text`, `truncate`):
/// a list of `{index, score, text?}`, best first.
pub async fn rerank(state: &AppState, value: &Value) -> Result<Vec<Rank>, ApiError> {
    let body = object(value)?;
    // A multi-vector model ranks by MaxSim.
    let model = model_for(state, body, |m| reranks(m) || m.manifest.is_multi_vector())?;
    let query = api::query(body)?;
    let documents = match body.get("texts") {
        Some(Value::Array(_)) => texts(body, "texts", state.max_items)?,
        Some(other) => {
            return Err(ApiError::invalid(
                "texts",
                format!("texts must be a list of strings, got {}", type_name(other)),
            ))
        }
        None => return Err(ApiError::invalid("texts", "texts is required")),
    };
    let return_text = opt_bool(body, "return_text")?.unwrap_or(false);
    let req = RerankRequest {
        model: Some(model.id.clone()),
        query,
        documents,
        top_n: None,
        return_documents: return_text,
        raw_scores: opt_bool(body, "raw_scores")?.unwrap_or(false),
        truncation: truncation(body)?,
        max_tokens_per_doc: None,
    };
    let r = api::rerank(state, req)
        .await
        .map_err(|e| e.renamed("documents", "texts"))?;
    Ok(r.results
        .into_iter()
        .map(|res| Rank {
            index: res.index,
            score: res.relevance_score,
            text: res.document,
        })
        .collect())
}

/// The answer of TEI's root route, in the shape of the route it stands for.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RootAnswer {
    /// `/rerank`'s.
    Ranks(Vec<Rank>),
    /// `/predict`'s, or the Inference API's text classification.
    Predicted(Predicted),
    /// `/embed`'s.
    Vectors(Vec<Vec<f32>>),
    /// `/embed_sparse`'s (SPLADE models).
    Sparse(Vec<Vec<SparseValue>>),
}

/// `POST /`: `/embed`, `/rerank` or `/predict` by the model's kind, as TEI's root route is.
pub async fn root(state: &AppState, value: &Value) -> Result<RootAnswer, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, |_| true)?;
    Ok(match model.manifest.abi.kind {
        _ if model.manifest.is_multi_vector() => RootAnswer::Ranks(rerank(state, value).await?),
        ModelKind::Rerank => RootAnswer::Ranks(rerank(state, value).await?),
        ModelKind::Classify if body.contains_key("parameters") => {
            RootAnswer::Predicted(text_classification(state, body).await?)
        }
        ModelKind::Classify => RootAnswer::Predicted(predict(state, value).await?),
        ModelKind::Embed if model.manifest.sparse.is_some() => {
            RootAnswer::Sparse(embed_sparse(state, value).await?)
        }
        ModelKind::Embed | ModelKind::Clip => RootAnswer::Vectors(embed(state, value).await?),
    })
}

/// One token of TEI's `/tokenize` answer.
#[derive(Debug, Serialize)]
pub struct Token {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// Whether the tokenizer added it.
    pub special: bool,
    /// Byte offset where its text starts (null for added special tokens).
    pub start: Option<usize>,
    /// Byte offset where its text ends.
    pub stop: Option<usize>,
}

/// `POST /tokenize`: `inputs`, `add_special_tokens` (default true), `prompt_name`; per input
/// the tokens with `id`, `text`, `special`, `start`, `stop` (byte offsets).
pub async fn tokenize(state: &AppState, value: &Value) -> Result<Vec<Vec<Token>>, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, |_| true)?;
    let inputs = texts(body, "inputs", state.max_items)?;
    let special = opt_bool(body, "add_special_tokens")?.unwrap_or(true);
    let prompt = match opt_str(body, "prompt_name")? {
        None => String::new(),
        Some(name) => model.manifest.prompts.get(&name).cloned().ok_or_else(|| {
            ApiError::invalid(
                "prompt_name",
                format!(
                    "prompt_name '{name}' is not one of model '{}''s prompts: {}",
                    model.id,
                    model
                        .manifest
                        .prompts
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?,
    };
    let encoder = model.encoder.clone();
    let lists = tokio::task::spawn_blocking(move || {
        inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let text = format!("{prompt}{text}");
                let tokens = encoder
                    .tokenize(&text, special)
                    .map_err(|e| ApiError::invalid("inputs", format!("inputs[{i}]: {e}")))?;
                Ok(tokens
                    .into_iter()
                    .map(|t| Token {
                        id: t.id,
                        text: t.text,
                        special: t.special,
                        start: t.span.map(|s| s.0),
                        stop: t.span.map(|s| s.1),
                    })
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(crate::api::tokenizer_failed)??;
    Ok(lists)
}

/// `POST /decode`: `ids` (a list, or a list of lists) and `skip_special_tokens` (default
/// true); answers one string per list.
pub fn decode(state: &AppState, value: &Value) -> Result<Vec<String>, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, |_| true)?;
    let skip = opt_bool(body, "skip_special_tokens")?.unwrap_or(true);
    let id_list = |v: &Value, what: &str| -> Result<Vec<u32>, ApiError> {
        let items = v.as_array().ok_or_else(|| {
            ApiError::invalid("ids", format!("{what} must be a list of token ids"))
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::invalid("ids", format!("{what}[{i}] must be a token id, got {x}"))
                    })
            })
            .collect()
    };
    let lists: Vec<Vec<u32>> = match body.get("ids") {
        Some(Value::Array(items)) if items.iter().all(Value::is_array) && !items.is_empty() => {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| id_list(v, &format!("ids[{i}]")))
                .collect::<Result<_, _>>()?
        }
        Some(v @ Value::Array(_)) => vec![id_list(v, "ids")?],
        _ => {
            return Err(ApiError::invalid(
                "ids",
                "ids is required: a list of token ids, or a list of such lists",
            ))
        }
    };
    lists
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            model
                .encoder
                .decode(ids, skip)
                .map_err(|e| ApiError::invalid("ids", format!("ids[{i}]: {e}")))
        })
        .collect()
}

/// `GET /info`: TEI's model information for the first model (`model_type` `embedding` with
/// its pooling, `reranker`, or `classifier` with its labels), with ember's additions (`backend`, `prompts`, `models`).
pub fn info(state: &AppState) -> Result<Info<'_>, ApiError> {
    let Some(model) = state.models.first() else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "no model is deployed",
        ));
    };
    let abi = &model.manifest.abi;
    let model_type = match (&model.manifest.classes, abi.kind) {
        (Some(classes), _) => {
            let id2label: Map<String, Value> = (classes.labels.iter().enumerate())
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect();
            let label2id: Map<String, Value> = (classes.labels.iter().enumerate())
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect();
            json!({"classifier": {"id2label": id2label, "label2id": label2id}})
        }
        (None, ModelKind::Rerank) => json!({"reranker": {
            "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}),
        // TEI reports a SPLADE model's pooling as "splade".
        (None, _) if model.manifest.sparse.is_some() => json!({"embedding": {"pooling": "splade"}}),
        (None, _) => json!({"embedding": {"pooling": abi.pooling.as_str()}}),
    };
    Ok(Info {
        model_id: &model.id,
        model_sha: None,
        served_model_name: &model.id,
        model_type,
        max_input_length: abi.max_input_tokens,
        max_client_batch_size: state.max_items,
        auto_truncate: true,
        version: env!("CARGO_PKG_VERSION"),
        sha: None,
        docker_label: None,
        backend: &state.backend,
        device: &model.device,
        dimensions: model.dim,
        prompts: &model.manifest.prompts,
        models: state.models.iter().map(|m| m.id.as_str()).collect(),
    })
}

/// TEI's `/info` answer, with ember's additions.
#[derive(Debug, Serialize)]
pub struct Info<'a> {
    /// The first model's id.
    pub model_id: &'a str,
    /// Always null: ember does not track the repository's revision here.
    pub model_sha: Option<&'a str>,
    /// The same id.
    pub served_model_name: &'a str,
    /// `{"embedding": {"pooling"}}`, `{"reranker": {...}}` or `{"classifier": {...}}`.
    pub model_type: Value,
    /// Longest input in tokens.
    pub max_input_length: u32,
    /// Most inputs per request.
    pub max_client_batch_size: usize,
    /// Always true: long inputs are truncated unless a request says otherwise.
    pub auto_truncate: bool,
    /// ember's version.
    pub version: &'static str,
    /// Always null.
    pub sha: Option<&'a str>,
    /// Always null.
    pub docker_label: Option<&'a str>,
    /// The backend plugin.
    pub backend: &'a str,
    /// The first model's device.
    pub device: &'a str,
    /// Its vector length.
    pub dimensions: usize,
    /// Its named prompts.
    pub prompts: &'a std::collections::BTreeMap<String, String>,
    /// Every deployed model's id.
    pub models: Vec<&'a str>,
}
