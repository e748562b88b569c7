//! Configuration: built-in defaults < `config/default.toml` (or `EMBER_CONFIG`) < environment.
//!
//! The seed worker's variables keep their names and meaning. Per-model lists are
//! `;`-separated and must match `MODEL_NAMES` in length. Every bad value is reported as one
//! line naming the variable, the value and what is allowed.

use ember_plugin_api::{DType, DeviceKind, DeviceRequest};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A configuration error: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A setting as written: a string, number or boolean, or a list (joined with `;`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Written>),
}

impl Written {
    fn into_string(self) -> String {
        match self {
            Written::Str(s) => s,
            Written::Int(i) => i.to_string(),
            Written::Float(f) => f.to_string(),
            Written::Bool(b) => b.to_string(),
            Written::List(l) => l
                .into_iter()
                .map(Written::into_string)
                .collect::<Vec<_>>()
                .join(";"),
        }
    }
}

/// Reads any scalar or list as the string the validation step parses.
fn stringly<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Written::deserialize(d).map(Written::into_string)
}

/// Raw settings as figment merges them; every value is kept as written, as a string.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawSettings {
    #[serde(deserialize_with = "stringly")]
    pub model_names: String,
    #[serde(deserialize_with = "stringly")]
    pub batch_sizes: String,
    #[serde(deserialize_with = "stringly")]
    pub dtypes: String,
    #[serde(deserialize_with = "stringly")]
    pub prompt_names: String,
    #[serde(deserialize_with = "stringly")]
    pub backend: String,
    #[serde(deserialize_with = "stringly")]
    pub device: String,
    #[serde(deserialize_with = "stringly")]
    pub infinity_queue_size: String,
    #[serde(deserialize_with = "stringly")]
    pub runpod_max_concurrency: String,
    #[serde(deserialize_with = "stringly")]
    pub host: String,
    #[serde(deserialize_with = "stringly")]
    pub port: String,
    #[serde(deserialize_with = "stringly")]
    pub plugin_dir: String,
    #[serde(deserialize_with = "stringly")]
    pub max_batch_tokens: String,
    #[serde(deserialize_with = "stringly")]
    pub intra_op_threads: String,
    #[serde(deserialize_with = "stringly")]
    pub max_request_bytes: String,
    #[serde(deserialize_with = "stringly")]
    pub max_items_per_request: String,
    #[serde(deserialize_with = "stringly")]
    pub api_key: String,
    #[serde(deserialize_with = "stringly")]
    pub http_client_user_agent: String,
    #[serde(deserialize_with = "stringly")]
    pub http_client_timeout: String,
    #[serde(deserialize_with = "stringly")]
    pub http_client_max_connections: String,
    #[serde(deserialize_with = "stringly")]
    pub http_client_max_keepalive_connections: String,
    #[serde(deserialize_with = "stringly")]
    pub image_max_bytes: String,
    #[serde(deserialize_with = "stringly")]
    pub image_max_pixels: String,
    #[serde(deserialize_with = "stringly")]
    pub image_max_redirects: String,
    #[serde(deserialize_with = "stringly")]
    pub image_allow_private_urls: String,
    #[serde(deserialize_with = "stringly")]
    pub image_max_aspect_ratio: String,
    #[serde(deserialize_with = "stringly")]
    pub image_decode_concurrency: String,
    #[serde(deserialize_with = "stringly")]
    pub image_decode_budget_bytes: String,
    #[serde(deserialize_with = "stringly")]
    pub image_downloads_per_request: String,
    #[serde(deserialize_with = "stringly")]
    pub image_queue_bytes: String,
    #[serde(deserialize_with = "stringly")]
    pub http_header_timeout: String,
    #[serde(deserialize_with = "stringly")]
    pub http_body_timeout: String,
    #[serde(deserialize_with = "stringly")]
    pub http_keepalive_timeout: String,
    #[serde(deserialize_with = "stringly")]
    pub http_max_connections: String,
    #[serde(deserialize_with = "stringly")]
    pub http_body_budget_bytes: String,
    #[serde(deserialize_with = "stringly")]
    pub jobs_max_waiting: String,
    #[serde(deserialize_with = "stringly")]
    pub jobs_max_waiting_bytes: String,
    #[serde(deserialize_with = "stringly")]
    pub jobs_max_retained_bytes: String,
}

