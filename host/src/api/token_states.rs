//! Per-token states of texts (TEI's `/embed_all`): each input's vector of every token, before
//! pooling, for models whose plugin offers them ([`Outputs::TOKEN_STATES`]).

use super::embeddings::prompt;
use super::{encode, ApiError, AppState, ErrorKind};
use crate::engine::{Output, Payload};
use crate::text::Truncation;
use ember_plugin_api::Outputs;

/// A validated request for token states.
#[derive(Debug, Clone)]
pub struct TokenStatesRequest {
    /// The model asked for, or the default.
    pub model: Option<String>,
    /// The texts.
    pub input: Vec<String>,
    /// A prompt the model defines, prepended to each text (its tokens are answered too).
    pub prompt_name: Option<String>,
    /// What to do with a text longer than the model takes.
    pub truncation: Truncation,
}

/// Each text's token states, `[tokens][dim]`, in input order: every token the model reads,
/// special tokens and the prompt included, not normalised.
pub async fn token_states(
    state: &AppState,
    req: TokenStatesRequest,
) -> Result<Vec<Vec<Vec<f32>>>, ApiError> {
    let model = state.model(req.model.as_deref())?;
    if !model.outputs.has(Outputs::TOKEN_STATES) {
        return Err(model.lacks("token_states", "model"));
    }
    let encoder = model.encoder.clone();
    let prompt = prompt(model, req.prompt_name.as_deref(), None)?.map(str::to_string);
    let (texts, how) = (req.input, req.truncation);
    let (payloads, _) = encode(model, "input", Payload::States, move || match &prompt {
        // Every token is answered, so the prompt's are read like the text's.
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
            Output::States { dim, values } => {
                Ok(values.chunks(dim.max(1)).map(<[f32]>::to_vec).collect())
            }
            _ => Err(ApiError::new(
                ErrorKind::Internal,
                "the model returned something else than token states",
            )),
        })
        .collect()
}
