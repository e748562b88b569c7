//! TEI's `/predict` and the root route's text classification: classifier and reranker
//! predictions in TEI's and the Inference API's shapes.

use super::{classifies, model_for, reranks};
use crate::api::fields::{object, opt_bool, opt_positive, opt_str, texts, truncation, type_name};
use crate::api::{self, ApiError, AppState};
use crate::api::{Activation, ClassifyRequest, Prediction, Sequence};
use serde::Serialize;
use serde_json::{Map, Value};

/// TEI's `inputs` for `/predict`: a string; a list of one string, or of two (a pair); or a
/// batch, a list of such lists. Also whether it was a single input (answered unnested).
pub(super) fn predict_inputs(
    body: &Map<String, Value>,
    max_items: usize,
) -> Result<(Vec<Sequence>, bool), ApiError> {
    let shape = "inputs must be a string, a pair of strings [string, string], or a batch of \
                 strings and pairs [[string], [string, string], ...]";
    let sequence = |v: &Value, at: &str| -> Result<Sequence, ApiError> {
        let Value::Array(parts) = v else {
            return match v {
                Value::String(s) => Ok(Sequence::Text(s.clone())),
                other => Err(ApiError::invalid(
                    "inputs",
                    format!(
                        "{at} must be a string or a list of strings, got {}",
                        type_name(other)
                    ),
                )),
            };
        };
        let strings: Option<Vec<&str>> = parts.iter().map(Value::as_str).collect();
        match strings.as_deref() {
            Some([one]) => Ok(Sequence::Text(one.to_string())),
            Some([a, b]) => Ok(Sequence::Pair(a.to_string(), b.to_string())),
            Some(more) => Err(ApiError::invalid(
                "inputs",
                format!(
                    "{at} has {} strings; a sequence is one string or a pair",
                    more.len()
                ),
            )),
            None => Err(ApiError::invalid("inputs", format!("{at}: {shape}"))),
        }
    };
    match body.get("inputs") {
        None | Some(Value::Null) => Err(ApiError::invalid(
            "inputs",
            format!("inputs is required: {shape}"),
        )),
        Some(Value::String(s)) => Ok((vec![Sequence::Text(s.clone())], true)),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid("inputs", "inputs must not be empty"))
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok((
            vec![sequence(&Value::Array(items.clone()), "inputs")?],
            true,
        )),
        Some(Value::Array(items)) => {
            if items.len() > max_items {
                return Err(api::fields::too_many("inputs", items.len(), max_items));
            }
            let batch = items
                .iter()
                .enumerate()
                .map(|(i, v)| sequence(v, &format!("inputs[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((batch, false))
        }
        Some(other) => Err(ApiError::invalid(
            "inputs",
            format!("{shape}; got {}", type_name(other)),
        )),
    }
}

/// Predictions of one input (`[{score, label}, ...]`, best first), or of a batch.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Predicted {
    /// A single input's.
    One(Vec<Prediction>),
    /// One list per input of a batch.
    Batch(Vec<Vec<Prediction>>),
}

/// `POST /predict` (classifiers, and rerankers as TEI allows): `inputs` (a text, a pair, or a
/// batch of them), `raw_scores`, `truncate`,
/// `truncation_direction`; answers `[{score, label}]` best first, or a list of them for a
/// batch.
pub async fn predict(state: &AppState, value: &Value) -> Result<Predicted, ApiError> {
    let body = object(value)?;
    let model = model_for(state, body, |m| classifies(m) || reranks(m))?;
    let (inputs, single) = predict_inputs(body, state.max_items)?;
    let raw = opt_bool(body, "raw_scores")?.unwrap_or(false);
    let req = ClassifyRequest {
        model: Some(model.id.clone()),
        inputs,
        activation: if raw {
            Activation::Raw
        } else {
            Activation::Model
        },
        truncation: truncation(body)?,
    };
    let mut rows = api::predictions(state, req, "inputs").await?.predictions;
    Ok(match rows.pop() {
        Some(row) if single => Predicted::One(row),
        last => Predicted::Batch(rows.into_iter().chain(last).collect()),
    })
}

/// The Inference API's text classification, as `huggingface_hub`'s `InferenceClient` asks it
/// of `POST /`: `inputs` (a text or a list) and `parameters` (`function_to_apply`, `top_k`);
/// answers `[[{label, score}, ...]]`, one list per input.
pub(super) async fn text_classification(
    state: &AppState,
    body: &Map<String, Value>,
) -> Result<Predicted, ApiError> {
    let model = model_for(state, body, classifies)?;
    let parameters = match body.get("parameters") {
        Some(Value::Object(p)) => p,
        _ => {
            return Err(ApiError::invalid(
                "parameters",
                "parameters must be an object",
            ))
        }
    };
    let function = opt_str(parameters, "function_to_apply")
        .map_err(|e| e.renamed("function_to_apply", "parameters.function_to_apply"))?;
    let activation = match function {
        None => Activation::Model,
        Some(f) => Activation::parse(&f, "parameters.function_to_apply")?,
    };
    let top_k =
        opt_positive(parameters, "top_k").map_err(|e| e.renamed("top_k", "parameters.top_k"))?;
    let req = ClassifyRequest {
        model: Some(model.id.clone()),
        inputs: texts(body, "inputs", state.max_items)?
            .into_iter()
            .map(Sequence::Text)
            .collect(),
        activation,
        truncation: truncation(body)?,
    };
    let mut rows = api::predictions(state, req, "inputs").await?.predictions;
    if let Some(k) = top_k {
        rows.iter_mut().for_each(|row| row.truncate(k));
    }
    Ok(Predicted::Batch(rows))
}
