//! Configuration: built-in defaults < `config/default.toml` (or `EMBER_CONFIG`) < environment.
//!
//! Every setting is declared once, below: its field, type, environment variable, default,
//! parser and help (the doc comment). The structs, defaults, loading, parsing and the
//! documentation (`config/default.toml`, the README tables, `ember --help`) follow from it.
//! The seed worker's variables keep their names and meaning. Per-model lists are
//! `;`-separated and must match `MODEL_NAMES` in length. Every bad value is reported as one
//! line naming the variable, the value and what is allowed.

pub(crate) mod declare;
mod parse;
pub mod render;
mod source;
#[cfg(test)]
mod tests;

use declare::settings;
use ember_plugin_api::{DType, DeviceRequest};
use std::path::PathBuf;
use std::time::Duration;

pub use declare::Setting;
pub use parse::{host as parse_host, parse_device, parse_dtype};
pub use source::{RawSettings, DEFAULT_FILE};

/// A configuration error: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The seed worker's browser-style User-Agent for image downloads (CDNs block generic ones).
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) \
    AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// A User-Agent; empty means [`DEFAULT_USER_AGENT`].
fn user_agent(var: &str, value: &str) -> Result<String, ConfigError> {
    let ua = parse::text(var, value)?;
    Ok(if ua.is_empty() {
        DEFAULT_USER_AGENT.to_string()
    } else {
        ua
    })
}

