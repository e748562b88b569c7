//! HTTP answers: a route's reply as `application/json`, errors in the shape of the route's
//! family (OpenAI's envelope, TEI's, Cohere's), and the one handler that serves any [`Route`].

use crate::api::{ApiError, AppState};
use crate::body::json_body;
use crate::routes::{self, Dialect, Facts, Reply, Route};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let text: Box<str> = self.json.into();
        let mut response = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            String::from(text),
        )
            .into_response();
        response.extensions_mut().insert(self.facts);
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        refusal(Dialect::OpenAi, self)
    }
}

/// An error as a route of `dialect` answers it, carrying the message for the request log.
pub fn refusal(dialect: Dialect, e: ApiError) -> Response {
    let (status, body) = match dialect {
        Dialect::OpenAi => (
            e.status(),
            json!({"error": {
                "message": e.message,
                "type": e.kind.openai_type(),
                "param": e.param,
                "code": e.status(),
            }}),
        ),
        // TEI: Validation and Tokenizer 422, Empty 400, Overloaded 429, Unhealthy 503,
        // Backend 424; an input too long stays 413 as ember answers it elsewhere.
        Dialect::Tei => {
            let (status, kind) = e.kind.tei();
            (status, json!({"error": e.message, "error_type": kind}))
        }
        Dialect::Cohere => (e.status(), json!({"message": e.message})),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Facts {
        error: Some(e.message),
        ..Facts::default()
    });
    response
}

/// Serves `route` over HTTP: reads the JSON body where the route takes one, answers it, and
/// renders an error in the shape of the route (as the body makes it) answers in.
pub async fn serve(
    state: &AppState,
    route: Route,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let value = if route.takes_body() {
        match json_body(headers, body, state.max_request_bytes) {
            Ok(v) => v,
            Err(e) => return refusal(route.dialect(), e),
        }
    } else {
        Value::Null
    };
    let route = route.for_body(&value);
    match routes::answer(state, route, &value).await {
        Ok(reply) => reply.into_response(),
        Err(e) => refusal(route.dialect(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_take_their_dialects_shape() {
        let e = || ApiError::invalid("texts", "texts[2] must be a string");
        let r = refusal(Dialect::Cohere, e());
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.extensions().get::<Facts>().and_then(|f| f.error.clone()),
            Some("texts[2] must be a string".to_string())
        );
        assert_eq!(refusal(Dialect::Tei, e()).status(), 422);
        assert_eq!(refusal(Dialect::OpenAi, e()).status(), 400);
    }
}
