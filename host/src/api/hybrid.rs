//! The outputs a request asks for with `outputs` on `/v1/embeddings`: `dense`, `sparse`,
//! `multi_vector`. bge-m3 gives all three from one forward pass (its token states, pooled for
//! the dense vector and read by its lexical and ColBERT heads); a SPLADE model answers `sparse`
//! and a ColBERT model `multi_vector`, each its only output.

use super::embeddings::{
    prompt, EmbeddingData, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat, Finish, Writer,
};
use super::fields::type_name;
use super::multi_vector::{project, written};
use super::sparse::SparseVector;
use super::token_states::{state_budget, states_of, TextsRequest, TokenMatrix};
use super::{text_error, tokenized, ApiError, AppState, DeployedModel};
use crate::engine::Payload;
use crate::text::{Side, TextEncoder, Truncation};
use base64::Engine as _;
use ember_plugin_api::ModelKind;
use serde::Serialize;
use serde_json::{Map, Value};

/// The outputs a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wants {
    /// The model's dense embedding.
    pub dense: bool,
    /// Sparse vocabulary weights.
    pub sparse: bool,
    /// One vector per token.
    pub multi_vector: bool,
}

impl Wants {
    /// Only the dense embedding.
    pub const DENSE: Wants = Wants {
        dense: true,
        sparse: false,
        multi_vector: false,
    };

    /// Reads `outputs` (a list of `dense`, `sparse`, `multi_vector`; `colbert` names the
    /// last), when the body has one.
    pub fn parse(body: &Map<String, Value>) -> Result<Option<Wants>, ApiError> {
        let bad = |m: String| ApiError::invalid("outputs", m);
        let items = match body.get("outputs") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err(bad("outputs must not be empty".into())),
            Some(other) => {
                return Err(bad(format!(
                    "outputs must be a list of dense, sparse, multi_vector; got {}",
                    type_name(other)
                )))
            }
        };
        let mut wants = Wants::default();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some("dense") => wants.dense = true,
                Some("sparse") => wants.sparse = true,
                Some("multi_vector" | "colbert") => wants.multi_vector = true,
                _ => {
                    return Err(bad(format!(
                        "outputs[{i}] must be one of dense, sparse, multi_vector; got {item}"
                    )))
                }
            }
        }
        Ok(Some(wants))
    }

    /// The outputs a model answers when a request names none: SPLADE's sparse weights,
    /// ColBERT's vectors, else the dense embedding.
    pub fn default_for(model: &DeployedModel) -> Wants {
        Wants {
            dense: model.manifest.sparse.is_none() && !model.manifest.is_multi_vector(),
            sparse: model.manifest.sparse.is_some(),
            multi_vector: model.manifest.is_multi_vector(),
        }
    }

    /// Only `multi_vector`.
    fn only_multi_vector(self) -> bool {
        self.multi_vector && !self.dense && !self.sparse
    }
}

/// Plain numbers, or their little-endian bytes in base64.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Packed<T> {
    /// JSON numbers.
    Plain(Vec<T>),
    /// Little-endian bytes (uint32 ids, float32 weights), base64-encoded.
    Base64(String),
}

/// `values` as JSON numbers, or their little-endian bytes in base64.
fn packed<T, const N: usize>(values: Vec<T>, base64: bool, bytes: fn(&T) -> [u8; N]) -> Packed<T> {
    match base64 {
        false => Packed::Plain(values),
        true => {
            let raw: Vec<u8> = values.iter().flat_map(bytes).collect();
            Packed::Base64(base64::engine::general_purpose::STANDARD.encode(raw))
        }
    }
}

/// A text's sparse weights as `/v1/embeddings` answers them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseEmbedding {
    /// Ascending token ids.
    pub indices: Packed<u32>,
    /// Their weights (all positive).
    pub values: Packed<f32>,
    /// The tokens' text, with `return_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<String>>,
}

impl SparseEmbedding {
    /// `v` as answered: in base64 when asked, with its tokens' text from `tokens`.
    fn of(v: SparseVector, base64: bool, tokens: Option<&TextEncoder>) -> SparseEmbedding {
        let text = tokens.map(|t| {
            v.indices
                .iter()
                .map(|&id| t.token_text(id).unwrap_or_default())
                .collect()
        });
        SparseEmbedding {
            indices: packed(v.indices, base64, |i| i.to_le_bytes()),
            values: packed(v.values, base64, |x| x.to_le_bytes()),
            tokens: text,
        }
    }
}