/// The seed worker's browser-style User-Agent for image downloads (CDNs block generic ones).
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) \
    AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            model_names: String::new(),
            batch_sizes: String::new(),
            dtypes: String::new(),
            prompt_names: String::new(),
            backend: "torch".into(),
            device: "auto".into(),
            infinity_queue_size: "48000".into(),
            runpod_max_concurrency: "300".into(),
            host: "0.0.0.0".into(),
            port: "8000".into(),
            plugin_dir: String::new(),
            max_batch_tokens: "16384".into(),
            intra_op_threads: "0".into(),
            max_request_bytes: "16777216".into(),
            max_items_per_request: "2048".into(),
            api_key: String::new(),
            http_client_user_agent: String::new(),
            http_client_timeout: "10.0".into(),
            http_client_max_connections: "50".into(),
            http_client_max_keepalive_connections: "20".into(),
            image_max_bytes: "20971520".into(),
            image_max_pixels: "40000000".into(),
            image_max_redirects: "5".into(),
            image_allow_private_urls: "false".into(),
            image_max_aspect_ratio: "100".into(),
            image_decode_concurrency: "0".into(),
            image_decode_budget_bytes: "536870912".into(),
            image_downloads_per_request: "8".into(),
            image_queue_bytes: "536870912".into(),
            http_header_timeout: "10.0".into(),
            http_body_timeout: "60.0".into(),
            http_keepalive_timeout: "75.0".into(),
            http_max_connections: "1024".into(),
            http_body_budget_bytes: "268435456".into(),
            jobs_max_waiting: "1000".into(),
            jobs_max_waiting_bytes: "268435456".into(),
            jobs_max_retained_bytes: "268435456".into(),
        }
    }
}

/// Names of the environment variables read, in the order of [`RawSettings`].
const ENV_KEYS: &[&str] = &[
    "MODEL_NAMES",
    "BATCH_SIZES",
    "DTYPES",
    "PROMPT_NAMES",
    "BACKEND",
    "DEVICE",
    "INFINITY_QUEUE_SIZE",
    "RUNPOD_MAX_CONCURRENCY",
    "HOST",
    "PORT",
    "PLUGIN_DIR",
    "MAX_BATCH_TOKENS",
    "INTRA_OP_THREADS",
    "MAX_REQUEST_BYTES",
    "MAX_ITEMS_PER_REQUEST",
    "API_KEY",
    "HTTP_CLIENT_USER_AGENT",
    "HTTP_CLIENT_TIMEOUT",
    "HTTP_CLIENT_MAX_CONNECTIONS",
    "HTTP_CLIENT_MAX_KEEPALIVE_CONNECTIONS",
    "IMAGE_MAX_BYTES",
    "IMAGE_MAX_PIXELS",
    "IMAGE_MAX_REDIRECTS",
    "IMAGE_ALLOW_PRIVATE_URLS",
    "IMAGE_MAX_ASPECT_RATIO",
    "IMAGE_DECODE_CONCURRENCY",
    "IMAGE_DECODE_BUDGET_BYTES",
    "IMAGE_DOWNLOADS_PER_REQUEST",
    "IMAGE_QUEUE_BYTES",
    "HTTP_HEADER_TIMEOUT",
    "HTTP_BODY_TIMEOUT",
    "HTTP_KEEPALIVE_TIMEOUT",
    "HTTP_MAX_CONNECTIONS",
    "HTTP_BODY_BUDGET_BYTES",
    "JOBS_MAX_WAITING",
    "JOBS_MAX_WAITING_BYTES",
    "JOBS_MAX_RETAINED_BYTES",
];

/// How images named by URL are fetched and which images are accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSettings {
    /// User-Agent of image downloads.
    pub user_agent: String,
    /// Whole-request timeout of one download.
    pub timeout: std::time::Duration,
    /// Most downloads in flight at once, over all requests.
    pub max_connections: usize,
    /// Idle keep-alive connections kept per host.
    pub max_keepalive: usize,
    /// Largest accepted image file in bytes.
    pub max_bytes: usize,
    /// Largest accepted image in pixels (width x height).
    pub max_pixels: u64,
    /// Most redirects followed per download.
    pub max_redirects: usize,
    /// Whether URLs may point at loopback, private, link-local and other internal addresses.
    pub allow_private: bool,
    /// Longest side over shortest side beyond which an image is refused.
    pub max_aspect_ratio: f64,
    /// Images decoded and preprocessed at once, over all requests.
    pub decode_concurrency: usize,
    /// Bytes of decoded pixels held at once, over all requests.
    pub decode_budget_bytes: u64,
    /// Downloads in flight at once for one request.
    pub downloads_per_request: usize,
    /// Bytes of preprocessed image tensors admitted at once, over all requests.
    pub queue_bytes: u64,
}

