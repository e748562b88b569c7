//! A fake RunPod platform: hands out jobs on job-take (single and batch), records every
//! job-done post and ping, and can answer 429 or 5xx or drop connections, so that the real
//! binary's worker loop can be driven and checked.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

/// The panic message that makes a handler drop its connection (and is not printed).
const DROP: &str = "fake platform: dropping the connection";

/// The worker's `RUNPOD_POD_ID`: the platform answers 404 to a URL naming any other worker
/// (as it does to a `$RUNPOD_POD_ID` left unsubstituted), and records the names it saw.
pub const POD_ID: &str = "worker-1";

/// One job-done request as the platform saw it.
#[derive(Debug, Clone)]
pub struct Post {
    /// Job id from the URL.
    pub job_id: String,
    /// Status answered (0 when the connection was dropped).
    pub answered: u16,
    /// Raw body.
    pub body: String,
    /// Query string.
    pub query: String,
    /// Request headers.
    pub headers: HashMap<String, String>,
}

/// What the platform does wrong, and when.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Job-takes (1-based, in arrival order) answered 429.
    pub take_429: Vec<usize>,
    /// Job-takes answered 500.
    pub take_500: Vec<usize>,
    /// Job-takes whose connection is dropped.
    pub take_drop: Vec<usize>,
    /// Jobs whose first done post is answered 500.
    pub post_500_first: HashSet<String>,
    /// Jobs whose first done post has its connection dropped.
    pub post_drop_first: HashSet<String>,
    /// Jobs whose done posts are always answered 500.
    pub post_500_always: HashSet<String>,
    /// Delay before answering each done post.
    pub post_delay: Duration,
}

#[derive(Default)]
struct Books {
    queue: VecDeque<Value>,
    handed_out: Vec<String>,
    posts: Vec<Post>,
    pings: Vec<String>,
    takes: Vec<String>,
    succeeded: HashSet<String>,
    strangers: Vec<String>,
}

struct Platform {
    books: Mutex<Books>,
    faults: Faults,
    take_count: AtomicUsize,
    max_outstanding: AtomicUsize,
}