settings! {
    /// Validated settings: what the server runs with.
    pub struct Settings {
        /// `;`-separated Hugging Face model ids or local directories to serve, for example
        /// `BAAI/bge-small-en-v1.5;BAAI/bge-reranker-base`.
        model_names: Vec<String> = "MODEL_NAMES", "" ("required"), parse::list(parse::text);
        /// Per-model most inputs in one forward call, from 1 to 4096; empty: 32 for every model.
        batch_sizes: Vec<u32> = "BATCH_SIZES", "" ("`32` each"), parse::list(parse::batch_size);
        /// Per-model precision: `auto`, `fp32`, `fp16`, `bf16`, `fp8`, `int8`; empty: `auto`
        /// for every model.
        dtypes: Vec<DType> = "DTYPES", "" ("`auto` each"), parse::list(parse::dtype);
        /// Per-model prompt applied when a request names none (one of the model's prompts in
        /// `config_sentence_transformers.json`); `-` keeps the model's own
        /// `default_prompt_name`.
        prompt_names: Vec<Option<String>> = "PROMPT_NAMES", "" ("`-` each"),
            parse::list(parse::prompt);
        /// Inference plugin for every model: `torch`, `optimum` (ONNX Runtime), `ctranslate2`
        /// or `candle`.
        backend: String = "BACKEND", "torch", parse::backend;
        /// `auto` (the GPU when the driver and the backend's runtime can use it, else the CPU
        /// with a warning naming why), `cpu` (never starts the driver or a CUDA library),
        /// `cuda`, `cuda:N` (a start-up error naming why when it cannot be used).
        device: DeviceRequest = "DEVICE", "auto", parse::device;
        /// Items that may wait in one model's queue; beyond it requests get 429 at once.
        queue_size: usize = "INFINITY_QUEUE_SIZE", "48000", parse::at_least(1usize);
        /// Jobs run at once: in RunPod worker mode, and through the local `/run` and
        /// `/runsync` API.
        runpod_max_concurrency: usize = "RUNPOD_MAX_CONCURRENCY", "300", parse::at_least(1usize);
        /// Listen address of the HTTP server: an IP address or a host name.
        host: String = "HOST", "0.0.0.0", parse::host;
        /// Listen port of the HTTP server.
        port: u16 = "PORT", "8000", parse::port;
        /// Directory holding `libember_<backend>.so`; empty: next to the binary, then
        /// `/usr/local/lib/ember`.
        plugin_dir: Option<PathBuf> = "PLUGIN_DIR", "", parse::optional_path;
        /// Most padded tokens (rows x longest row) in one forward call; larger batches are
        /// split.
        max_batch_tokens: usize = "MAX_BATCH_TOKENS", "16384", parse::at_least(1usize);
        /// CPU threads per forward call; 0 lets the plugin choose (all cores). torch shares
        /// them out among the parts it cuts a call of several rows into; ctranslate2 runs
        /// that many replicas of one thread each, a call's parts on all of them at once.
        intra_op_threads: u32 = "INTRA_OP_THREADS", "0", parse::at_least(0u32);
        /// Largest request body in bytes (413 beyond it).
        max_request_bytes: usize = "MAX_REQUEST_BYTES", "16777216" ("16 MiB"),
            parse::at_least(1024usize);
        /// Most inputs in one request (413 beyond it).
        max_items_per_request: usize = "MAX_ITEMS_PER_REQUEST", "2048", parse::at_least(1usize);
        /// When set, every HTTP request but `GET /health` and `GET /metrics` must carry
        /// `Authorization: Bearer <key>` (401 otherwise; the RunPod routes also take the raw
        /// key). Empty: no authentication.
        api_key: Option<String> = "API_KEY", "" ("unset"), parse::optional_text;
    }
    derived {
        /// Models to serve, in `MODEL_NAMES` order, with their per-model settings.
        models: Vec<ModelSettings> = models_of;
    }
    /// Image downloads and decoding (`modality: "image"`), as in the seed worker.
    images: pub struct ImageSettings {
        /// User-Agent of image downloads; empty: a desktop Chrome User-Agent (CDNs block
        /// generic ones).
        user_agent: String = "HTTP_CLIENT_USER_AGENT", "" ("desktop Chrome UA"), user_agent;
        /// Seconds one image download may take (400 beyond it).
        timeout: Duration = "HTTP_CLIENT_TIMEOUT", "10.0", parse::seconds;
        /// Downloads in flight at once, over all requests; others wait.
        max_connections: usize = "HTTP_CLIENT_MAX_CONNECTIONS", "50", parse::at_least(1usize);
        /// Idle keep-alive connections kept per host.
        max_keepalive: usize = "HTTP_CLIENT_MAX_KEEPALIVE_CONNECTIONS", "20",
            parse::at_least(0usize);
        /// Largest image file in bytes, downloaded or inline (400 naming the item).
        max_bytes: usize = "IMAGE_MAX_BYTES", "20971520" ("20 MiB"), parse::at_least(1024usize);
        /// Largest image in pixels, width x height (400 naming the item and its size).
        max_pixels: u64 = "IMAGE_MAX_PIXELS", "40000000", parse::at_least(64u64);
        /// Redirects followed per download.
        max_redirects: usize = "IMAGE_MAX_REDIRECTS", "5", parse::at_least(0usize);
        /// Allow image URLs that resolve to loopback, private, link-local or other internal
        /// addresses (off: the server cannot be used to reach its own network).
        allow_private: bool = "IMAGE_ALLOW_PRIVATE_URLS", "false", parse::boolean;
        /// Longest side over shortest side beyond which an image is refused (400).
        max_aspect_ratio: f64 = "IMAGE_MAX_ASPECT_RATIO", "100", parse::ratio;
        /// Images decoded at once over all requests; 0: one per CPU core.
        decode_concurrency: usize = "IMAGE_DECODE_CONCURRENCY", "0", parse::count_or_cores;
        /// Bytes of decoded pixels held at once over all requests; an image needing more than
        /// this alone is refused (400), others wait their turn.
        decode_budget_bytes: u64 = "IMAGE_DECODE_BUDGET_BYTES", "536870912" ("512 MiB"),
            parse::at_least(1u64 << 20);
        /// Downloads in flight at once for one request (of `HTTP_CLIENT_MAX_CONNECTIONS` in
        /// all), so that one request with many slow URLs cannot hold every download slot.
        downloads_per_request: usize = "IMAGE_DOWNLOADS_PER_REQUEST", "8",
            parse::at_least(1usize);
        /// Bytes of preprocessed image tensors (3 x height x width float32 each) admitted at
        /// once over all requests, from before decoding until the batch is computed; beyond it
        /// image requests get 429, and a request needing more than all of it 413.
        queue_bytes: u64 = "IMAGE_QUEUE_BYTES", "536870912" ("512 MiB"),
            parse::at_least(1u64 << 20);
    }
    /// HTTP server hardening: connections and request bodies.
    server: pub struct ServerLimits {
        /// Seconds a client has to send a request's headers; beyond it the connection is
        /// closed.
        header_timeout: Duration = "HTTP_HEADER_TIMEOUT", "10.0", parse::seconds;
        /// Seconds a client has to send a request's body once the headers are in; beyond it
        /// 408 and the connection is closed.
        body_timeout: Duration = "HTTP_BODY_TIMEOUT", "60.0", parse::seconds;
        /// Seconds an idle keep-alive connection is kept open.
        keepalive_timeout: Duration = "HTTP_KEEPALIVE_TIMEOUT", "75.0", parse::seconds;
        /// Connections open at once; further clients wait in the listen backlog.
        max_connections: usize = "HTTP_MAX_CONNECTIONS", "1024", parse::at_least(1usize);
        /// Bytes of request bodies being received at once over all connections (503 with
        /// `Retry-After` beyond it).
        body_budget_bytes: usize = "HTTP_BODY_BUDGET_BYTES", "268435456" ("256 MiB"),
            parse::at_least(1024usize);
    }
    /// Local RunPod API (`/run`, `/runsync`): its job store.
    jobs: pub struct JobLimits {
        /// Jobs waiting to run; `/run` answers 429 with `Retry-After` beyond it.
        max_waiting: usize = "JOBS_MAX_WAITING", "1000", parse::at_least(1usize);
        /// Bytes of waiting jobs' inputs; `/run` answers 429 with `Retry-After` beyond it.
        max_waiting_bytes: usize = "JOBS_MAX_WAITING_BYTES", "268435456" ("256 MiB"),
            parse::at_least(1024usize);
        /// Bytes of finished jobs' outputs kept for `/status`; the oldest are dropped beyond
        /// it.
        max_retained_bytes: usize = "JOBS_MAX_RETAINED_BYTES", "268435456" ("256 MiB"),
            parse::at_least(0usize);
    }
}

