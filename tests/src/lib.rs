//! Helpers for the end-to-end tests: locating the built binary, plugins and fixtures,
//! starting `ember` as a child process, and comparing vectors with reference outputs.

pub mod hub;
pub mod liar;
pub mod parity;
pub mod platform;
pub mod proxy;

pub use parity::{
    assert_close, assert_parity, assert_rerank_matches_reference, assert_texts_match, assert_unit,
    cosine, decode_base64, embed_texts, matrix, norm, reference_tokens, vectors,
};

use base64::Engine as _;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Directory of the built `ember` binary and plugins (`EMBER_BIN_DIR`, else target/release).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EMBER_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("release")
}

/// Directory of the generated test models (`EMBER_FIXTURES`, else ./fixtures).
pub fn fixtures() -> PathBuf {
    std::env::var_os("EMBER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("fixtures"))
}

/// One fixture model directory, checked to exist.
pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures().join(name);
    assert!(
        p.join("config.json").is_file(),
        "fixture {} missing: run scripts/setup.sh first",
        p.display()
    );
    p
}

/// The reference outputs of a fixture.
pub fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A running `ember` process, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Log lines seen until ready.
    pub log: Vec<String>,
    /// Time from spawn to the ready line.
    pub startup: Duration,
    /// Log lines after the ready line, not yet read.
    later: std::sync::Mutex<mpsc::Receiver<String>>,
}

