//! The API's one error type: a kind (which fixes the status and each transport's error type),
//! a message naming the field and item at fault, and the field.

use crate::engine::EngineError;
use ember_plugin_api::ErrorCode;

/// What kind of failure an error is. Each kind has one HTTP status, one OpenAI error type,
/// one RunPod worker error type, one TEI answer, and either completes a RunPod job with an
/// error object (the caller's fault) or fails it (the server's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400).
    Invalid,
    /// No or a wrong API key (401).
    Unauthorized,
    /// No such route (404).
    RouteNotFound,
    /// The request names a model that is not deployed (404).
    ModelNotFound,
    /// The route exists but not with this method (405).
    MethodNotAllowed,
    /// The client was too slow to send its request (408).
    Timeout,
    /// The request is larger than a limit it can never fit under (413).
    TooLarge,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// The server is full now; retrying later can succeed (429).
    Overloaded,
    /// A feature of the API ember does not implement (501).
    NotImplemented,
    /// The server failed (500).
    Internal,
    /// The server cannot take this request now (503).
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::RouteNotFound | ErrorKind::ModelNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Timeout => 408,
            ErrorKind::TooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Overloaded => 429,
            ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
            ErrorKind::Unavailable => 503,
        }
    }

    /// The OpenAI error `type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::RouteNotFound => "not_found",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::Overloaded => "rate_limit_error",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::Internal | ErrorKind::Unavailable => "server_error",
            ErrorKind::Invalid
            | ErrorKind::Unauthorized
            | ErrorKind::MethodNotAllowed
            | ErrorKind::Timeout
            | ErrorKind::TooLarge
            | ErrorKind::UnsupportedMediaType => "invalid_request_error",
        }
    }

    /// The `type` of the RunPod worker's error object (the seed worker's names).
    pub fn runpod_type(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "BadRequestError",
            ErrorKind::RouteNotFound | ErrorKind::ModelNotFound => "NotFoundError",
            ErrorKind::TooLarge => "PayloadTooLargeError",
            ErrorKind::Overloaded => "RateLimitError",
            ErrorKind::NotImplemented => "NotImplementedError",
            _ => "InternalServerError",
        }
    }

    /// TEI's status and `error_type`: Validation 422, Overloaded 429, Unhealthy 503, Backend
    /// 424; too slow or too large stay 408 and 413, a missing key 401.
    pub fn tei(self) -> (u16, &'static str) {
        match self {
            ErrorKind::Invalid
            | ErrorKind::RouteNotFound
            | ErrorKind::ModelNotFound
            | ErrorKind::UnsupportedMediaType => (422, "Validation"),
            ErrorKind::Timeout | ErrorKind::TooLarge | ErrorKind::Unauthorized => {
                (self.status(), "Validation")
            }
            ErrorKind::Overloaded => (429, "Overloaded"),
            ErrorKind::Unavailable => (503, "Unhealthy"),
            ErrorKind::MethodNotAllowed | ErrorKind::NotImplemented | ErrorKind::Internal => {
                (424, "Backend")
            }
        }
    }

    /// Whether a RunPod job ending with this error fails (the server's fault) rather than
    /// completing with the error object as its output.
    pub fn fails_job(self) -> bool {
        matches!(self, ErrorKind::Internal | ErrorKind::Unavailable)
    }
}

/// An API error: its kind, a message, and the offending parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// What went wrong, naming the field and item index where there is one.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
}

impl ApiError {
    /// An error of a kind, with no parameter.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Invalid, message).at(param)
    }

    /// The same error, blaming `param`.
    pub fn at(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    /// A 500: the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The same error told in a route's own name for the field (`input` is `texts` on
    /// Cohere's route): the parameter, and the message's first word where it names it.
    pub fn renamed(mut self, from: &str, to: &str) -> Self {
        if self.param.as_deref() == Some(from) {
            self.param = Some(to.to_string());
            if let Some(rest) = self.message.strip_prefix(from) {
                self.message = format!("{to}{rest}");
            }
        }
        self
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let kind = match &e {
            EngineError::Overloaded { .. } => ErrorKind::Overloaded,
            // Retrying cannot help: the request never fits in the queue.
            EngineError::TooLarge { .. } => ErrorKind::TooLarge,
            EngineError::Stopped(_) => ErrorKind::Unavailable,
            EngineError::Plugin(p) => match p.code {
                ErrorCode::InvalidInput | ErrorCode::Unsupported => ErrorKind::Invalid,
                // Out of memory even alone: the server cannot take this input now.
                ErrorCode::OutOfMemory => ErrorKind::Unavailable,
                ErrorCode::Device | ErrorCode::Internal => ErrorKind::Internal,
            },
        };
        ApiError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_failures_fail_a_job() {
        let all = [
            ErrorKind::Invalid,
            ErrorKind::Unauthorized,
            ErrorKind::RouteNotFound,
            ErrorKind::ModelNotFound,
            ErrorKind::MethodNotAllowed,
            ErrorKind::Timeout,
            ErrorKind::TooLarge,
            ErrorKind::UnsupportedMediaType,
            ErrorKind::Overloaded,
            ErrorKind::NotImplemented,
            ErrorKind::Internal,
            ErrorKind::Unavailable,
        ];
        for kind in all {
            // The seed worker fails a job on a 5xx other than 501.
            let status = kind.status();
            assert_eq!(kind.fails_job(), status >= 500 && status != 501, "{kind:?}");
            assert!((400..600).contains(&status));
        }
        assert_eq!(ErrorKind::ModelNotFound.runpod_type(), "NotFoundError");
        assert_eq!(ErrorKind::Unavailable.tei(), (503, "Unhealthy"));
    }
}