/// What one text's token states gave.
#[derive(Debug, Default)]
pub(super) struct Computed {
    /// The dense embedding, finished.
    pub dense: Option<Vec<f32>>,
    /// The lexical weights.
    pub sparse: Option<SparseVector>,
    /// The token vectors.
    pub vectors: Option<TokenMatrix>,
}

/// Whether vectors of several outputs are written in base64 (`float` or `base64`; compact
/// encodings are for the dense embedding alone, so they are refused for other outputs).
pub(super) fn float_or_base64(format: EncodingFormat) -> Result<bool, ApiError> {
    match format {
        EncodingFormat::Float => Ok(false),
        EncodingFormat::Base64 => Ok(true),
        EncodingFormat::Compact(p) => Err(ApiError::invalid(
            "encoding_format",
            format!(
                "encoding_format {} is offered for the dense embedding alone; with sparse or \
                 multi-vector outputs use float or base64",
                p.name()
            ),
        )),
    }
}

/// `/v1/embeddings` with `outputs` other than the model's dense embedding alone.
pub async fn embeddings(
    state: &AppState,
    model: &DeployedModel,
    req: EmbeddingsRequest,
    wants: Wants,
) -> Result<EmbeddingsResponse, ApiError> {
    let m = &model.manifest;
    if req.modality != "text" {
        return Err(ApiError::invalid(
            "modality",
            format!(
                "model '{}' answers sparse or multi-vector outputs of texts: modality must be \
                 'text'",
                model.id
            ),
        ));
    }
    if m.abi.kind != ModelKind::Embed {
        return Err(ApiError::invalid(
            "outputs",
            format!(
                "outputs other than dense are answered for texts of embedding models; model \
                 '{}' is a {} model",
                model.id,
                m.abi.kind.as_str()
            ),
        ));
    }
    if wants.dense && (m.sparse.is_some() || m.is_multi_vector()) {
        return Err(model.lacks("embed", "outputs"));
    }
    if wants.sparse && m.sparse.is_none() && m.lexical.is_none() {
        return Err(model.lacks("sparse", "outputs"));
    }
    if wants.multi_vector && m.multi_vector.is_none() {
        return Err(model.lacks("multi_vector", "outputs"));
    }
    if m.is_multi_vector() && wants.only_multi_vector() {
        return super::multi_vector::embeddings(model, req).await;
    }
    let base64 = float_or_base64(req.encoding_format)?;
    if req.dimensions.is_some() && !wants.dense {
        return Err(ApiError::invalid(
            "dimensions",
            "dimensions applies to the dense embedding, which outputs does not ask for",
        ));
    }
    if let Some(d) = req.dimensions.filter(|&d| d > model.dim) {
        return Err(ApiError::invalid(
            "dimensions",
            format!(
                "dimensions must be at most {} for model '{}', got {d}",
                model.dim, model.id
            ),
        ));
    }
    let tokens_of = req.return_tokens.then_some(&*model.encoder);
    let dense = match base64 {
        true => Writer::Base64,
        false => Writer::Float,
    };
    let (computed, tokens) = match m.sparse {
        // SPLADE: the plugin reduces the masked-language logits.
        Some(_) => {
            let texts = TextsRequest {
                model: Some(model.id.clone()),
                input: req.input,
                prompt_name: req.prompt_name,
                input_type: req.input_type,
                truncation: req.truncation,
            };
            let (vectors, tokens) = super::sparse::splade(state, texts).await?;
            let computed = vectors
                .into_iter()
                .map(|v| Computed {
                    sparse: Some(v),
                    ..Computed::default()
                })
                .collect();
            (computed, tokens)
        }
        None => {
            let prompt =
                prompt(model, req.prompt_name.as_deref(), req.input_type)?.map(str::to_string);
            let finish = req.finish();
            from_states(model, req.input, prompt, req.truncation, wants, finish).await?
        }
    };
    let data = computed
        .into_iter()
        .enumerate()
        .map(|(index, c)| EmbeddingData {
            object: "embedding",
            embedding: c.dense.map(|v| dense.write(v)),
            sparse_embedding: c.sparse.map(|v| SparseEmbedding::of(v, base64, tokens_of)),
            multi_vector_embedding: c.vectors.map(|m| written(m, base64)),
            index,
        })
        .collect();
    Ok(EmbeddingsResponse::of(model, data, tokens))
}