/// Bounds of the HTTP server on connections and request bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers.
    pub header_timeout: std::time::Duration,
    /// Time a client has to send a request's body once its headers are in.
    pub body_timeout: std::time::Duration,
    /// Time an idle keep-alive connection is kept open.
    pub keepalive_timeout: std::time::Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Bytes of request bodies being received at once, over all connections.
    pub body_budget_bytes: usize,
}

/// Bounds of the local RunPod API's job store.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLimits {
    /// Jobs waiting to run; `/run` answers 429 beyond it.
    pub max_waiting: usize,
    /// Bytes of waiting jobs' inputs; `/run` answers 429 beyond it.
    pub max_waiting_bytes: usize,
    /// Bytes of finished jobs' outputs kept for `/status`; the oldest are dropped beyond it.
    pub max_retained_bytes: usize,
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

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Models to serve, in `MODEL_NAMES` order.
    pub models: Vec<ModelSettings>,
    /// Plugin name (`BACKEND`).
    pub backend: String,
    /// Device for every model.
    pub device: DeviceRequest,
    /// Items that may wait in one model's queue before requests get 429.
    pub queue_size: usize,
    /// Concurrent RunPod jobs.
    pub runpod_max_concurrency: usize,
    /// Listen address.
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// Where plugins are looked for; empty means the defaults (next to the binary, then
    /// `/usr/local/lib/ember`).
    pub plugin_dir: Option<PathBuf>,
    /// Most padded tokens (rows x longest row) in one forward call.
    pub max_batch_tokens: usize,
    /// CPU threads per forward call; 0 lets the plugin choose.
    pub intra_op_threads: u32,
    /// Largest accepted request body in bytes.
    pub max_request_bytes: usize,
    /// Most inputs in one request.
    pub max_items_per_request: usize,
    /// Key every HTTP request but `/health` must carry (`Authorization: Bearer <key>`).
    pub api_key: Option<String>,
    /// Image download and decoding limits.
    pub images: ImageSettings,
    /// Connection and request-body bounds of the HTTP server.
    pub server: ServerLimits,
    /// Bounds of the local RunPod API's job store.
    pub jobs: JobLimits,
}

fn bad(var: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError(format!("invalid {var}={value:?}: {allowed}"))
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(var, value, "expected true or false")),
    }
}

fn parse_seconds(var: &str, value: &str) -> Result<std::time::Duration, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(t) if t > 0.0 && t.is_finite() => Ok(std::time::Duration::from_secs_f64(t)),
        _ => Err(bad(var, value, "expected a number of seconds > 0")),
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    var: &str,
    value: &str,
    min: T,
) -> Result<T, ConfigError> {
    match value.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(bad(var, value, &format!("expected an integer >= {min}"))),
    }
}

/// Parses `DEVICE`: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(value: &str) -> Result<DeviceRequest, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    let err = || bad("DEVICE", value, "expected auto, cpu, cuda or cuda:N");
    Ok(match v.as_str() {
        "auto" | "" => DeviceRequest {
            kind: DeviceKind::Auto,
            ordinal: 0,
        },
        "cpu" => DeviceRequest {
            kind: DeviceKind::Cpu,
            ordinal: 0,
        },
        "cuda" => DeviceRequest {
            kind: DeviceKind::Cuda,
            ordinal: 0,
        },
        other => {
            let n = other.strip_prefix("cuda:").ok_or_else(err)?;
            DeviceRequest {
                kind: DeviceKind::Cuda,
                ordinal: n.parse().map_err(|_| err())?,
            }
        }
    })
}

/// Parses one `DTYPES` entry.
pub fn parse_dtype(value: &str) -> Result<DType, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    let v = match v.as_str() {
        "float32" => "fp32",
        "float16" | "half" => "fp16",
        "bfloat16" => "bf16",
        other => other,
    };
    DType::ALL
        .into_iter()
        .find(|d| d.as_str() == v)
        .ok_or_else(|| {
            let all: Vec<&str> = DType::ALL.iter().map(|d| d.as_str()).collect();
            bad(
                "DTYPES",
                value,
                &format!("each entry must be one of {}", all.join(", ")),
            )
        })
}

