//! Cohere's v2 API: `POST /v2/embed` and `POST /v2/rerank` with Cohere's request and response
//! shapes and its error shape (`{"message": ...}`), as `cohere.ClientV2(base_url=...)` calls
//! them. The local RunPod API lives one segment deeper (`/v2/{endpoint_id}/...`), so the two
//! never collide.

use crate::api::fields::{object, opt_positive, opt_str, texts, truncation, type_name};
use crate::api::{self, ApiError, AppState, EmbeddingsRequest, EncodingFormat, RerankRequest};
use crate::api::{Embedding, InputType, Writer};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The `meta` of a Cohere answer: API version 2 and the tokens read.
#[derive(Debug, Serialize)]
pub struct Meta {
    api_version: Value,
    billed_units: Value,
}

impl Meta {
    fn of(tokens: usize) -> Meta {
        Meta {
            api_version: json!({"version": "2"}),
            billed_units: json!({"input_tokens": tokens}),
        }
    }
}

/// The `/v2/embed` answer.
#[derive(Debug, Serialize)]
pub struct Embedded {
    id: String,
    response_type: &'static str,
    /// The vectors, per requested type.
    embeddings: BTreeMap<String, Vec<Embedding>>,
    meta: Meta,
    /// The texts embedded (not for images).
    #[serde(skip_serializing_if = "Option::is_none")]
    texts: Option<Vec<String>>,
}

/// One document of the `/v2/rerank` answer.
#[derive(Debug, Serialize)]
pub struct Ranked {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Document>,
}

/// A returned document.
#[derive(Debug, Serialize)]
pub struct Document {
    text: String,
}

/// The `/v2/rerank` answer.
#[derive(Debug, Serialize)]
pub struct Reranked {
    id: String,
    results: Vec<Ranked>,
    meta: Meta,
}

/// The requested `embedding_types`, in order and without repeats; `float` when absent.
fn embedding_types(body: &Map<String, Value>) -> Result<Vec<(String, EncodingFormat)>, ApiError> {
    let key = "embedding_types";
    let items = match body.get(key) {
        None | Some(Value::Null) => return Ok(vec![("float".into(), EncodingFormat::Float)]),
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(key, format!("{key} must not be empty")))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                key,
                format!("{key} must be a list of strings, got {}", type_name(other)),
            ))
        }
    };
    let mut types: Vec<(String, EncodingFormat)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let format = item
            .as_str()
            .and_then(EncodingFormat::parse)
            .ok_or_else(|| {
                ApiError::invalid(
                    key,
                    format!(
                        "{key}[{i}] must be one of float, int8, uint8, binary, ubinary, base64; \
                     got {item}"
                    ),
                )
            })?;
        let name = item.as_str().unwrap_or_default().to_string();
        if !types.iter().any(|(n, _)| *n == name) {
            types.push((name, format));
        }
    }
    Ok(types)
}

/// `POST /v2/embed`: `texts` or `images`, `model`, `input_type`, `embedding_types`,
/// `output_dimension`, `max_tokens`, `truncate`; answers `embeddings_by_type`.
pub async fn embed(state: &AppState, value: &Value) -> Result<Embedded, ApiError> {
    let body = object(value)?;
    if body.get("inputs").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "inputs",
            "inputs (mixed text and image content) is not supported; send texts or images",
        ));
    }
    let present = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    let (key, modality) = match (present("texts"), present("images")) {
        (true, true) => {
            return Err(ApiError::invalid(
                "images",
                "give texts or images, not both",
            ))
        }
        (true, false) => ("texts", "text"),
        (false, true) => ("images", "image"),
        (false, false) => {
            return Err(ApiError::invalid(
                "texts",
                "texts (a list of strings) or images (a list of data URIs) is required",
            ))
        }
    };
    let input = texts(body, key, state.max_items)?;
    let input_type = match opt_str(body, "input_type")? {
        // Images take no text prompt, whatever the client calls them.
        Some(_) if modality == "image" => None,
        Some(t) => Some(InputType::parse(&t)?),
        None => None,
    };
    let types = embedding_types(body)?;
    let req = EmbeddingsRequest {
        model: opt_str(body, "model")?,
        input,
        encoding_format: EncodingFormat::Float,
        dimensions: opt_positive(body, "output_dimension")?,
        modality: modality.into(),
        prompt_name: None,
        input_type,
        normalize: true,
        truncation: truncation(body)?,
        max_tokens: opt_positive(body, "max_tokens")?,
        outputs: None,
        return_tokens: false,
    };
    let cohere_names = |e: ApiError| {
        e.renamed("input", key)
            .renamed("dimensions", "output_dimension")
    };
    let model = state.model(req.model.as_deref())?;
    // Everything refused, and every writer ready (int8/uint8 calibrated), before the vectors
    // are computed.
    api::check(model, &req).map_err(cohere_names)?;
    let mut writers = Vec::with_capacity(types.len());
    for (name, format) in types {
        api::check_format(&req, format, "embedding_types")?;
        writers.push((name, Writer::new(model, format, req.finish()).await?));
    }
    let echoed = (modality == "text").then(|| req.input.clone());
    let done = api::vectors(state, req).await.map_err(cohere_names)?;
    let embeddings = writers
        .into_iter()
        .map(|(name, writer)| {
            let written = done.vectors.iter().map(|v| writer.write(v.clone()));
            (name, written.collect())
        })
        .collect();
    Ok(Embedded {
        id: uuid::Uuid::new_v4().to_string(),
        response_type: "embeddings_by_type",
        embeddings,
        meta: Meta::of(done.tokens),
        texts: echoed,
    })
}

/// `POST /v2/rerank`: `query`, `documents`, `model`, `top_n`, `max_tokens_per_doc`; answers
/// `results` of `{index, relevance_score}`, best first.
pub async fn rerank(state: &AppState, value: &Value) -> Result<Reranked, ApiError> {
    let req = RerankRequest::parse(value, state.max_items)?;
    let r = api::rerank(state, req).await?;
    let results = r
        .results
        .into_iter()
        .map(|x| Ranked {
            index: x.index,
            relevance_score: x.relevance_score,
            document: x.document.map(|text| Document { text }),
        })
        .collect();
    Ok(Reranked {
        id: uuid::Uuid::new_v4().to_string(),
        results,
        meta: Meta::of(r.usage.total_tokens),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(v: Value) -> Result<Vec<String>, ApiError> {
        embedding_types(v.as_object().unwrap())
            .map(|t| t.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
    }

    #[test]
    fn embedding_types_default_to_float_and_keep_order() {
        assert_eq!(types(json!({})).unwrap(), vec!["float"]);
        assert_eq!(
            types(json!({"embedding_types": ["ubinary", "float", "int8", "float"]})).unwrap(),
            vec!["ubinary", "float", "int8"]
        );
        let e = types(json!({"embedding_types": ["float", "int4"]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("embedding_types"));
        assert!(e.message.contains("embedding_types[1]"), "{}", e.message);
        let e = types(json!({"embedding_types": []})).unwrap_err();
        assert!(e.message.contains("must not be empty"), "{}", e.message);
        let e = types(json!({"embedding_types": "float"})).unwrap_err();
        assert!(e.message.contains("list of strings"), "{}", e.message);
    }
}