/// One model to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Hugging Face id or local directory, as written in `MODEL_NAMES`.
    pub name: String,
    /// Most items in one forward call.
    pub batch_size: u32,
    /// Precision asked for.
    pub dtype: DType,
    /// The prompt applied when a request names none, in place of the model's own
    /// `default_prompt_name` (`PROMPT_NAMES`; `-` keeps the model's).
    pub prompt_name: Option<String>,
}

/// A per-model list: one entry per model, or empty for the default of each.
fn per_model<T: Clone>(
    raw: &RawSettings,
    var: &str,
    items: &[T],
    n: usize,
    default: T,
) -> Result<Vec<T>, ConfigError> {
    match items.len() {
        0 => Ok(vec![default; n]),
        len if len == n => Ok(items.to_vec()),
        len => Err(parse::bad(
            var,
            raw.get(var),
            &format!(
                "must have the same number of ';'-separated entries as MODEL_NAMES ({n}), found \
                 {len}"
            ),
        )),
    }
}

/// Pairs `MODEL_NAMES` with the per-model lists; names must be unique.
fn models_of(s: &Settings, raw: &RawSettings) -> Result<Vec<ModelSettings>, ConfigError> {
    let n = s.model_names.len();
    if n == 0 {
        // `validate` reports the missing MODEL_NAMES, not the lists' lengths.
        return Ok(Vec::new());
    }
    let batch_sizes = per_model(raw, "BATCH_SIZES", &s.batch_sizes, n, 32)?;
    let dtypes = per_model(raw, "DTYPES", &s.dtypes, n, DType::Auto)?;
    let prompts = per_model(raw, "PROMPT_NAMES", &s.prompt_names, n, None)?;
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = s.model_names.iter().find(|m| !seen.insert(m.as_str())) {
        return Err(parse::bad(
            "MODEL_NAMES",
            raw.get("MODEL_NAMES"),
            &format!("{twice} appears twice; every model must be unique"),
        ));
    }
    Ok(s.model_names
        .iter()
        .zip(batch_sizes)
        .zip(dtypes)
        .zip(prompts)
        .map(|(((name, batch_size), dtype), prompt_name)| ModelSettings {
            name: name.clone(),
            batch_size,
            dtype,
            prompt_name,
        })
        .collect())
}

impl RawSettings {
    /// Parses and checks every value; at least one model is required.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let settings = Settings::parse(self)?;
        if settings.models.is_empty() {
            return Err(ConfigError(
                "missing MODEL_NAMES: set it to one or more Hugging Face model ids or local \
                 directories, separated by ';' (for example MODEL_NAMES=BAAI/bge-small-en-v1.5)"
                    .into(),
            ));
        }
        Ok(settings)
    }
}

impl Settings {
    /// The defaults (file and environment ignored) serving the given models.
    pub fn for_models(models: Vec<ModelSettings>) -> Result<Settings, ConfigError> {
        let mut settings = Settings::parse(&RawSettings::default())?;
        settings.model_names = models.iter().map(|m| m.name.clone()).collect();
        settings.models = models;
        Ok(settings)
    }
}