impl Platform {
    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `worker` is this platform's worker; records it otherwise.
fn known(p: &Platform, worker: &str) -> bool {
    if worker == POD_ID {
        return true;
    }
    p.books().strangers.push(worker.to_string());
    false
}

fn query_string(q: &HashMap<String, String>) -> String {
    let mut parts: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.sort();
    parts.join("&")
}

async fn take(
    State(p): State<Arc<Platform>>,
    Path(worker): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    batch: bool,
) -> Response {
    if !known(&p, &worker) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let n = p.take_count.fetch_add(1, Ordering::SeqCst) + 1;
    p.books().takes.push(query_string(&q));
    if p.faults.take_429.contains(&n) {
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    if p.faults.take_500.contains(&n) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if p.faults.take_drop.contains(&n) {
        std::panic::panic_any(DROP);
    }
    let want = if batch {
        q.get("batch_size")
            .and_then(|b| b.parse().ok())
            .unwrap_or(1)
    } else {
        1
    };
    let mut books = p.books();
    let mut jobs = Vec::new();
    while jobs.len() < want {
        let Some(job) = books.queue.pop_front() else {
            break;
        };
        books
            .handed_out
            .push(job["id"].as_str().unwrap_or_default().to_string());
        jobs.push(job);
    }
    let outstanding = books.handed_out.len() - books.succeeded.len();
    p.max_outstanding.fetch_max(outstanding, Ordering::SeqCst);
    drop(books);
    match (jobs.len(), batch) {
        (0, _) => StatusCode::NO_CONTENT.into_response(),
        (_, true) => Json(Value::Array(jobs)).into_response(),
        (_, false) => Json(jobs.remove(0)).into_response(),
    }
}

async fn done(
    State(p): State<Arc<Platform>>,
    Path((worker, job_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !known(&p, &worker) {
        return StatusCode::NOT_FOUND.into_response();
    }
    tokio::time::sleep(p.faults.post_delay).await;
    let attempt = p
        .books()
        .posts
        .iter()
        .filter(|x| x.job_id == job_id)
        .count()
        + 1;
    let mut post = Post {
        job_id: job_id.clone(),
        answered: 200,
        body,
        query: query_string(&q),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
    };
    let f = &p.faults;
    if f.post_500_always.contains(&job_id) || (attempt == 1 && f.post_500_first.contains(&job_id)) {
        post.answered = 500;
    } else if attempt == 1 && f.post_drop_first.contains(&job_id) {
        post.answered = 0;
        p.books().posts.push(post);
        std::panic::panic_any(DROP);
    }
    let status = post.answered;
    let mut books = p.books();
    if status == 200 {
        books.succeeded.insert(job_id);
    }
    books.posts.push(post);
    StatusCode::from_u16(status).unwrap().into_response()
}

async fn ping(
    State(p): State<Arc<Platform>>,
    Path(worker): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> StatusCode {
    if !known(&p, &worker) {
        return StatusCode::NOT_FOUND;
    }
    p.books().pings.push(query_string(&q));
    StatusCode::OK
}

/// A running fake platform.
pub struct FakePlatform {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    platform: Arc<Platform>,
    _runtime: tokio::runtime::Runtime,
}

impl FakePlatform {
    /// Starts the platform with `jobs` queued.
    pub fn start(jobs: Vec<Value>, faults: Faults) -> FakePlatform {
        static QUIET: Once = Once::new();
        QUIET.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if info.payload().downcast_ref::<&str>() != Some(&DROP) {
                    previous(info);
                }
            }));
        });
        let platform = Arc::new(Platform {
            books: Mutex::new(Books {
                queue: jobs.into(),
                ..Books::default()
            }),
            faults,
            take_count: AtomicUsize::new(0),
            max_outstanding: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route(
                "/v2/ep/job-take/{worker}",
                get(
                    |s: State<Arc<Platform>>,
                     w: Path<String>,
                     q: Query<HashMap<String, String>>| take(s, w, q, false),
                ),
            )
            .route(
                "/v2/ep/job-take-batch/{worker}",
                get(
                    |s: State<Arc<Platform>>,
                     w: Path<String>,
                     q: Query<HashMap<String, String>>| take(s, w, q, true),
                ),
            )
            .route("/v2/ep/job-done/{worker}/{job}", post(done))
            .route("/v2/ep/ping/{worker}", get(ping))
            .with_state(platform.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        FakePlatform {
            url,
            platform,
            _runtime: runtime,
        }
    }

    /// The environment that makes `ember` a worker of this platform.
    pub fn worker_env(&self, concurrency: usize) -> Vec<(String, String)> {
        let u = &self.url;
        vec![
            (
                "RUNPOD_WEBHOOK_GET_JOB".into(),
                format!("{u}/v2/ep/job-take/$RUNPOD_POD_ID?gpu=test"),
            ),
            (
                "RUNPOD_WEBHOOK_POST_OUTPUT".into(),
                format!("{u}/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=test"),
            ),
            (
                "RUNPOD_WEBHOOK_PING".into(),
                format!("{u}/v2/ep/ping/$RUNPOD_POD_ID?gpu=test"),
            ),
            ("RUNPOD_PING_INTERVAL".into(), "300".into()),
            ("RUNPOD_POD_ID".into(), POD_ID.into()),
            ("RUNPOD_AI_API_KEY".into(), "platform-secret".into()),
            ("RUNPOD_ENDPOINT_ID".into(), "ep".into()),
            ("RUNPOD_MAX_CONCURRENCY".into(), concurrency.to_string()),
        ]
    }

    /// Every done post so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        self.platform.books().posts.clone()
    }

    /// Ids of the jobs handed out so far.
    pub fn handed_out(&self) -> Vec<String> {
        self.platform.books().handed_out.clone()
    }

    /// Jobs still queued.
    pub fn queued(&self) -> usize {
        self.platform.books().queue.len()
    }

    /// Query strings of the pings.
    pub fn pings(&self) -> Vec<String> {
        self.platform.books().pings.clone()
    }

    /// Worker names in URLs that were not `POD_ID`, in arrival order.
    pub fn strangers(&self) -> Vec<String> {
        self.platform.books().strangers.clone()
    }

    /// Query strings of the job-takes.
    pub fn takes(&self) -> Vec<String> {
        self.platform.books().takes.clone()
    }

    /// Ids with a successful done post.
    pub fn succeeded(&self) -> HashSet<String> {
        self.platform.books().succeeded.clone()
    }

    /// Most jobs handed out and not yet successfully posted at any time.
    pub fn max_outstanding(&self) -> usize {
        self.platform.max_outstanding.load(Ordering::SeqCst)
    }

    /// Waits until `n` jobs have a successful post, or `timeout` passes.
    pub fn wait_for_posts(&self, n: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.succeeded().len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}