/// How a start-up ended when it did not become ready.
#[derive(Debug)]
pub struct Failed {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Builds the command for `ember` with a clean environment plus `env`.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin_dir().join("ember"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("HF_HUB_OFFLINE", "1")
        .env("DEVICE", test_device())
        .env("EMBER_CONFIG", repo_root().join("config/default.toml"))
        .current_dir(std::env::temp_dir());
    // What picks native libraries and GPUs passes through: scripts/gpu-test.sh points
    // ORT_DYLIB_PATH at onnxruntime-gpu and LD_LIBRARY_PATH at cuBLAS 12.
    for key in ["LD_LIBRARY_PATH", "ORT_DYLIB_PATH", "CUDA_VISIBLE_DEVICES"] {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    if let Ok(dtypes) = std::env::var("EMBER_TEST_DTYPES") {
        cmd.env("DTYPES", dtypes);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The device tests run models on: `EMBER_TEST_DEVICE` (for example `cuda`), else the CPU.
/// `EMBER_TEST_DTYPES`, when set, is passed on as `DTYPES`.
pub fn test_device() -> String {
    std::env::var("EMBER_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/PID/status` in MiB (`VmHWM`: peak resident memory; `VmRSS`: now).
    pub fn memory_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"));
        kib / 1024.0
    }

    /// Starts `ember` and waits until it listens; panics with its log if it does not.
    pub fn start(env: &[(&str, &str)]) -> Server {
        match Self::try_start(env) {
            Ok(s) => s,
            Err(f) => panic!("ember did not start (exit {:?}):\n{}", f.code, f.stderr),
        }
    }

    /// Starts `ember`; returns its exit code and log if it exits before it is ready.
    pub fn try_start(env: &[(&str, &str)]) -> Result<Server, Failed> {
        Self::start_until(env, &[], "ready")
    }

    /// Starts `ember`, which must refuse to start: it exits with `code` and its stderr
    /// contains each of `needles`.
    pub fn assert_refused(env: &[(&str, &str)], code: i32, needles: &[&str]) {
        match Self::try_start(env) {
            Ok(_) => panic!("ember started but must have been refused"),
            Err(f) => {
                assert_eq!(f.code, Some(code), "{}", f.stderr);
                for n in needles {
                    assert!(
                        f.stderr.contains(n),
                        "stderr should contain {n:?}:\n{}",
                        f.stderr
                    );
                }
            }
        }
    }

    /// Starts `ember` with command-line arguments and waits until it is ready.
    pub fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Server {
        match Self::start_until(env, args, "ready") {
            Ok(s) => s,
            Err(f) => panic!("ember did not start (exit {:?}):\n{}", f.code, f.stderr),
        }
    }

    /// Starts `ember` and returns as soon as its port is open, before its models are ready.
    pub fn start_listening(env: &[(&str, &str)]) -> Server {
        match Self::start_until(env, &[], "listening; loading models") {
            Ok(s) => s,
            Err(f) => panic!("ember did not listen (exit {:?}):\n{}", f.code, f.stderr),
        }
    }

    /// Starts `ember` and waits for the log line `message` that carries its address.
    fn start_until(env: &[(&str, &str)], args: &[&str], message: &str) -> Result<Server, Failed> {
        let started = Instant::now();
        let mut child = command(env)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ember (run scripts/setup.sh to build it)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("EMBER_TEST_ECHO").is_some() {
                    eprintln!("{line}");
                }
                if tx.send(line).is_err() {
                    // Keep draining so the child never blocks on a full pipe.
                    continue;
                }
            }
        });
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let ready = serde_json::from_str::<Value>(&line).ok().and_then(|v| {
                        (v["message"] == message)
                            .then(|| v["addr"].as_str().map(String::from))
                            .flatten()
                    });
                    log.push(line);
                    if let Some(addr) = ready {
                        return Ok(Server {
                            child,
                            url: format!("http://{addr}"),
                            log,
                            startup: started.elapsed(),
                            later: std::sync::Mutex::new(rx),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Collect what remains of its output.
                        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                            log.push(line);
                        }
                        return Err(Failed {
                            code: status.code(),
                            stderr: log.join("\n"),
                        });
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        return Err(Failed {
                            code: None,
                            stderr: log.join("\n"),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    return Err(Failed {
                        code: status.and_then(|s| s.code()),
                        stderr: log.join("\n"),
                    });
                }
            }
        }
    }

    /// POSTs JSON to `path`; returns status and parsed body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = client()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .unwrap();
        read(resp)
    }

    /// Asserts that the server embeds a fixture's reference texts as its reference says
    /// (each text its own vector, at cosine `min_cosine` or more), with the fixture's path
    /// as the model.
    pub fn assert_embeds_reference(&self, fixture_name: &str, min_cosine: f64) {
        let n = reference(fixture_name)["texts"].as_array().unwrap().len();
        let all: Vec<usize> = (0..n).collect();
        self.assert_embeds_reference_of(fixture_name, &all, min_cosine);
    }

    /// [`Server::assert_embeds_reference`] for the reference texts `indices` only, in one
    /// request (for servers whose request limits the whole set would exceed).
    pub fn assert_embeds_reference_of(
        &self,
        fixture_name: &str,
        indices: &[usize],
        min_cosine: f64,
    ) {
        let reference = reference(fixture_name);
        let model = fixture(fixture_name).display().to_string();
        let texts: Vec<&Value> = indices.iter().map(|&i| &reference["texts"][i]).collect();
        let (status, body) = self.post(
            "/v1/embeddings",
            &serde_json::json!({"model": model, "input": texts}),
        );
        assert_eq!(status, 200, "{body}");
        let got = vectors(&body);
        assert_eq!(got.len(), indices.len(), "{body}");
        for (g, &i) in got.iter().zip(indices) {
            let want: Vec<f32> =
                serde_json::from_value(reference["embeddings"][i].clone()).unwrap();
            let c = cosine(g, &want);
            assert!(
                c >= min_cosine,
                "{fixture_name} text {i}: cosine {c} with the reference (< {min_cosine})"
            );
        }
    }

    /// The fields of the server's first "model ready" log line (files, dtype, device, ...).
    pub fn ready_line(&self) -> Value {
        self.log
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "model ready")
            .expect("a model ready line")
    }

