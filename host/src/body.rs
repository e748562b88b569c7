//! Request bodies: read within `MAX_REQUEST_BYTES` and parsed as JSON, with the error each
//! failure deserves. Every transport (OpenAI, TEI, Cohere, the local RunPod API) reads its
//! bodies here.

use crate::api::{ApiError, ErrorKind};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::http::HeaderMap;
use serde_json::Value;

/// Reads and parses a JSON request body: 413 past `limit` (MAX_REQUEST_BYTES), 415 for another
/// content type, 400 saying where the JSON is broken.
pub fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, ApiError> {
    let body = body_bytes(body, limit)?;
    if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        // curl's `-d` sends application/x-www-form-urlencoded; its body is still JSON here.
        let accepted = ct.is_empty()
            || ct.starts_with("application/json")
            || ct.contains("+json")
            || ct.starts_with("application/x-www-form-urlencoded");
        if !accepted {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!("content-type must be application/json, got '{ct}'"),
            ));
        }
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("request body is not valid JSON: {e}")))
}

/// The body of a request, or the 413 / 408 / 400 its rejection deserves.
fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::new(
                ErrorKind::TooLarge,
                format!("request body is larger than {limit} bytes (MAX_REQUEST_BYTES)"),
            )
        }
        other => match crate::server::body_timed_out(&other) {
            Some(timed_out) => ApiError::new(ErrorKind::Timeout, timed_out.to_string()),
            None => ApiError::invalid("body", format!("cannot read the request body: {other}")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    #[tokio::test]
    async fn a_body_that_timed_out_is_a_408() {
        // A body whose stream fails as the server's timed body does.
        let stream = failing_body();
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .body(axum::body::Body::new(stream))
            .expect("valid request");
        let body = Bytes::from_request(req, &()).await;
        let e = body_bytes(body, 1024).expect_err("the body failed");
        assert_eq!(e.status(), 408, "{}", e.message);
        assert!(e.message.contains("HTTP_BODY_TIMEOUT"), "{}", e.message);
    }

    /// A body that fails at once with the server's body timeout.
    fn failing_body() -> impl http_body::Body<Data = Bytes, Error = crate::server::BodyTimedOut> {
        struct Failing(Option<crate::server::BodyTimedOut>);
        impl http_body::Body for Failing {
            type Data = Bytes;
            type Error = crate::server::BodyTimedOut;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                std::task::Poll::Ready(self.0.take().map(Err))
            }
        }
        Failing(Some(crate::server::BodyTimedOut::new(
            std::time::Duration::from_secs(60),
        )))
    }
}
