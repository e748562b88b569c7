//! Models: resolving a `MODEL_NAMES` entry to a local directory, and reading its
//! configuration into a [`ember_plugin_api::ModelManifest`].

pub mod bge_m3;
pub mod dense;
pub mod manifest;
pub mod multi_vector;
pub mod resolve;

/// Why a model could not be resolved or understood.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The name is neither a directory nor a valid hub id.
    #[error("model {name:?}: {reason}")]
    BadName { name: String, reason: String },
    /// The hub could not be reached or refused, and nothing usable is cached.
    #[error("model {name}: download failed: {reason}")]
    Download { name: String, reason: String },
    /// Offline mode and the model is not in the cache.
    #[error("model {name} is not in the cache at {cache} and HF_HUB_OFFLINE is set")]
    NotCached { name: String, cache: String },
    /// A configuration file is missing or malformed.
    #[error("model {name}: {file}: {reason}")]
    Config {
        name: String,
        file: String,
        reason: String,
    },
    /// The backend cannot read this model.
    #[error("model {name}: {reason}")]
    Backend { name: String, reason: String },
}
