//! Image inputs: where an item's bytes come from (URL, data URI, raw base64), fetching them
//! safely, decoding and the model's CLIP-style preprocessing into normalised pixels.

pub mod fetch;
pub mod preprocess;
pub mod source;

pub use fetch::Fetcher;
pub use preprocess::Preprocessor;

/// Why one image item was refused; the message is shown to the caller after "item N: ".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);
