//! Resolving a `MODEL_NAMES` entry to a local directory holding the files ember needs.
//!
//! A local directory is used as it is. Anything else is a Hugging Face model id, fetched with
//! hf-hub into the cache under `HF_HOME` (`HF_ENDPOINT` and `HF_TOKEN` are honoured), reading
//! only the configuration files the host uses and the weight files the backend selects.
//! With `HF_HUB_OFFLINE=1` only the cache is used.

use super::{multi_vector, ModelError};
use crate::plugin::Plugin;
use ember_plugin_api::safetensors::weight_files;
use ember_plugin_api::DType;
use hf_hub::api::tokio::{ApiBuilder, ApiRepo, Progress};
use hf_hub::{Cache, CacheRepo, Repo, RepoType};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A model on local disk with the files the backend will read.
#[derive(Debug, Clone)]
pub struct LocalModel {
    /// Directory in the repository layout (a hub snapshot or the configured directory).
    pub dir: PathBuf,
    /// Files the backend selected, relative to `dir`.
    pub backend_files: Vec<String>,
}

/// Configuration files the host reads, when the repository has them.
const HOST_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "preprocessor_config.json",
    // bge-m3's lexical and multi-vector heads (FlagEmbedding's layout).
    "sparse_linear.pt",
    "colbert_linear.pt",
    // Stanford ColBERT's settings.
    "artifact.metadata",
];

/// Whether a repository file is one the host reads (including `N_Pooling/config.json` and
/// the weights of `N_Dense` modules, which the host applies itself).
fn host_reads(file: &str) -> bool {
    if HOST_FILES.contains(&file) {
        return true;
    }
    // sentence-transformers module folders: 1_Pooling/config.json, 2_Dense/..., 3_Normalize/...
    let Some((dir, name)) = file.split_once('/') else {
        return false;
    };
    let Some((n, module)) = dir.split_once('_') else {
        return false;
    };
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    name == "config.json" || (module == "Dense" && name == "model.safetensors")
}

/// Lists the files under `dir`, relative and with `/` separators, three levels deep.
fn list_dir(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 3 {
                walk(root, &p, depth + 1, out);
            } else if p.is_file() {
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, 0, &mut out);
    out.sort();
    out
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn check_id(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.split('/').count() <= 2
        && name.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(ModelError::BadName {
            name: name.into(),
            reason: "not a local directory, and not a Hugging Face id (owner/name)".into(),
        })
    }
}

/// A model already on disk in `dir`, with the files the backend selects from its listing.
fn on_disk(
    name: &str,
    plugin: &Plugin,
    dir: PathBuf,
    dtype: DType,
) -> Result<LocalModel, ModelError> {
    let backend_files = select(name, plugin, &list_dir(&dir), dtype)?;
    Ok(LocalModel { dir, backend_files })
}

fn select(
    name: &str,
    plugin: &Plugin,
    listing: &[String],
    dtype: DType,
) -> Result<Vec<String>, ModelError> {
    plugin
        .select_files(listing, dtype)
        .map_err(|e| ModelError::Backend {
            name: name.into(),
            reason: format!("backend {}: {}", plugin.info.name, e.message),
        })
}

/// Resolves `name` to a local model, downloading what is missing.
pub async fn resolve(name: &str, plugin: &Plugin, dtype: DType) -> Result<LocalModel, ModelError> {
    let as_dir = Path::new(name);
    if as_dir.is_dir() {
        return on_disk(name, plugin, as_dir.to_path_buf(), dtype);
    }
    check_id(name)?;
    let cache = Cache::from_env();
    let repo = Repo::new(name.to_string(), RepoType::Model);
    let cached_dir = cache
        .repo(repo.clone())
        .get("config.json")
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if offline() {
        let dir = cached_dir.ok_or_else(|| ModelError::NotCached {
            name: name.into(),
            cache: cache.path().display().to_string(),
        })?;
        return on_disk(name, plugin, dir, dtype);
    }
    match (download(name, plugin, dtype, cache, repo).await, cached_dir) {
        // The hub is unreachable but an earlier download is cached: serve that, loudly.
        (Err(ModelError::Download { reason, .. }), Some(dir)) => {
            tracing::warn!(
                model = name,
                error = reason,
                dir = %dir.display(),
                "download failed; using the cached copy"
            );
            on_disk(name, plugin, dir, dtype)
        }
        (result, _) => result,
    }
}

/// Logs download progress at most every 10% of a file.
#[derive(Clone)]
struct LogProgress {
    file: Arc<std::sync::Mutex<String>>,
    total: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    logged_decile: Arc<AtomicUsize>,
}

