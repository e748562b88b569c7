//! Sparse embeddings (TEI's `/embed_sparse`): each input's non-zero vocabulary weights, for
//! models whose sentence-transformers pipeline ends in `SpladePooling` and for bge-m3's
//! lexical head.

use super::embeddings::{prompt, Finish};
use super::hybrid::{from_states, Wants};
use super::token_states::TextsRequest;
use super::{ApiError, AppState, ErrorKind};
use crate::engine::{Output, Payload};
use serde::Serialize;

/// One text's sparse embedding: ascending token ids and their weights (all positive).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseVector {
    /// Token ids of the model's vocabulary.
    pub indices: Vec<u32>,
    /// The weight of each id.
    pub values: Vec<f32>,
}

/// Each text's sparse embedding, in input order.
pub async fn sparse_embeddings(
    state: &AppState,
    req: TextsRequest,
) -> Result<Vec<SparseVector>, ApiError> {
    let model = state.model(req.model.as_deref())?;
    if model.manifest.lexical.is_some() {
        let prompt = prompt(model, req.prompt_name.as_deref(), None)?.map(str::to_string);
        let wants = Wants {
            sparse: true,
            ..Wants::default()
        };
        let finish = Finish {
            normalize: false,
            dimensions: None,
        };
        let (computed, _) =
            from_states(model, req.input, prompt, req.truncation, wants, finish).await?;
        return Ok(computed.into_iter().filter_map(|c| c.sparse).collect());
    }
    Ok(splade(state, req).await?.0)
}

/// Each text's SPLADE weights, in input order, and the tokens read.
pub(super) async fn splade(
    state: &AppState,
    req: TextsRequest,
) -> Result<(Vec<SparseVector>, usize), ApiError> {
    let model = state.model(req.model.as_deref())?;
    if model.manifest.sparse.is_none() {
        return Err(model.lacks("sparse", "model"));
    }
    let (payloads, tokens) = req.tokenized(model, Payload::Sparse).await?;
    let vectors: Vec<SparseVector> = model
        .engine
        .run(payloads)
        .await?
        .into_iter()
        .map(|out| match out {
            Output::Sparse { indices, values } => Ok(top(
                SparseVector { indices, values },
                model.manifest.sparse_top_k,
            )),
            _ => Err(ApiError::new(
                ErrorKind::Internal,
                "the model returned something else than sparse weights",
            )),
        })
        .collect::<Result<_, _>>()?;
    let entries: usize = vectors.iter().map(|v| v.indices.len()).sum();
    if entries > MAX_SPARSE_ENTRIES {
        return Err(ApiError {
            kind: ErrorKind::TooLarge,
            ..ApiError::invalid(
                "input",
                format!(
                    "the sparse weights of these inputs hold {entries} entries, over the \
                     {MAX_SPARSE_ENTRIES} one request may return; send fewer inputs"
                ),
            )
        });
    }
    Ok((vectors, tokens))
}

/// Most entries one answer may hold (4 Mi: some 60 MB of JSON). Trained SPLADE models keep a
/// few hundred entries per text; a vector is at most the vocabulary, so what a request holds
/// before this check is bounded by its inputs times the vocabulary.
pub const MAX_SPARSE_ENTRIES: usize = 4 << 20;

/// `v` with only its `k` largest weights (`max_active_dims`), ids still ascending.
fn top(v: SparseVector, k: Option<usize>) -> SparseVector {
    let Some(k) = k.filter(|k| *k < v.indices.len()) else {
        return v;
    };
    let mut pairs: Vec<(u32, f32)> = v.indices.into_iter().zip(v.values).collect();
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    pairs.truncate(k);
    pairs.sort_by_key(|p| p.0);
    let (indices, values) = pairs.into_iter().unzip();
    SparseVector { indices, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_active_dims_keeps_the_largest_weights_in_id_order() {
        let v = SparseVector {
            indices: vec![2, 5, 7, 9],
            values: vec![0.1, 0.9, 0.5, 0.7],
        };
        let kept = top(v.clone(), Some(2));
        assert_eq!(kept.indices, [5, 9]);
        assert_eq!(kept.values, [0.9, 0.7]);
        assert_eq!(top(v.clone(), None), v);
        assert_eq!(top(v.clone(), Some(10)), v);
    }
}
