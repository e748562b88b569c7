//! Multi-vector (late-interaction, ColBERT) embeddings: one unit vector per kept token of each
//! text, made by the host from the model's token states, and MaxSim scores between a query's
//! vectors and each document's.

use super::embeddings::{
    Embedding, EmbeddingData, EmbeddingsRequest, EmbeddingsResponse, EncodingFormat, InputType,
    Writer,
};
use super::rerank::{RerankRequest, RerankResponse, RerankResult};
use super::token_states::{TokenMatrix, MAX_STATE_VALUES};
use super::{text_error, tokenized, ApiError, DeployedModel, ErrorKind, Usage};
use crate::engine::{Output, Payload};
use crate::models::multi_vector::MultiVector;
use crate::text::{LateEncoder, Side, Tokens, Truncation};
use std::sync::Arc;

/// Each text's vectors as `side` (in input order), and the tokens read.
pub async fn multi_vectors(
    model: &DeployedModel,
    texts: Vec<String>,
    side: Side,
    truncation: Truncation,
    param: &str,
) -> Result<(Vec<TokenMatrix>, usize), ApiError> {
    let (late, pipeline) = parts(model)?;
    let encoder = late.clone();
    let (tokens, kept) = tokenized(model, move || {
        let tokens = encoder.encode(side, &texts, truncation)?;
        let kept: Vec<Vec<bool>> = tokens.iter().map(|t| encoder.kept(side, t)).collect();
        Ok((tokens, kept))
    })
    .await?
    .map_err(|e| text_error(param, e))?;
    let count: usize = tokens.iter().map(Tokens::len).sum();
    let width = model.manifest.abi.hidden_size as usize;
    if count * width.max(model.dim) > MAX_STATE_VALUES {
        return Err(ApiError {
            kind: ErrorKind::TooLarge,
            ..ApiError::invalid(
                param,
                format!(
                    "the token vectors of these inputs would hold {} values ({count} tokens \
                     of {}), over the {MAX_STATE_VALUES} one request may compute; send fewer \
                     or shorter inputs",
                    count * width.max(model.dim),
                    width.max(model.dim)
                ),
            )
        });
    }
    let outputs = model
        .engine
        .run(tokens.into_iter().map(Payload::States).collect())
        .await?;
    let pipeline = pipeline.clone();
    let matrices = tokio::task::spawn_blocking(move || {
        outputs
            .into_iter()
            .zip(kept)
            .map(|(out, kept)| match out {
                Output::States { dim, values } => Ok(project(&pipeline, dim, &values, &kept)),
                _ => Err(ApiError::new(
                    ErrorKind::Internal,
                    "the model returned something else than token states",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("projecting token vectors failed: {e}")))??;
    Ok((matrices, count))
}

/// `/v1/embeddings` for a multi-vector model: each text's vectors, `[tokens][dim]` (or their
/// little-endian float32 bytes in base64, token after token). Texts are documents unless
/// `input_type` (or `prompt_name`) says `query`.
pub async fn embeddings(
    model: &DeployedModel,
    req: EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ApiError> {
    if req.modality != "text" {
        return Err(ApiError::invalid(
            "modality",
            format!(
                "model '{}' is a multi-vector text model: modality must be 'text'",
                model.id
            ),
        ));
    }
    if req.dimensions.is_some() {
        return Err(ApiError::invalid(
            "dimensions",
            format!(
                "model '{}' answers one vector per token at its full width ({}); dimensions \
                 applies to single-vector models",
                model.id, model.dim
            ),
        ));
    }
    let base64 = match req.encoding_format {
        EncodingFormat::Float => false,
        EncodingFormat::Base64 => true,
        EncodingFormat::Compact(p) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!(
                    "encoding_format {} is not offered for multi-vector models; use float or \
                     base64",
                    p.name()
                ),
            ))
        }
    };
    let side = side_of(model, req.prompt_name.as_deref(), req.input_type)?;
    let (matrices, tokens) = multi_vectors(model, req.input, side, req.truncation, "input").await?;
    let data = matrices
        .into_iter()
        .enumerate()
        .map(|(index, m)| {
            EmbeddingData::of(
                index,
                match base64 {
                    true => Writer::Base64.write(m.values),
                    false => Embedding::Vectors(m),
                },
            )
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list",
        data,
        model: model.id.clone(),
        usage: Usage::of(tokens),
    })
}

/// The side a request's texts are on: `query` when `input_type` or `prompt_name` says so,
/// else documents.
fn side_of(
    model: &DeployedModel,
    prompt_name: Option<&str>,
    input_type: Option<InputType>,
) -> Result<Side, ApiError> {
    match (prompt_name, input_type) {
        (Some("query"), _) | (None, Some(InputType::Query)) => Ok(Side::Query),
        (Some("document"), _) | (None, None | Some(InputType::Document)) => Ok(Side::Document),
        (Some(other), _) => Err(ApiError::invalid(
            "prompt_name",
            format!(
                "prompt_name '{other}': model '{}' is a multi-vector model, whose texts are \
                 'query' or 'document'",
                model.id
            ),
        )),
        (None, Some(_)) => Err(ApiError::invalid(
            "input_type",
            format!(
                "model '{}' is a multi-vector model: input_type must be query or document",
                model.id
            ),
        )),
    }
}

/// `/v1/rerank` for a multi-vector model: each document's MaxSim score against the query
/// (not squashed into 0..1: a sum over the query's vectors of cosine similarities).
pub async fn rerank(model: &DeployedModel, req: RerankRequest) -> Result<RerankResponse, ApiError> {
    let documents = match req.max_tokens_per_doc {
        Some(n) => {
            let late = parts(model)?.0.clone();
            let docs = req.documents.clone();
            tokenized(model, move || {
                late.encoder(Side::Document).heads(docs, n, false)
            })
            .await?
            .map_err(|e| text_error("documents", e))?
        }
        None => req.documents.clone(),
    };
    let (query, query_tokens) =
        multi_vectors(model, vec![req.query], Side::Query, req.truncation, "query").await?;
    let (docs, doc_tokens) = multi_vectors(
        model,
        documents,
        Side::Document,
        req.truncation,
        "documents",
    )
    .await?;
    let mut results: Vec<RerankResult> = docs
        .iter()
        .enumerate()
        .map(|(index, d)| RerankResult {
            index,
            relevance_score: max_sim(&query[0], d),
            document: req.return_documents.then(|| req.documents[index].clone()),
        })
        .collect();
    // Stable: equal scores keep input order.
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    if let Some(n) = req.top_n {
        results.truncate(n);
    }
    Ok(RerankResponse {
        object: "rerank",
        results,
        model: model.id.clone(),
        usage: Usage::of(query_tokens + doc_tokens),
    })
}

/// The model's late-interaction tokenizer and pipeline, or the 400 for a model without.
fn parts(model: &DeployedModel) -> Result<(&Arc<LateEncoder>, &MultiVector), ApiError> {
    match (&model.late, &model.manifest.multi_vector) {
        (Some(late), Some(pipeline)) => Ok((late, pipeline)),
        _ => Err(model.lacks("multi_vector", "model")),
    }
}

/// One text's vectors: each kept token's state through the Dense modules, at unit length
/// when the pipeline normalises.
pub(super) fn project(
    pipeline: &MultiVector,
    dim: usize,
    states: &[f32],
    kept: &[bool],
) -> TokenMatrix {
    let width = pipeline.head.output_dim(dim);
    let mut values = Vec::with_capacity(kept.len() * width);
    for (state, _) in states
        .chunks_exact(dim.max(1))
        .zip(kept)
        .filter(|(_, k)| **k)
    {
        let mut v = pipeline.head.apply(state);
        if pipeline.normalized {
            super::normalize(&mut v);
        }
        values.extend_from_slice(&v);
    }
    TokenMatrix { dim: width, values }
}

/// MaxSim: for each query vector its best dot product with a document vector, summed.
pub fn max_sim(query: &TokenMatrix, document: &TokenMatrix) -> f32 {
    let d = query.dim.max(1);
    query
        .values
        .chunks_exact(d)
        .map(|q| {
            document
                .values
                .chunks_exact(d)
                .map(|x| q.iter().zip(x).map(|(a, b)| a * b).sum::<f32>())
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .filter(|s| s.is_finite())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_sim_sums_each_query_vectors_best_match() {
        let q = TokenMatrix {
            dim: 2,
            values: vec![1.0, 0.0, 0.0, 1.0],
        };
        let d = TokenMatrix {
            dim: 2,
            values: vec![0.6, 0.8, 1.0, 0.0, 0.0, -1.0],
        };
        // Query token 0 best matches (1, 0): 1; token 1 best matches (0.6, 0.8): 0.8.
        assert!((max_sim(&q, &d) - 1.8).abs() < 1e-6);
        let empty = TokenMatrix {
            dim: 2,
            values: vec![],
        };
        assert_eq!(max_sim(&q, &empty), 0.0);
    }
}
