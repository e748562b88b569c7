//! How the vectors of `/v1/embeddings` are finished and written: normalisation and
//! `dimensions`, then float, base64 or compact encodings, and the response shape.

use crate::api::compact::{Precision, Quantizer};
use crate::api::{ApiError, DeployedModel, Usage};
use base64::Engine as _;
use serde::Serialize;

/// Output encoding of vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// Little-endian float32 bytes, base64-encoded.
    Base64,
    /// Quantised codes, as JSON integers.
    Compact(Precision),
}

impl EncodingFormat {
    /// The format called `name`: `float`, `base64`, or a compact precision.
    pub fn parse(name: &str) -> Option<EncodingFormat> {
        match name {
            "float" => Some(EncodingFormat::Float),
            "base64" => Some(EncodingFormat::Base64),
            other => Precision::parse(other).map(EncodingFormat::Compact),
        }
    }
}

/// What happens to a model's raw vector before it is answered: unit length (unless
/// `normalize` is off), then truncation to `dimensions` and unit length again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish {
    /// Whether vectors come out with unit length.
    pub normalize: bool,
    /// Keep only the first this many dimensions.
    pub dimensions: Option<usize>,
}

impl Finish {
    /// Applies the post-processing to `v`.
    pub fn apply(&self, v: &mut Vec<f32>) {
        if self.normalize {
            normalize(v);
        }
        if let Some(d) = self.dimensions {
            v.truncate(d);
            if self.normalize {
                normalize(v);
            }
        }
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
    /// Quantised codes (`int8`, `uint8`, `binary`, `ubinary`).
    Codes(Vec<i16>),
    /// One vector per token (multi-vector models), as a list of lists.
    Vectors(crate::api::TokenMatrix),
}

/// One embedding in a response.
#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: &'static str,
    /// Numbers, or a base64 string of little-endian float32 (absent when `outputs` leaves the
    /// model's embedding out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Embedding>,
    /// Sparse weights, when `outputs` asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_embedding: Option<crate::api::SparseEmbedding>,
    /// One vector per token, when `outputs` asks for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_vector_embedding: Option<Embedding>,
    /// Position in the input.
    pub index: usize,
}

impl EmbeddingData {
    /// The entry of input `index` holding its `embedding` only.
    pub fn of(index: usize, embedding: Embedding) -> EmbeddingData {
        EmbeddingData {
            object: "embedding",
            embedding: Some(embedding),
            sparse_embedding: None,
            multi_vector_embedding: None,
            index,
        }
    }
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

impl EmbeddingsResponse {
    /// The list of `data` that `model` answered, having read `tokens` tokens.
    pub fn of(
        model: &DeployedModel,
        data: Vec<EmbeddingData>,
        tokens: usize,
    ) -> EmbeddingsResponse {
        EmbeddingsResponse {
            object: "list",
            data,
            model: model.id.clone(),
            usage: Usage::of(tokens),
        }
    }
}

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// How finished vectors are written into a response.
pub enum Writer {
    /// JSON numbers.
    Float,
    /// Little-endian float32 bytes, base64-encoded.
    Base64,
    /// Quantised codes.
    Codes(Quantizer),
}

impl Writer {
    /// The writer of `format` for `model`'s vectors finished by `finish` (calibrating the
    /// model's int8/uint8 ranges on first use).
    pub async fn new(
        model: &DeployedModel,
        format: EncodingFormat,
        finish: Finish,
    ) -> Result<Writer, ApiError> {
        Ok(match format {
            EncodingFormat::Float => Writer::Float,
            EncodingFormat::Base64 => Writer::Base64,
            EncodingFormat::Compact(p) => {
                Writer::Codes(Quantizer::calibrated(model, p, |v| finish.apply(v)).await?)
            }
        })
    }

    /// `v` as the response carries it.
    pub fn write(&self, v: Vec<f32>) -> Embedding {
        match self {
            Writer::Float => Embedding::Float(v),
            Writer::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Writer::Codes(q) => Embedding::Codes(q.codes(&v)),
        }
    }
}
