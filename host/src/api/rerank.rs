//! `/v1/rerank`: scores of documents against a query, in the Cohere / Infinity shape.

use super::fields::{
    object, one_of, opt_bool, opt_positive, opt_str, too_many, truncation, type_name,
};

use super::{encode, ApiError, AppState, ErrorKind, Usage};
use crate::engine::{Output, Payload};
use crate::text::Truncation;
use ember_plugin_api::ModelKind;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// A validated rerank request.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankRequest {
    /// Requested model, if named.
    pub model: Option<String>,
    /// The query every document is scored against.
    pub query: String,
    /// Documents, in input order.
    pub documents: Vec<String>,
    /// Keep only the best `top_n` results.
    pub top_n: Option<usize>,
    /// Echo each document in its result.
    pub return_documents: bool,
    /// Report logits instead of their sigmoid.
    pub raw_scores: bool,
    /// What happens to pairs longer than the model reads.
    pub truncation: Truncation,
    /// Score only each document's first this many tokens (Cohere's `max_tokens_per_doc`).
    pub max_tokens_per_doc: Option<usize>,
}

/// The required, non-empty `query` string.
pub fn query(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => Ok(q.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid("query", "query must not be empty")),
        None | Some(Value::Null) => Err(ApiError::invalid("query", "query is required: a string")),
        Some(other) => Err(ApiError::invalid(
            "query",
            format!("query must be a string, got {}", type_name(other)),
        )),
    }
}

impl RerankRequest {
    /// Validates a JSON body, naming the field (and item index) of the first problem.
    pub fn parse(body: &Value, max_items: usize) -> Result<Self, ApiError> {
        let body = object(body)?;
        let query = query(body)?;
        let (key, docs) = one_of(body, &["documents", "docs"])?.ok_or_else(|| {
            ApiError::invalid(
                "documents",
                "documents is required: a list of strings to score against the query",
            )
        })?;
        let Value::Array(items) = docs else {
            return Err(ApiError::invalid(
                key,
                format!("{key} must be a list of strings, got {}", type_name(docs)),
            ));
        };
        if items.is_empty() {
            return Err(ApiError::invalid(key, format!("{key} must not be empty")));
        }
        if items.len() > max_items {
            return Err(too_many(key, items.len(), max_items));
        }
        let mut documents = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            // Cohere's clients may send {"text": ...} objects.
            let text = match item {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("text").and_then(Value::as_str).map(String::from),
                _ => None,
            };
            documents.push(text.ok_or_else(|| {
                ApiError::invalid(
                    key,
                    format!(
                        "{key}[{i}] must be a string (or an object with a \"text\" string), \
                         got {}",
                        type_name(item)
                    ),
                )
            })?);
        }
        let return_documents = match one_of(body, &["return_documents", "return_docs"])? {
            None => false,
            Some((k, _)) => opt_bool(body, k)?.unwrap_or(false),
        };
        Ok(RerankRequest {
            model: opt_str(body, "model")?,
            query,
            documents,
            top_n: opt_positive(body, "top_n")?,
            return_documents,
            raw_scores: opt_bool(body, "raw_scores")?.unwrap_or(false),
            truncation: truncation(body)?,
            max_tokens_per_doc: opt_positive(body, "max_tokens_per_doc")?,
        })
    }
}