impl Progress for LogProgress {
    async fn init(&mut self, size: usize, filename: &str) {
        if let Ok(mut f) = self.file.lock() {
            *f = filename.to_string();
        }
        self.total.store(size, Ordering::Relaxed);
        tracing::info!(file = filename, bytes = size, "downloading");
    }

    async fn update(&mut self, size: usize) {
        let done = self.done.fetch_add(size, Ordering::Relaxed) + size;
        let total = self.total.load(Ordering::Relaxed).max(1);
        let decile = done * 10 / total;
        if decile > self.logged_decile.fetch_max(decile, Ordering::Relaxed) && decile < 10 {
            let file = self.file.lock().map(|f| f.clone()).unwrap_or_default();
            tracing::info!(file, "downloaded {}%", decile * 10);
        }
    }

    async fn finish(&mut self) {
        let file = self.file.lock().map(|f| f.clone()).unwrap_or_default();
        tracing::info!(
            file,
            bytes = self.total.load(Ordering::Relaxed),
            "download complete"
        );
    }
}

async fn download(
    name: &str,
    plugin: &Plugin,
    dtype: DType,
    cache: Cache,
    repo: Repo,
) -> Result<LocalModel, ModelError> {
    let failed = |reason: String| ModelError::Download {
        name: name.into(),
        reason,
    };
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        if !token.trim().is_empty() {
            builder = builder.with_token(Some(token.trim().to_string()));
        }
    }
    let api = builder.build().map_err(|e| failed(e.to_string()))?;
    let remote = api.repo(repo.clone());
    let info = remote
        .info()
        .await
        .map_err(|e| failed(format!("repository info: {e}")))?;
    let listing: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let backend_files = select(name, plugin, &listing, dtype)?;
    let wanted: Vec<String> = listing
        .iter()
        .filter(|f| host_reads(f) || backend_files.contains(f))
        .cloned()
        .collect();
    tracing::info!(
        model = name,
        revision = info.sha,
        files = wanted.len(),
        "fetching model files"
    );
    let local = cache.repo(repo);
    let mut dir = None;
    fetch(&remote, &local, &wanted, &mut dir, &failed).await?;
    // A Stanford ColBERT checkpoint (HF_ColBERT, no sentence-transformers pipeline) keeps the
    // projection the host applies among its own weights, which a backend running an export
    // does not select.
    let stanford = !listing.iter().any(|f| f == "modules.json")
        && dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("config.json")).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .is_some_and(|c| multi_vector::is_stanford(&c));
    if stanford {
        let weights: Vec<String> = weight_files(&listing)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| !wanted.contains(f))
            .collect();
        fetch(&remote, &local, &weights, &mut dir, &failed).await?;
    }
    let dir = dir.ok_or_else(|| failed("the repository has no files ember can use".into()))?;
    Ok(LocalModel { dir, backend_files })
}

/// Downloads `files` into the cache unless they are there, setting `dir` to the snapshot's
/// root once known.
async fn fetch(
    remote: &ApiRepo,
    local: &CacheRepo,
    files: &[String],
    dir: &mut Option<PathBuf>,
    failed: &impl Fn(String) -> ModelError,
) -> Result<(), ModelError> {
    for file in files {
        let path = match local.get(file) {
            Some(p) => p,
            None => {
                let progress = LogProgress {
                    file: Arc::default(),
                    total: Arc::default(),
                    done: Arc::default(),
                    logged_decile: Arc::default(),
                };
                remote
                    .download_with_progress(file, progress)
                    .await
                    .map_err(|e| failed(format!("{file}: {e}")))?
            }
        };
        if dir.is_none() {
            // `file` may sit in a subfolder; the snapshot root is that many levels up.
            let depth = file.matches('/').count() + 1;
            *dir = path.ancestors().nth(depth).map(Path::to_path_buf);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_file_filter() {
        assert!(host_reads("config.json"));
        assert!(host_reads("1_Pooling/config.json"));
        assert!(host_reads("2_Dense/config.json"));
        assert!(host_reads("2_Dense/model.safetensors"));
        assert!(!host_reads("0_Transformer/model.safetensors"));
        assert!(!host_reads("onnx/config.json"));
        assert!(!host_reads("model.safetensors"));
        assert!(!host_reads("pytorch_model.bin"));
    }

    #[test]
    fn hub_ids_are_checked() {
        assert!(check_id("BAAI/bge-small-en-v1.5").is_ok());
        assert!(check_id("gpt2").is_ok());
        assert!(check_id("../etc").is_err());
        assert!(check_id("a/b/c").is_err());
        assert!(check_id("").is_err());
    }
}
