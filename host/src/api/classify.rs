//! Sequence classification: every label's score for texts or text pairs, the computation
//! behind Infinity's `/classify`, TEI's `/predict` and the Inference API's text classification.

use super::fields::{object, opt_bool, opt_str, texts, truncation};
use super::{encode, ApiError, AppState, DeployedModel, ErrorKind, Usage};
use crate::engine::{Output, Payload};
use crate::models::manifest::Classes;
use crate::text::{TextEncoder, TextError, Tokens, Truncation};
use ember_plugin_api::ModelKind;
use serde::Serialize;
use serde_json::Value;

/// What is classified: one text, or a pair read together (as natural-language inference
/// models take a premise and a hypothesis).
#[derive(Debug, Clone, PartialEq)]
pub enum Sequence {
    /// One text.
    Text(String),
    /// Two texts, tokenized as the model's tokenizer pairs them.
    Pair(String, String),
}

/// How logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// As the model was trained: a sigmoid per label for multi-label classifiers
    /// (`problem_type: multi_label_classification`), a softmax over the labels otherwise.
    Model,
    /// A softmax over the labels.
    Softmax,
    /// A sigmoid per label.
    Sigmoid,
    /// The raw logits.
    Raw,
}

impl Activation {
    /// The Inference API's `function_to_apply` (`softmax`, `sigmoid`, `none`), naming `param`.
    pub fn parse(name: &str, param: &str) -> Result<Activation, ApiError> {
        match name {
            "softmax" => Ok(Activation::Softmax),
            "sigmoid" => Ok(Activation::Sigmoid),
            "none" => Ok(Activation::Raw),
            other => Err(ApiError::invalid(
                param,
                format!("{param} must be one of softmax, sigmoid, none; got '{other}'"),
            )),
        }
    }

    /// The scores of one input's logits.
    pub fn apply(self, logits: &[f32], multi_label: bool) -> Vec<f32> {
        let how = match self {
            Activation::Model if multi_label => Activation::Sigmoid,
            Activation::Model => Activation::Softmax,
            other => other,
        };
        match how {
            Activation::Sigmoid => logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
            Activation::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                exp.iter().map(|e| e / sum).collect()
            }
            _ => logits.to_vec(),
        }
    }
}

/// One label's score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    /// The label, from the model's `id2label`.
    pub label: String,
    /// Its score (probability, or logit with raw scores).
    pub score: f32,
}

/// A validated classification request.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyRequest {
    /// Requested model, if named.
    pub model: Option<String>,
    /// What to classify, in order.
    pub inputs: Vec<Sequence>,
    /// How logits become scores.
    pub activation: Activation,
    /// What happens to inputs longer than the model reads.
    pub truncation: Truncation,
}

impl ClassifyRequest {
    /// Infinity's `/classify` body: `input` (a string or a list of strings), `model`,
    /// `raw_scores`, and the `truncate` / `truncation_direction` every route takes.
    pub fn parse(body: &Value, max_items: usize) -> Result<Self, ApiError> {
        let body = object(body)?;
        let raw = opt_bool(body, "raw_scores")?.unwrap_or(false);
        Ok(ClassifyRequest {
            model: opt_str(body, "model")?,
            inputs: texts(body, "input", max_items)?
                .into_iter()
                .map(Sequence::Text)
                .collect(),
            activation: if raw {
                Activation::Raw
            } else {
                Activation::Model
            },
            truncation: truncation(body)?,
        })
    }
}

/// Each input's scores, highest first, from the model that computed them.
pub struct Classified<'a> {
    /// The model that answered.
    pub model: &'a DeployedModel,
    /// Per input, every label with its score, highest first (ties in label order).
    pub predictions: Vec<Vec<Prediction>>,
    /// Tokens of all inputs.
    pub tokens: usize,
}

/// Infinity's `/classify` answer.
#[derive(Debug, Serialize)]
pub struct ClassifyResponse {
    /// Always `classify`.
    pub object: &'static str,
    /// Per input, every label with its score, highest first.
    pub data: Vec<Vec<Prediction>>,
    /// The model that answered.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// Tokenizes each sequence (blocking): a classifier's pairs with the longer text truncated
/// first, a reranker's as it reads query–document pairs.
fn tokenize(
    encoder: &TextEncoder,
    inputs: &[Sequence],
    how: Truncation,
    reranker: bool,
) -> Result<Vec<Tokens>, TextError> {
    let at = |index: usize, e: TextError| match e {
        TextError::Encode { reason, .. } => TextError::Encode { index, reason },
        TextError::TooLong { max, len, .. } => TextError::TooLong { index, max, len },
        other => other,
    };
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| match input {
            Sequence::Pair(a, b) if !reranker => encoder.encode_pair(a, b, how, i),
            Sequence::Pair(a, b) => encoder
                .encode_pairs(a, std::slice::from_ref(b), how)
                .map_err(|e| at(i, e))
                .map(|mut one| one.remove(0)),
            Sequence::Text(t) => encoder
                .encode_with(std::slice::from_ref(t), how)
                .map_err(|e| at(i, e))
                .map(|mut one| one.remove(0)),
        })
        .collect()
}

