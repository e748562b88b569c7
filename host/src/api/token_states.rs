//! Per-token states of texts (TEI's `/embed_all`): each input's vector of every token, before
//! pooling, for models whose plugin offers them ([`Outputs::TOKEN_STATES`]).

use super::embeddings::{prompt, InputType};
use super::{encode, ApiError, AppState, DeployedModel, ErrorKind};
use crate::engine::{Output, Payload};
use crate::text::{Tokens, Truncation};
use ember_plugin_api::Outputs;
use serde::ser::{Serialize, SerializeSeq, Serializer};

/// Most state values (tokens × width) one request may ask for: 4 Mi floats, 16 MiB in memory
/// and some 40 MB of JSON, whatever the model, so that no request can make the server hold
/// gigabytes of states (2,048 inputs of 512 tokens of 1,024 would be 4 GiB).
pub const MAX_STATE_VALUES: usize = 4 << 20;

/// Refuses, before the model runs, a request whose `tokens` would make the model hold more
/// token states than one request may: [`MAX_STATE_VALUES`], or one input of the model's
/// longest, whichever is more (so that a single full-length input always fits).
pub(super) fn state_budget(
    model: &DeployedModel,
    tokens: usize,
    param: &str,
) -> Result<(), ApiError> {
    let width = (model.manifest.abi.hidden_size as usize).max(model.dim);
    let longest = model.manifest.abi.max_input_tokens as usize * width;
    let budget = MAX_STATE_VALUES.max(longest);
    if tokens * width <= budget {
        return Ok(());
    }
    Err(ApiError {
        kind: ErrorKind::TooLarge,
        ..ApiError::invalid(
            param,
            format!(
                "the token states of these inputs hold {} values ({tokens} tokens of \
                 {width}), over the {budget} one request may compute; send fewer or shorter \
                 inputs",
                tokens * width
            ),
        )
    })
}

/// The states of one item's output, or the internal error for anything else.
pub(super) fn states_of(out: Output) -> Result<(usize, Vec<f32>), ApiError> {
    match out {
        Output::States { dim, values } => Ok((dim, values)),
        _ => Err(ApiError::new(
            ErrorKind::Internal,
            "the model returned something else than token states",
        )),
    }
}

/// A validated request for an output of each text (token states, sparse weights).
#[derive(Debug, Clone)]
pub struct TextsRequest {
    /// The model asked for, or the default.
    pub model: Option<String>,
    /// The texts.
    pub input: Vec<String>,
    /// A prompt the model defines, prepended to each text (its tokens are answered too).
    pub prompt_name: Option<String>,
    /// What the texts are, for the model's prompt when none is named.
    pub input_type: Option<InputType>,
    /// What to do with a text longer than the model takes.
    pub truncation: Truncation,
}

impl TextsRequest {
    /// The texts tokenized for `model` (the prompt prepended; every token, the prompt's
    /// included, is read, as an answer per token needs), as `payload`s, and their tokens.
    pub(super) async fn tokenized(
        self,
        model: &DeployedModel,
        payload: fn(Tokens) -> Payload,
    ) -> Result<(Vec<Payload>, usize), ApiError> {
        let encoder = model.encoder.clone();
        let prompt =
            prompt(model, self.prompt_name.as_deref(), self.input_type)?.map(str::to_string);
        let (texts, how) = (self.input, self.truncation);
        encode(model, "input", payload, move || match &prompt {
            Some(p) => encoder.encode_prompted(p, &texts, true, how),
            None => encoder.encode_with(&texts, how),
        })
        .await
    }
}

/// One text's token states, `[tokens][dim]`, serialised as a list of lists.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMatrix {
    /// Width of each state.
    pub dim: usize,
    /// The states, token after token.
    pub values: Vec<f32>,
}

impl TokenMatrix {
    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }
}

impl Serialize for TokenMatrix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let rows = self.values.chunks(self.dim.max(1));
        let mut seq = serializer.serialize_seq(Some(rows.len()))?;
        for row in rows {
            seq.serialize_element(row)?;
        }
        seq.end()
    }
}

/// Each text's token states in input order: every token the model reads, special tokens and
/// the prompt included, not normalised.
pub async fn token_states(
    state: &AppState,
    req: TextsRequest,
) -> Result<Vec<TokenMatrix>, ApiError> {
    let model = state.model(req.model.as_deref())?;
    if !model.outputs.has(Outputs::TOKEN_STATES) {
        return Err(model.lacks("token_states", "model"));
    }
    let (payloads, tokens) = req.tokenized(model, Payload::States).await?;
    state_budget(model, tokens, "input")?;
    model
        .engine
        .run(payloads)
        .await?
        .into_iter()
        .map(|out| states_of(out).map(|(dim, values)| TokenMatrix { dim, values }))
        .collect()
}