/// The `wants` of each text (with `prompt` in front) computed from one pass of token states:
/// the dense embedding pooled as the model pools and finished by `finish`, the lexical
/// head's weights, the token vectors; and the tokens read.
pub(super) async fn from_states(
    model: &DeployedModel,
    texts: Vec<String>,
    prompt: Option<String>,
    truncation: Truncation,
    wants: Wants,
    finish: Finish,
) -> Result<(Vec<Computed>, usize), ApiError> {
    let encoder = model.encoder.clone();
    let pool_prompt = model.manifest.abi.include_prompt;
    let mut tokens = tokenized(model, move || match &prompt {
        Some(p) => encoder.encode_prompted(p, &texts, pool_prompt, truncation),
        None => encoder.encode_with(&texts, truncation),
    })
    .await?
    .map_err(|e| text_error("input", e))?;
    let count: usize = tokens.iter().map(|t| t.len()).sum();
    state_budget(model, count, "input")?;
    // The states of every token are asked for; pooling leaves the prompt out here.
    let texts: Vec<(Vec<i64>, usize)> = tokens
        .iter_mut()
        .map(|t| (t.ids.clone(), std::mem::take(&mut t.unpooled)))
        .collect();
    let outputs = model
        .engine
        .run(tokens.into_iter().map(Payload::States).collect())
        .await?;
    // What the blocking thread needs of the manifest (the heads' weights are shared).
    let (pooling, head) = (model.manifest.abi.pooling, model.manifest.head.clone());
    let (lexical, multi_vector) = (
        model.manifest.lexical.clone(),
        model.manifest.multi_vector.clone(),
    );
    let computed = tokio::task::spawn_blocking(move || {
        outputs
            .into_iter()
            .zip(texts)
            .map(|(out, (ids, unpooled))| {
                let (dim, values) = states_of(out)?;
                let len = ids.len();
                let dense = wants.dense.then(|| {
                    let mask: Vec<i64> = (0..len).map(|i| i64::from(i >= unpooled)).collect();
                    let pooled =
                        ember_plugin_api::pooling::pool(pooling, &values, &mask, 1, len, dim);
                    let mut v = head.apply(&pooled);
                    finish.apply(&mut v);
                    v
                });
                let sparse = match (&lexical, wants.sparse) {
                    (Some(l), true) => {
                        let (indices, values) = l.weights(&values, &ids);
                        Some(SparseVector { indices, values })
                    }
                    _ => None,
                };
                let vectors = match (&multi_vector, wants.multi_vector) {
                    (Some(mv), true) => {
                        let kept = mv.spec.kept(Side::Document, &ids, &Default::default());
                        Some(project(mv, dim, &values, &kept))
                    }
                    _ => None,
                };
                Ok::<_, ApiError>(Computed {
                    dense,
                    sparse,
                    vectors,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("computing outputs failed: {e}")))??;
    Ok((computed, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Option<Wants>, ApiError> {
        Wants::parse(v.as_object().unwrap())
    }

    #[test]
    fn outputs_are_read_as_a_set_and_bad_ones_named() {
        assert_eq!(parse(json!({})).unwrap(), None);
        let w = parse(json!({"outputs": ["sparse", "colbert", "sparse"]}))
            .unwrap()
            .unwrap();
        assert_eq!((w.dense, w.sparse, w.multi_vector), (false, true, true));
        let e = parse(json!({"outputs": ["dense", 3]})).unwrap_err();
        assert!(e.message.contains("outputs[1]"), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("outputs"));
        assert!(parse(json!({"outputs": []})).is_err());
        assert!(parse(json!({"outputs": "dense"})).is_err());
    }

    #[test]
    fn base64_packs_little_endian_bytes() {
        let p = packed(vec![1u32, 258], true, |i| i.to_le_bytes());
        let Packed::Base64(s) = p else { panic!() };
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(bytes, [1, 0, 0, 0, 2, 1, 0, 0]);
    }
}
