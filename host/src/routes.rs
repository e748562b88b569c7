//! The operations a request can name, whichever transport carries it (an HTTP route, the local
//! RunPod API's OpenAI gateway, a RunPod job's `openai_route` or its plain `input`), and the one
//! dispatch that answers them. Answers are typed and serialised here, once; transports send
//! the text as it is (the RunPod job path list-wraps it where the original worker does).

use crate::api::{self, ApiError, AppState, ClassifyRequest, EmbeddingsRequest, RerankRequest};
use crate::{cohere, tei};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// One operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The OpenAI model list.
    Models,
    /// OpenAI embeddings.
    Embeddings,
    /// Infinity's (and Cohere v1's) rerank with `documents`.
    Rerank,
    /// Infinity's classification.
    Classify,
    /// TEI's `POST /`: embed, rerank or predict by the model's kind.
    TeiRoot,
    /// TEI's `/embed`.
    TeiEmbed,
    /// TEI's `/embed_all`: every token's state.
    TeiEmbedAll,
    /// TEI's `/embed_sparse`: SPLADE weights.
    TeiEmbedSparse,
    /// TEI's `/rerank` with `texts`.
    TeiRerank,
    /// TEI's `/predict`.
    TeiPredict,
    /// TEI's `/tokenize`.
    TeiTokenize,
    /// TEI's `/decode`.
    TeiDecode,
    /// TEI's `/info`.
    TeiInfo,
    /// Cohere's `/v2/embed`.
    CohereEmbed,
    /// Cohere's `/v2/rerank`.
    CohereRerank,
}

/// The error shape a route answers in over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's `{"error": {message, type, param, code}}`.
    OpenAi,
    /// TEI's `{"error", "error_type"}` with TEI's status codes.
    Tei,
    /// Cohere's `{"message"}`.
    Cohere,
}

/// The route names a RunPod job's `openai_route` (and the gateway) accepts, for error messages.
pub const ROUTE_NAMES: &str = "/v1/models, /v1/embeddings, /v1/rerank, /v1/classify (or \
                               /classify), and the TEI and Cohere routes /embed, /rerank, \
                               /embed_all, /embed_sparse, /predict, /tokenize, /decode, /info, \
                               /v2/embed, /v2/rerank";

impl Route {
    /// The route an `openai_route` (or the gateway's path) names; on `/rerank` a body in TEI's
    /// shape makes it TEI's (see [`Route::for_body`]).
    pub fn named(name: &str) -> Option<Route> {
        Some(match name {
            "/v1/models" => Route::Models,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/rerank" | "/rerank" => Route::Rerank,
            "/v1/classify" | "/classify" => Route::Classify,
            "/embed" => Route::TeiEmbed,
            "/embed_all" => Route::TeiEmbedAll,
            "/embed_sparse" => Route::TeiEmbedSparse,
            "/predict" => Route::TeiPredict,
            "/tokenize" => Route::TeiTokenize,
            "/decode" => Route::TeiDecode,
            "/info" => Route::TeiInfo,
            "/v2/embed" => Route::CohereEmbed,
            "/v2/rerank" => Route::CohereRerank,
            _ => return None,
        })
    }

    /// Whether the route reads a request body (the others are `GET`s).
    pub fn takes_body(self) -> bool {
        match self {
            Route::Models | Route::TeiInfo => false,
            Route::Embeddings
            | Route::Rerank
            | Route::Classify
            | Route::TeiRoot
            | Route::TeiEmbed
            | Route::TeiEmbedAll
            | Route::TeiEmbedSparse
            | Route::TeiRerank
            | Route::TeiPredict
            | Route::TeiTokenize
            | Route::TeiDecode
            | Route::CohereEmbed
            | Route::CohereRerank => true,
        }
    }

    /// The route a body asks for: a rerank in TEI's shape (`texts`, no `documents`) is TEI's.
    pub fn for_body(self, body: &Value) -> Route {
        match self {
            Route::Rerank if body.get("texts").is_some() && body.get("documents").is_none() => {
                Route::TeiRerank
            }
            other => other,
        }
    }

    /// The error shape of the route's family.
    pub fn dialect(self) -> Dialect {
        match self {
            Route::Models | Route::Embeddings | Route::Rerank | Route::Classify => Dialect::OpenAi,
            Route::CohereEmbed | Route::CohereRerank => Dialect::Cohere,
            Route::TeiRoot
            | Route::TeiEmbed
            | Route::TeiEmbedAll
            | Route::TeiEmbedSparse
            | Route::TeiRerank
            | Route::TeiPredict
            | Route::TeiTokenize
            | Route::TeiDecode
            | Route::TeiInfo => Dialect::Tei,
        }
    }
}