    /// GETs `path`; returns status and parsed body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        read(client().get(format!("{}{path}", self.url)).send().unwrap())
    }

    /// Waits up to `timeout` for a log line (after the ready line) matching `pred`.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let rx = self.later.lock().unwrap();
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        self.signal_term();
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client with a generous timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn read(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The environment that serves one fixture with the optimum plugin.
pub fn optimum_env(model: &Path) -> Vec<(String, String)> {
    backend_env("optimum", model)
}

/// The environment that serves one fixture with `backend` (on the test device).
pub fn backend_env(backend: &str, model: &Path) -> Vec<(String, String)> {
    vec![
        ("MODEL_NAMES".into(), model.display().to_string()),
        ("BACKEND".into(), backend.into()),
    ]
}

/// Starts `ember` with `backend` serving the fixtures `models` (`MODEL_NAMES`, in order), with
/// `env` on top.
pub fn serve_fixtures(backend: &str, models: &[&str], env: &[(&str, &str)]) -> Server {
    let names: Vec<String> = models
        .iter()
        .map(|m| fixture(m).display().to_string())
        .collect();
    let joined = names.join(";");
    let mut all = vec![("MODEL_NAMES", joined.as_str()), ("BACKEND", backend)];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// Borrows an owned environment list as `&str` pairs.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A local HTTP server for image URLs: the fixture images, plus routes that misbehave.
/// It records the target of every request, as sent: a path, or a whole URL when the request
/// came through a proxy (whatever host that URL names, this server answers it).
///
/// - `/images/NAME`: a file of `fixtures/images` with the content type of its extension;
/// - `/streamed/NAME`: the same file in 1 KiB chunks, with no declared length;
/// - `/redirect/N`: redirects N times, then to `/images/photo.png`;
/// - `/redirect-to?to=URL`: redirects to URL;
/// - `/slow`: answers after 5 seconds; `/slow/MS`: after MS milliseconds;
/// - `/mislabelled`: an HTML page sent as `image/png`.
pub struct ImageServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

async fn streamed(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(bytes) = std::fs::read(fixtures().join("images").join(&name)) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such image").into_response();
    };
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    ([("content-type", "application/octet-stream")], body).into_response()
}

async fn redirect_to(
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let to = q.get("to").cloned().unwrap_or_default();
    (
        axum::http::StatusCode::FOUND,
        [("location", to)],
        "redirecting",
    )
        .into_response()
}

async fn record_target(
    axum::extract::State(seen): axum::extract::State<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
    request: axum::extract::Request,
) -> axum::extract::Request {
    seen.lock().unwrap().push(request.uri().to_string());
    request
}

async fn image_file(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = fixtures().join("images").join(&name);
    let Ok(bytes) = std::fs::read(&path) else {
        return (axum::http::StatusCode::NOT_FOUND, "no such image").into_response();
    };
    let ct = match name.rsplit('.').next().unwrap_or_default() {
        "png" => "image/png",
        "jpg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "html" => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    };
    ([("content-type", ct)], bytes).into_response()
}

async fn redirect(axum::extract::Path(n): axum::extract::Path<u32>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let to = if n == 0 {
        "/images/photo.png".to_string()
    } else {
        format!("/redirect/{}", n - 1)
    };
    (
        axum::http::StatusCode::FOUND,
        [("location", to)],
        "redirecting",
    )
        .into_response()
}

impl ImageServer {
    /// Starts the server on a loopback port.
    pub fn start() -> ImageServer {
        use axum::routing::get;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let url = format!("http://{addr}");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/images/{name}", get(image_file))
            .route("/streamed/{name}", get(streamed))
            .route("/redirect/{n}", get(redirect))
            .route("/redirect-to", get(redirect_to))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    image_file(axum::extract::Path("photo.png".into())).await
                }),
            )
            .route(
                "/slow/{ms}",
                get(
                    |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        image_file(axum::extract::Path("photo.png".into())).await
                    },
                ),
            )
            .route(
                "/mislabelled",
                get(|| async {
                    (
                        [("content-type", "image/png")],
                        "<!DOCTYPE html><html><body>hello</body></html>",
                    )
                }),
            )
            .layer(axum::middleware::map_request_with_state(
                seen.clone(),
                record_target,
            ));
        runtime.spawn(async move { axum::serve(listener, app).await });
        ImageServer {
            url,
            addr,
            seen,
            _runtime: runtime,
        }
    }

    /// The URL of a fixture image.
    pub fn image(&self, name: &str) -> String {
        format!("{}/images/{name}", self.url)
    }

    /// The URL of a fixture image sent without a declared length.
    pub fn streamed(&self, name: &str) -> String {
        format!("{}/streamed/{name}", self.url)
    }

    /// The target of every request so far (a whole URL for proxied ones), in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A fixture image as a `data:` URI.
pub fn data_uri(name: &str) -> String {
    let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
    let kind = name.rsplit('.').next().unwrap_or("png");
    format!(
        "data:image/{kind};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Asserts an error response: status, and a message containing every one of `needles`.
pub fn assert_error_contains(got: (u16, Value), status: u16, needles: &[&str]) {
    let (code, body) = got;
    assert_eq!(code, status, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(
            message.contains(n),
            "message {message:?} lacks {n:?} (body {body})"
        );
    }
}

/// The Python of the setup's virtual environment (with the pinned reference packages).
pub fn python() -> PathBuf {
    let cache = std::env::var_os("EMBER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ember")
        });
    cache.join("venv/bin/python")
}

/// Runs `script` with the setup's Python and parses what it prints as JSON; its stderr is
/// shown when it fails.
pub fn run_python(script: &str) -> Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("run the setup's python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}
