//! The hf-hub download path, against a local server that serves a fixture model in the
//! Hugging Face hub's URL layout (repository info, `resolve` with ranges, etag and commit
//! headers).

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ember_e2e::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

struct Hub {
    root: PathBuf,
    files: Vec<String>,
    fetched: Mutex<Vec<String>>,
}

async fn info(
    State(hub): State<Arc<Hub>>,
    UrlPath((_o, _n, _r)): UrlPath<(String, String, String)>,
) -> Response {
    let siblings: Vec<_> = hub.files.iter().map(|f| json!({"rfilename": f})).collect();
    Json(json!({"sha": SHA, "siblings": siblings})).into_response()
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    UrlPath((_o, _n, _r, path)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(bytes) = std::fs::read(hub.root.join(&path)) else {
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
        hub.fetched.lock().unwrap().push(path.clone());
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

fn list(root: &std::path::Path) -> Vec<String> {
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

#[test]
fn downloads_only_needed_files_through_hf_endpoint_then_serves_from_cache_without_the_hub() {
    let root = fixture("tiny-bert-cls");
    let hub = Arc::new(Hub {
        files: list(&root),
        root,
        fetched: Mutex::new(Vec::new()),
    });
    assert!(hub.files.iter().any(|f| f == "model.safetensors"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/api/models/{owner}/{name}/revision/{rev}", get(info))
        .route("/{owner}/{name}/resolve/{rev}/{*path}", get(resolve))
        .with_state(hub.clone());
    let server_task = rt.spawn(async move { axum::serve(listener, app).await });

    let home = std::env::temp_dir().join(format!("ember-hf-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let home_s = home.display().to_string();
    let base = [
        ("MODEL_NAMES", "test-org/tiny-bert-cls"),
        ("BACKEND", "optimum"),
        ("DEVICE", "cpu"),
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    let mut online = base.to_vec();
    online.push(("HF_HUB_OFFLINE", "0"));
    let server = Server::start(&online);
    assert!(
        server.log.iter().any(|l| l.contains("downloading")),
        "download progress is logged"
    );
    let reference = reference("tiny-bert-cls");
    let (status, body) = server.post("/v1/embeddings", &json!({"input": reference["texts"][0]}));
    assert_eq!(status, 200, "{body}");
    let expected: Vec<f32> = serde_json::from_value(reference["embeddings"][0].clone()).unwrap();
    assert!(cosine(&vectors(&body)[0], &expected) > 0.9999);
    assert_eq!(body["model"], "test-org/tiny-bert-cls");
    drop(server);

    let mut fetched = hub.fetched.lock().unwrap().clone();
    fetched.sort();
    for needed in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "onnx/model.onnx",
    ] {
        assert!(
            fetched.iter().any(|f| f == needed),
            "{needed} not fetched: {fetched:?}"
        );
    }
    for unwanted in [
        "model.safetensors",
        "reference.json",
        "vocab.txt",
        "README.md",
    ] {
        assert!(
            !fetched.iter().any(|f| f == unwanted),
            "{unwanted} fetched needlessly: {fetched:?}"
        );
    }

    // The hub goes away; with HF_HUB_OFFLINE=1 the cache alone serves the model.
    server_task.abort();
    drop(rt);
    // Online but the hub is unreachable: the cached copy serves, with a warning.
    let server = Server::start(&online);
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("using the cached copy")),
        "falling back to the cache is logged"
    );
    let (status, _) = server.post("/v1/embeddings", &json!({"input": "cached"}));
    assert_eq!(status, 200);
    drop(server);

    let mut offline = base.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    let server = Server::start(&offline);
    let (status, body) = server.post("/v1/embeddings", &json!({"input": reference["texts"][0]}));
    assert_eq!(status, 200, "{body}");
    assert!(cosine(&vectors(&body)[0], &expected) > 0.9999);
    drop(server);

    // Offline with a model that is not cached: a clear start-up error.
    let missing = [
        ("MODEL_NAMES", "test-org/not-cached"),
        ("BACKEND", "optimum"),
        ("HF_HOME", home_s.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    match Server::try_start(&missing) {
        Ok(_) => panic!("should fail"),
        Err(f) => assert!(
            f.stderr.contains("test-org/not-cached is not in the cache"),
            "{}",
            f.stderr
        ),
    }
    let _ = std::fs::remove_dir_all(&home);
}
