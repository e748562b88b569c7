//! Multi-vector (late-interaction, ColBERT) embeddings: one unit vector per kept token of each
//! text, made by the host from the model's token states, and MaxSim scores between a query's
//! vectors and each document's.

use super::embeddings::{
    Embedding, EmbeddingData, EmbeddingsRequest, EmbeddingsResponse, InputType, Writer,
};
use super::hybrid::float_or_base64;
use super::rerank::{RerankRequest, RerankResponse, RerankResult};
use super::token_states::{state_budget, states_of, TokenMatrix};
use super::{text_error, tokenized, ApiError, DeployedModel};
use crate::engine::Payload;
use crate::models::multi_vector::MultiVector;
use crate::text::{LateEncoder, Side, TextError, Truncation};
use std::sync::Arc;

/// Each group's texts' vectors (one group per side of a request: texts, their side, the
/// field they came in), in input order, from one pass through the model; and the real
/// tokens read (the query expansion's filler left out).
pub async fn multi_vectors(
    model: &DeployedModel,
    groups: Vec<(Vec<String>, Side, &'static str)>,
    truncation: Truncation,
) -> Result<(Vec<Vec<TokenMatrix>>, usize), ApiError> {
    let (late, pipeline) = parts(model)?;
    if truncation == Truncation::Left {
        return Err(ApiError::invalid(
            "truncation_direction",
            format!(
                "model '{}' is a multi-vector model, whose texts begin with their query or \
                 document marker: cutting their start would cut it off; they are truncated at \
                 their end",
                model.id
            ),
        ));
    }
    let encoder = late.clone();
    let sides: Vec<(Side, &'static str)> = groups.iter().map(|g| (g.1, g.2)).collect();
    // Each group's tokenizer error blames its own field.
    let encoded = tokenized(model, move || {
        Ok(groups
            .into_iter()
            .map(|(texts, side, param)| {
                let tokens = encoder
                    .encode(side, &texts, truncation)
                    .map_err(|e| (param, e))?;
                let kept: Vec<Vec<bool>> =
                    tokens.iter().map(|(t, _)| encoder.kept(side, t)).collect();
                Ok((tokens, kept))
            })
            .collect::<Result<Vec<_>, (&str, TextError)>>())
    })
    .await?
    .map_err(|e| text_error("input", e))?
    .map_err(|(param, e)| text_error(param, e))?;
    let (mut payloads, mut kept, mut sizes, mut real, mut read) =
        (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    for (tokens, k) in encoded {
        sizes.push(tokens.len());
        kept.extend(k);
        for (t, n) in tokens {
            real += n;
            read += t.len();
            payloads.push(Payload::States(t));
        }
    }
    let param = sides.last().map_or("input", |s| s.1);
    state_budget(model, read, param)?;
    let outputs = model.engine.run(payloads).await?;
    let pipeline = pipeline.clone();
    let matrices = tokio::task::spawn_blocking(move || {
        outputs
            .into_iter()
            .zip(kept)
            .map(|(out, kept)| {
                states_of(out).map(|(dim, values)| project(&pipeline, dim, &values, &kept))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("projecting token vectors failed: {e}")))??;
    let mut matrices = matrices.into_iter();
    let groups = sizes
        .into_iter()
        .map(|n| matrices.by_ref().take(n).collect())
        .collect();
    Ok((groups, real))
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
    let base64 = float_or_base64(req.encoding_format)?;
    let side = side_of(model, req.prompt_name.as_deref(), req.input_type)?;
    let (mut groups, tokens) =
        multi_vectors(model, vec![(req.input, side, "input")], req.truncation).await?;
    let data = groups
        .remove(0)
        .into_iter()
        .enumerate()
        .map(|(index, m)| EmbeddingData::of(index, written(m, base64)))
        .collect();
    Ok(EmbeddingsResponse::of(model, data, tokens))
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
    let groups = vec![
        (vec![req.query], Side::Query, "query"),
        (documents, Side::Document, "documents"),
    ];
    let (mut vectors, tokens) = multi_vectors(model, groups, req.truncation).await?;
    let docs = vectors.pop().unwrap_or_default();
    let query = vectors
        .pop()
        .and_then(|q| q.into_iter().next())
        .ok_or_else(|| ApiError::internal("the query has no vectors"))?;
    // MeanMaxSim divides by the query's vectors.
    let scale = match parts(model)?.1.mean {
        true => 1.0 / query.rows().max(1) as f32,
        false => 1.0,
    };
    // A few hundred million multiply-adds for the longest requests: off the async threads.
    let scores = tokio::task::spawn_blocking(move || {
        docs.iter()
            .map(|d| max_sim(&query, d) * scale)
            .collect::<Vec<f32>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("scoring failed: {e}")))?;
    let results: Vec<RerankResult> = scores
        .into_iter()
        .enumerate()
        .map(|(index, relevance_score)| RerankResult {
            index,
            relevance_score,
            document: req.return_documents.then(|| req.documents[index].clone()),
        })
        .collect();
    Ok(RerankResponse::ranked(
        results, req.top_n, &model.id, tokens,
    ))
}

/// A text's vectors as the response carries them: a list of lists, or base64.
pub(super) fn written(m: TokenMatrix, base64: bool) -> Embedding {
    match base64 {
        true => Writer::Base64.write(m.values),
        false => Embedding::Vectors(m),
    }
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
