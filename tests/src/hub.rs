//! A local server in the Hugging Face hub's URL layout (repository info; `resolve` with
//! ranges, etag and commit headers) serving fixture directories under hub ids.

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

struct Repos {
    roots: HashMap<String, PathBuf>,
    fetched: Mutex<Vec<(String, String)>>,
}

/// Every file under `root`, as repository paths.
fn list(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

async fn info(
    State(repos): State<Arc<Repos>>,
    UrlPath((owner, name, _rev)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(root) = repos.roots.get(&format!("{owner}/{name}")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let siblings: Vec<_> = list(root).iter().map(|f| json!({"rfilename": f})).collect();
    Json(json!({"sha": SHA, "siblings": siblings})).into_response()
}

async fn resolve(
    State(repos): State<Arc<Repos>>,
    UrlPath((owner, name, _rev, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{name}");
    let Some(Ok(bytes)) = repos.roots.get(&repo).map(|r| std::fs::read(r.join(&path))) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let size = bytes.len();
    let (start, end) = headers
        .get("range")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().unwrap_or(size - 1);
            (a, b.min(size - 1))
        })
        .unwrap_or((0, size - 1));
    if start == 0 && end >= 1 {
        repos.fetched.lock().unwrap().push((repo, path.clone()));
    }
    let etag = format!("\"etag-{}-{size}\"", path.replace('/', "-"));
    (
        StatusCode::PARTIAL_CONTENT,
        [
            ("etag", etag),
            ("x-repo-commit", SHA.to_string()),
            ("content-range", format!("bytes {start}-{end}/{size}")),
        ],
        bytes[start..=end].to_vec(),
    )
        .into_response()
}

/// A running fake hub; stops when dropped or with [`FakeHub::stop`].
pub struct FakeHub {
    /// The value for `HF_ENDPOINT`.
    pub endpoint: String,
    repos: Arc<Repos>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeHub {
    /// Serves each `(hub id, directory)` pair.
    pub fn start(repos: &[(&str, PathBuf)]) -> FakeHub {
        let repos = Arc::new(Repos {
            roots: repos
                .iter()
                .map(|(id, root)| (id.to_string(), root.clone()))
                .collect(),
            fetched: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/api/models/{owner}/{name}/revision/{rev}", get(info))
            .route("/{owner}/{name}/resolve/{rev}/{*path}", get(resolve))
            .with_state(repos.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        FakeHub {
            endpoint,
            repos,
            runtime: Some(runtime),
        }
    }

    /// Files downloaded (from their first byte) from `repo` so far, sorted.
    pub fn fetched(&self, repo: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .repos
            .fetched
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == repo)
            .map(|(_, p)| p.clone())
            .collect();
        out.sort();
        out
    }

    /// Stops serving: the hub becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}
