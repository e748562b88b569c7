//! SPLADE embeddings (TEI's `/embed_sparse`): each input's non-zero vocabulary weights, for
//! models whose sentence-transformers pipeline ends in `SpladePooling`.

use super::embeddings::prompt;
use super::token_states::TextsRequest;
use super::{encode, ApiError, AppState, ErrorKind};
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
    if model.manifest.sparse.is_none() {
        return Err(model.lacks("sparse", "model"));
    }
    let encoder = model.encoder.clone();
    let prompt = prompt(model, req.prompt_name.as_deref(), None)?.map(str::to_string);
    let (texts, how) = (req.input, req.truncation);
    let (payloads, _) = encode(model, "input", Payload::Sparse, move || match &prompt {
        Some(p) => encoder.encode_prompted(p, &texts, true, how),
        None => encoder.encode_with(&texts, how),
    })
    .await?;
    model
        .engine
        .run(payloads)
        .await?
        .into_iter()
        .map(|out| match out {
            Output::Sparse { indices, values } => Ok(SparseVector { indices, values }),
            _ => Err(ApiError::new(
                ErrorKind::Internal,
                "the model returned something else than sparse weights",
            )),
        })
        .collect()
}