/// One scored document.
#[derive(Debug, Serialize, PartialEq)]
pub struct RerankResult {
    /// Position of the document in the request.
    pub index: usize,
    /// Sigmoid of the model's logit (or the logit itself with `raw_scores`).
    pub relevance_score: f32,
    /// The document, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// The rerank response: results sorted by score, highest first.
#[derive(Debug, Serialize)]
pub struct RerankResponse {
    /// Always `rerank`.
    pub object: &'static str,
    /// Scored documents, best first, at most `top_n`.
    pub results: Vec<RerankResult>,
    /// The model that answered.
    pub model: String,
    /// Tokens of all query–document pairs.
    pub usage: Usage,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Scores the documents of a validated request against its query.
pub async fn rerank(state: &AppState, req: RerankRequest) -> Result<RerankResponse, ApiError> {
    let model = state.model(req.model.as_deref())?;
    if model.manifest.is_multi_vector() {
        return super::multi_vector::rerank(model, req).await;
    }
    if model.manifest.abi.kind != ModelKind::Rerank {
        return Err(model.lacks("rerank", "model"));
    }
    let encoder = model.encoder.clone();
    let query = req.query;
    let documents = Arc::new(req.documents);
    let docs = documents.clone();
    let how = req.truncation;
    let per_doc = req.max_tokens_per_doc;
    let (payloads, prompt_tokens) =
        encode(model, "documents", Payload::Pair, move || match per_doc {
            Some(n) => encoder
                .heads(docs.to_vec(), n, false)
                .and_then(|heads| encoder.encode_pairs(&query, &heads, how)),
            None => encoder.encode_pairs(&query, &docs, how),
        })
        .await?;
    let outputs = model.engine.run(payloads).await?;
    let mut results = Vec::with_capacity(outputs.len());
    for ((index, out), doc) in outputs.into_iter().enumerate().zip(documents.iter()) {
        let Output::Score(logit) = out else {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "the model returned a vector where a score was expected",
            ));
        };
        results.push(RerankResult {
            index,
            relevance_score: if req.raw_scores {
                logit
            } else {
                sigmoid(logit)
            },
            document: req.return_documents.then(|| doc.clone()),
        });
    }
    Ok(RerankResponse::ranked(
        results,
        req.top_n,
        &model.id,
        prompt_tokens,
    ))
}

impl RerankResponse {
    /// The answer of `model` with `results` best first (equal scores in input order), at most
    /// `top_n` of them, having read `tokens`.
    pub fn ranked(
        mut results: Vec<RerankResult>,
        top_n: Option<usize>,
        model: &str,
        tokens: usize,
    ) -> RerankResponse {
        results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
        if let Some(n) = top_n {
            results.truncate(n);
        }
        RerankResponse {
            object: "rerank",
            results,
            model: model.to_string(),
            usage: Usage::of(tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RerankRequest, ApiError> {
        RerankRequest::parse(&v, 3)
    }

    #[test]
    fn accepts_both_spellings() {
        let r = parse(
            json!({"query": "q", "docs": ["a", {"text": "b"}], "return_docs": true,
            "top_n": 1, "raw_scores": true}),
        )
        .unwrap();
        assert_eq!(r.documents, vec!["a", "b"]);
        assert!(r.return_documents && r.raw_scores);
        assert_eq!(r.top_n, Some(1));
        let r = parse(json!({"query": "q", "documents": ["a"]})).unwrap();
        assert!(!r.return_documents && !r.raw_scores && r.top_n.is_none());
    }

    #[test]
    fn errors_name_field_and_index() {
        let e = parse(json!({"documents": ["a"]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("query"));
        let e = parse(json!({"query": "q"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("documents"));
        let e = parse(json!({"query": "q", "docs": ["a", 7]})).unwrap_err();
        assert!(e.message.contains("docs[1]"), "{}", e.message);
        let e = parse(json!({"query": "q", "documents": ["a"], "docs": ["b"]})).unwrap_err();
        assert!(e.message.contains("only one"), "{}", e.message);
        let e = parse(json!({"query": "q", "documents": ["a"], "top_n": 0})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_n"));
        let e = parse(json!({"query": "q", "documents": ["a", "b", "c", "d"]})).unwrap_err();
        assert_eq!(e.status(), 413);
        let e = parse(json!({"query": "q", "documents": []})).unwrap_err();
        assert!(e.message.contains("empty"));
        let e = parse(json!({"query": "q", "documents": ["a"], "return_documents": "yes"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("return_documents"));
    }

    #[test]
    fn sigmoid_is_the_logistic_function() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797).abs() < 1e-6);
    }
}