/// Splits a `;`-list, dropping empty entries as the seed worker does.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Splits a per-model list, defaulting every entry and checking its length.
fn per_model(var: &str, value: &str, n: usize, default: &str) -> Result<Vec<String>, ConfigError> {
    let items = split_list(value);
    if items.is_empty() {
        return Ok(vec![default.to_string(); n]);
    }
    if items.len() != n {
        return Err(bad(
            var,
            value,
            &format!(
                "must have the same number of ';'-separated entries as MODEL_NAMES ({n}), found {}",
                items.len()
            ),
        ));
    }
    Ok(items)
}

impl RawSettings {
    /// Merges defaults, the TOML file (`EMBER_CONFIG` or `config/default.toml` if present)
    /// and the environment.
    pub fn load() -> Result<RawSettings, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(RawSettings::default()));
        let file = std::env::var_os("EMBER_CONFIG").map(PathBuf::from);
        match &file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError(format!(
                    "invalid EMBER_CONFIG={:?}: no such file",
                    path.display()
                )))
            }
            Some(path) => fig = fig.merge(Toml::file(path)),
            None => fig = fig.merge(Toml::file("config/default.toml")),
        }
        // Environment values are taken as strings; parsing and range checks happen below.
        let env = Env::raw()
            .only(ENV_KEYS)
            .map(|k| k.as_str().to_lowercase().into());
        fig.merge(env)
            .extract::<RawSettings>()
            .map_err(|e| ConfigError(format!("invalid configuration: {e}")))
    }

    /// Validates every value.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let names = split_list(&self.model_names);
        if names.is_empty() {
            return Err(ConfigError(
                "missing MODEL_NAMES: set it to one or more Hugging Face model ids or local \
                 directories, separated by ';' (for example MODEL_NAMES=BAAI/bge-small-en-v1.5)"
                    .into(),
            ));
        }
        let n = names.len();
        let batch_sizes = per_model("BATCH_SIZES", &self.batch_sizes, n, "32")?;
        let dtypes = per_model("DTYPES", &self.dtypes, n, "auto")?;
        let prompts = per_model("PROMPT_NAMES", &self.prompt_names, n, "-")?;
        let mut models = Vec::with_capacity(n);
        for (((name, bs), dt), prompt) in
            names.into_iter().zip(batch_sizes).zip(dtypes).zip(prompts)
        {
            let batch_size = match bs.parse::<u32>() {
                Ok(v) if (1..=4096).contains(&v) => v,
                _ => {
                    return Err(bad(
                        "BATCH_SIZES",
                        &self.batch_sizes,
                        "each entry must be an integer from 1 to 4096",
                    ))
                }
            };
            let dtype = parse_dtype(&dt).map_err(|_| {
                let all: Vec<&str> = DType::ALL.iter().map(|d| d.as_str()).collect();
                bad(
                    "DTYPES",
                    &self.dtypes,
                    &format!("each entry must be one of {}", all.join(", ")),
                )
            })?;
            models.push(ModelSettings {
                name,
                batch_size,
                dtype,
                prompt_name: (prompt != "-").then_some(prompt),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for m in &models {
            if !seen.insert(m.name.as_str()) {
                return Err(bad(
                    "MODEL_NAMES",
                    &self.model_names,
                    &format!("{} appears twice; every model must be unique", m.name),
                ));
            }
        }
        let backend = self.backend.trim().to_ascii_lowercase();
        if backend.is_empty()
            || !backend
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "BACKEND",
                &self.backend,
                "expected a plugin name such as torch, optimum or ctranslate2",
            ));
        }
        let port: u16 = match self.port.trim().parse() {
            Ok(p) => p,
            Err(_) => return Err(bad("PORT", &self.port, "expected a port number 0-65535")),
        };
        Ok(Settings {
            models,
            backend,
            device: parse_device(&self.device)?,
            queue_size: parse_num("INFINITY_QUEUE_SIZE", &self.infinity_queue_size, 1usize)?,
            runpod_max_concurrency: parse_num(
                "RUNPOD_MAX_CONCURRENCY",
                &self.runpod_max_concurrency,
                1usize,
            )?,
            host: self.host.trim().to_string(),
            port,
            plugin_dir: Some(self.plugin_dir.trim())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            max_batch_tokens: parse_num("MAX_BATCH_TOKENS", &self.max_batch_tokens, 1usize)?,
            intra_op_threads: parse_num("INTRA_OP_THREADS", &self.intra_op_threads, 0u32)?,
            max_request_bytes: parse_num("MAX_REQUEST_BYTES", &self.max_request_bytes, 1024usize)?,
            max_items_per_request: parse_num(
                "MAX_ITEMS_PER_REQUEST",
                &self.max_items_per_request,
                1usize,
            )?,
            api_key: Some(self.api_key.trim().to_string()).filter(|k| !k.is_empty()),
            images: self.image_settings()?,
            server: ServerLimits {
                header_timeout: parse_seconds("HTTP_HEADER_TIMEOUT", &self.http_header_timeout)?,
                body_timeout: parse_seconds("HTTP_BODY_TIMEOUT", &self.http_body_timeout)?,
                keepalive_timeout: parse_seconds(
                    "HTTP_KEEPALIVE_TIMEOUT",
                    &self.http_keepalive_timeout,
                )?,
                max_connections: parse_num("HTTP_MAX_CONNECTIONS", &self.http_max_connections, 1)?,
                body_budget_bytes: parse_num(
                    "HTTP_BODY_BUDGET_BYTES",
                    &self.http_body_budget_bytes,
                    1024,
                )?,
            },
            jobs: JobLimits {
                max_waiting: parse_num("JOBS_MAX_WAITING", &self.jobs_max_waiting, 1)?,
                max_waiting_bytes: parse_num(
                    "JOBS_MAX_WAITING_BYTES",
                    &self.jobs_max_waiting_bytes,
                    1024,
                )?,
                max_retained_bytes: parse_num(
                    "JOBS_MAX_RETAINED_BYTES",
                    &self.jobs_max_retained_bytes,
                    0,
                )?,
            },
        })
    }

    fn image_settings(&self) -> Result<ImageSettings, ConfigError> {
        let timeout = parse_seconds("HTTP_CLIENT_TIMEOUT", &self.http_client_timeout)?;
        let max_aspect_ratio = match self.image_max_aspect_ratio.trim().parse::<f64>() {
            Ok(r) if r >= 1.0 && r.is_finite() => r,
            _ => {
                return Err(bad(
                    "IMAGE_MAX_ASPECT_RATIO",
                    &self.image_max_aspect_ratio,
                    "expected a number >= 1",
                ))
            }
        };
        let decode_concurrency = match parse_num(
            "IMAGE_DECODE_CONCURRENCY",
            &self.image_decode_concurrency,
            0usize,
        )? {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let ua = self.http_client_user_agent.trim();
        Ok(ImageSettings {
            user_agent: if ua.is_empty() {
                DEFAULT_USER_AGENT.to_string()
            } else {
                ua.to_string()
            },
            timeout,
            max_connections: parse_num(
                "HTTP_CLIENT_MAX_CONNECTIONS",
                &self.http_client_max_connections,
                1usize,
            )?,
            max_keepalive: parse_num(
                "HTTP_CLIENT_MAX_KEEPALIVE_CONNECTIONS",
                &self.http_client_max_keepalive_connections,
                0usize,
            )?,
            max_bytes: parse_num("IMAGE_MAX_BYTES", &self.image_max_bytes, 1024usize)?,
            max_pixels: parse_num("IMAGE_MAX_PIXELS", &self.image_max_pixels, 64u64)?,
            max_redirects: parse_num("IMAGE_MAX_REDIRECTS", &self.image_max_redirects, 0usize)?,
            allow_private: parse_bool("IMAGE_ALLOW_PRIVATE_URLS", &self.image_allow_private_urls)?,
            max_aspect_ratio,
            decode_concurrency,
            decode_budget_bytes: parse_num(
                "IMAGE_DECODE_BUDGET_BYTES",
                &self.image_decode_budget_bytes,
                1u64 << 20,
            )?,
            downloads_per_request: parse_num(
                "IMAGE_DOWNLOADS_PER_REQUEST",
                &self.image_downloads_per_request,
                1usize,
            )?,
            queue_bytes: parse_num("IMAGE_QUEUE_BYTES", &self.image_queue_bytes, 1u64 << 20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(models: &str) -> RawSettings {
        RawSettings {
            model_names: models.into(),
            ..RawSettings::default()
        }
    }

    #[test]
    fn defaults_follow_the_seed_worker() {
        let s = raw("a/b").validate().unwrap();
        assert_eq!(s.backend, "torch");
        assert_eq!(s.queue_size, 48000);
        assert_eq!(s.runpod_max_concurrency, 300);
        assert_eq!(s.models[0].batch_size, 32);
        assert_eq!(s.models[0].dtype, DType::Auto);
        assert_eq!(s.device.kind, DeviceKind::Auto);
    }

    #[test]
    fn prompt_names_are_per_model_with_a_dash_for_the_models_own() {
        let mut r = raw("a;b");
        assert_eq!(r.validate().unwrap().models[0].prompt_name, None);
        r.prompt_names = "query;-".into();
        let s = r.validate().unwrap();
        assert_eq!(s.models[0].prompt_name.as_deref(), Some("query"));
        assert_eq!(s.models[1].prompt_name, None);
        r.prompt_names = "query".into();
        let e = r.validate().unwrap_err().0;
        assert!(
            e.contains("PROMPT_NAMES") && e.contains("MODEL_NAMES (2)"),
            "{e}"
        );
    }

    #[test]
    fn per_model_lists_must_match_model_names() {
        let mut r = raw("a;b");
        r.batch_sizes = "8;16;".into();
        let s = r.validate().unwrap();
        assert_eq!(s.models[1].batch_size, 16);
        r.batch_sizes = "8".into();
        let e = r.validate().unwrap_err().0;
        assert!(
            e.contains("BATCH_SIZES") && e.contains("MODEL_NAMES (2)"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_variable_value_and_allowed() {
        let mut r = raw("a");
        r.dtypes = "fp64".into();
        let e = r.validate().unwrap_err().0;
        assert!(e.contains("DTYPES=\"fp64\"") && e.contains("fp16"), "{e}");
        let mut r = raw("a");
        r.device = "gpu".into();
        assert!(r.validate().unwrap_err().0.contains("cuda:N"));
        let mut r = raw("a");
        r.infinity_queue_size = "0".into();
        assert!(r.validate().unwrap_err().0.contains("INFINITY_QUEUE_SIZE"));
        assert!(raw("")
            .validate()
            .unwrap_err()
            .0
            .contains("missing MODEL_NAMES"));
        assert!(raw("a;a").validate().unwrap_err().0.contains("twice"));
    }

    #[test]
    fn toml_numbers_and_lists_are_read_as_written() {
        let fig = Figment::from(Serialized::defaults(RawSettings::default())).merge(Toml::string(
            "model_names = [\"a/b\", \"c/d\"]\nbatch_sizes = [8, 16]\nport = 9000\n",
        ));
        let s = fig.extract::<RawSettings>().unwrap().validate().unwrap();
        assert_eq!(s.models.len(), 2);
        assert_eq!(s.models[1].batch_size, 16);
        assert_eq!(s.port, 9000);
    }

    #[test]
    fn image_settings_follow_the_seed_worker() {
        let s = raw("a").validate().unwrap().images;
        assert!(s.user_agent.contains("Chrome/120"));
        assert_eq!(s.timeout, std::time::Duration::from_secs(10));
        assert_eq!((s.max_connections, s.max_keepalive), (50, 20));
        assert!(!s.allow_private);
        let mut r = raw("a");
        r.http_client_timeout = "soon".into();
        assert!(r.validate().unwrap_err().0.contains("HTTP_CLIENT_TIMEOUT"));
        let mut r = raw("a");
        r.image_allow_private_urls = "maybe".into();
        assert!(r
            .validate()
            .unwrap_err()
            .0
            .contains("IMAGE_ALLOW_PRIVATE_URLS"));
        r.image_allow_private_urls = "TRUE".into();
        assert!(r.validate().unwrap().images.allow_private);
    }

    #[test]
    fn device_forms() {
        assert_eq!(parse_device("cuda:2").unwrap().ordinal, 2);
        assert_eq!(parse_device("CPU").unwrap().kind, DeviceKind::Cpu);
        assert!(parse_device("cuda:x").is_err());
    }
}