/// A reranker's one label, as TEI names it, scored by a sigmoid.
fn reranker_classes() -> Classes {
    Classes {
        labels: vec!["LABEL_0".into()],
        multi_label: true,
    }
}

/// Classifies a request's inputs with the model it names (a classifier, or as TEI's
/// `/predict` allows, a reranker with its one label); an input the model cannot take is
/// blamed on `param`.
pub async fn predictions<'a>(
    state: &'a AppState,
    req: ClassifyRequest,
    param: &str,
) -> Result<Classified<'a>, ApiError> {
    let model = state.model(req.model.as_deref())?;
    let reranker = model.manifest.abi.kind == ModelKind::Rerank;
    let classes = match (&model.manifest.classes, reranker) {
        (Some(classes), false) => classes.clone(),
        (None, true) => reranker_classes(),
        _ => return Err(model.lacks("classify", "model")),
    };
    let encoder = model.encoder.clone();
    let (inputs, how) = (req.inputs, req.truncation);
    let payload: fn(Tokens) -> Payload = if reranker {
        Payload::Pair
    } else {
        Payload::Classify
    };
    let (payloads, count) = encode(model, param, payload, move || {
        tokenize(&encoder, &inputs, how, reranker)
    })
    .await?;
    let outputs = model.engine.run(payloads).await?;
    let mut predictions = Vec::with_capacity(outputs.len());
    for out in outputs {
        let logits = match out {
            Output::Logits(logits) => logits,
            Output::Score(logit) => vec![logit],
            Output::Vector(_) | Output::States { .. } | Output::Sparse { .. } => {
                return Err(ApiError::new(
                    ErrorKind::Internal,
                    "the model returned vectors where logits were expected",
                ))
            }
        };
        if logits.len() != classes.labels.len() {
            return Err(ApiError::new(
                ErrorKind::Internal,
                format!(
                    "the model returned {} logits for its {} labels",
                    logits.len(),
                    classes.labels.len()
                ),
            ));
        }
        let scores = req.activation.apply(&logits, classes.multi_label);
        let mut row: Vec<Prediction> = classes
            .labels
            .iter()
            .zip(scores)
            .map(|(label, score)| Prediction {
                label: label.clone(),
                score,
            })
            .collect();
        // Stable: equal scores keep label order.
        row.sort_by(|a, b| b.score.total_cmp(&a.score));
        predictions.push(row);
    }
    Ok(Classified {
        model,
        predictions,
        tokens: count,
    })
}

/// Answers Infinity's `/classify` (classifiers only, as Infinity's capabilities say).
pub async fn classify(
    state: &AppState,
    req: ClassifyRequest,
) -> Result<ClassifyResponse, ApiError> {
    let model = state.model(req.model.as_deref())?;
    if model.manifest.abi.kind != ModelKind::Classify {
        return Err(model.lacks("classify", "model"));
    }
    let done = predictions(state, req, "input").await?;
    Ok(ClassifyResponse {
        object: "classify",
        data: done.predictions,
        model: done.model.id.clone(),
        usage: Usage::of(done.tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn activations_match_transformers() {
        // torch.softmax(torch.tensor([1., 2., 3.]), 0) and torch.sigmoid of the same.
        let soft = Activation::Model.apply(&[1.0, 2.0, 3.0], false);
        for (got, want) in soft.iter().zip([0.090_030_57, 0.244_728_48, 0.665_240_94]) {
            assert!((got - want).abs() < 1e-6, "{soft:?}");
        }
        let sig = Activation::Model.apply(&[1.0, 2.0, 3.0], true);
        for (got, want) in sig.iter().zip([0.731_058_6, 0.880_797_1, 0.952_574_1]) {
            assert!((got - want).abs() < 1e-6, "{sig:?}");
        }
        assert_eq!(Activation::Raw.apply(&[1.5, -2.0], true), [1.5, -2.0]);
        // Large logits do not overflow.
        let big = Activation::Softmax.apply(&[1000.0, 1000.0], false);
        assert_eq!(big, [0.5, 0.5]);
    }

    #[test]
    fn parse_names_fields() {
        let r =
            ClassifyRequest::parse(&json!({"input": ["a", "b"], "raw_scores": true}), 4).unwrap();
        assert_eq!(
            r.inputs,
            [Sequence::Text("a".into()), Sequence::Text("b".into())]
        );
        assert_eq!(r.activation, Activation::Raw);
        let e = ClassifyRequest::parse(&json!({"input": ["a", 3]}), 4).unwrap_err();
        assert!(e.message.contains("input[1]"), "{}", e.message);
        let e = ClassifyRequest::parse(&json!({"inputs": ["a"]}), 4).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = ClassifyRequest::parse(&json!({"input": "a", "raw_scores": 1}), 4).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("raw_scores"));
        let e = Activation::parse("relu", "parameters.function_to_apply").unwrap_err();
        assert!(
            e.message.contains("softmax, sigmoid, none"),
            "{}",
            e.message
        );
    }
}