/// What a request log line reports about an answered request.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The model that answered.
    pub model: Option<String>,
    /// Inputs in the request.
    pub items: Option<usize>,
    /// Tokens read.
    pub tokens: Option<usize>,
    /// The error it was answered with.
    pub error: Option<String>,
}

/// A route's answer: its JSON text, serialised once, and what the request log reports.
#[derive(Debug)]
pub struct Reply {
    /// The answer as JSON text.
    pub json: Box<RawValue>,
    /// What the log reports about it.
    pub facts: Facts,
}

impl Reply {
    fn of(answer: &impl Serialize, facts: Facts) -> Result<Reply, ApiError> {
        let json = serde_json::value::to_raw_value(answer)
            .map_err(|e| ApiError::internal(format!("cannot serialise the answer: {e}")))?;
        Ok(Reply { json, facts })
    }

    fn plain(answer: &impl Serialize) -> Result<Reply, ApiError> {
        Reply::of(answer, Facts::default())
    }

    /// The answer wrapped in a one-item list, as the worker posts `/v1/embeddings` results.
    pub fn list_wrapped(self) -> Reply {
        let text = format!("[{}]", self.json.get());
        // A list of one valid JSON value is valid JSON.
        let json = RawValue::from_string(text).unwrap_or(self.json);
        Reply { json, ..self }
    }
}

fn facts(model: &str, items: usize, tokens: usize) -> Facts {
    Facts {
        model: Some(model.to_string()),
        items: Some(items),
        tokens: Some(tokens),
        error: None,
    }
}

/// Answers `route` with `body` (ignored by routes that take none).
pub async fn answer(state: &AppState, route: Route, body: &Value) -> Result<Reply, ApiError> {
    match route {
        Route::Models => Reply::plain(&state.list_models()),
        Route::Embeddings => {
            let req = EmbeddingsRequest::parse(body, state.max_items)?;
            let items = req.input.len();
            let r = api::embeddings(state, req).await?;
            Reply::of(&r, facts(&r.model, items, r.usage.total_tokens))
        }
        Route::Rerank => {
            let req = RerankRequest::parse(body, state.max_items)?;
            let items = req.documents.len();
            let r = api::rerank(state, req).await?;
            Reply::of(&r, facts(&r.model, items, r.usage.total_tokens))
        }
        Route::Classify => {
            let req = ClassifyRequest::parse(body, state.max_items)?;
            let items = req.inputs.len();
            let r = api::classify(state, req).await?;
            Reply::of(&r, facts(&r.model, items, r.usage.total_tokens))
        }
        Route::TeiRoot => Reply::plain(&tei::root(state, body).await?),
        Route::TeiEmbed => Reply::plain(&tei::embed(state, body).await?),
        Route::TeiEmbedAll => Reply::plain(&tei::embed_all(state, body).await?),
        Route::TeiEmbedSparse => Reply::plain(&tei::embed_sparse(state, body).await?),
        Route::TeiRerank => Reply::plain(&tei::rerank(state, body).await?),
        Route::TeiPredict => Reply::plain(&tei::predict(state, body).await?),
        Route::TeiTokenize => Reply::plain(&tei::tokenize(state, body).await?),
        Route::TeiDecode => Reply::plain(&tei::decode(state, body)?),
        Route::TeiInfo => Reply::plain(&tei::info(state)?),
        Route::CohereEmbed => Reply::plain(&cohere::embed(state, body).await?),
        Route::CohereRerank => Reply::plain(&cohere::rerank(state, body).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_bodies_pick_routes() {
        assert_eq!(Route::named("/v1/embeddings"), Some(Route::Embeddings));
        assert_eq!(Route::named("/classify"), Some(Route::Classify));
        assert_eq!(Route::named("/v1/nope"), None);
        let tei = json!({"query": "q", "texts": ["a"]});
        assert_eq!(Route::Rerank.for_body(&tei), Route::TeiRerank);
        let both = json!({"query": "q", "texts": ["a"], "documents": ["b"]});
        assert_eq!(Route::Rerank.for_body(&both), Route::Rerank);
        assert_eq!(Route::Embeddings.for_body(&tei), Route::Embeddings);
        assert_eq!(Route::TeiRerank.dialect(), Dialect::Tei);
        assert_eq!(Route::CohereRerank.dialect(), Dialect::Cohere);
        assert!(!Route::Models.takes_body() && Route::TeiDecode.takes_body());
    }

    #[test]
    fn floats_print_as_float32_once_and_lists_wrap() {
        let reply = Reply::plain(&vec![0.1f32, 1.0, -2.5e-8]).unwrap();
        assert_eq!(reply.json.get(), "[0.1,1.0,-2.5e-8]");
        assert_eq!(reply.list_wrapped().json.get(), "[[0.1,1.0,-2.5e-8]]");
    }
}
