//! The RunPod worker loop (when `RUNPOD_WEBHOOK_GET_JOB` is set): take jobs from the platform,
//! run up to `RUNPOD_MAX_CONCURRENCY` at once through the shared engines, post each result, and
//! ping the platform with the ids of the jobs in progress.
//!
//! URL templating follows runpod-python: `$RUNPOD_POD_ID` (and `$RUNPOD_GPU_TYPE_ID`) are
//! replaced in every template at start, `$ID` by the worker id in the job-take template and by
//! the job id in the job-done template; parameters are appended to the templates' query
//! strings. On shutdown no job is taken any more, and every job taken is finished and posted.

use super::router::{self, JobResult};
use crate::api::AppState;
use anyhow::Context;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// The runpod-python version whose wire protocol is spoken (reported in pings).
pub const RUNPOD_SDK_VERSION: &str = "1.12.0";
/// Longest wait for a job-take answer (the platform long-polls).
const TAKE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a job take in flight at shutdown may still take.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts to post one job's result before giving up on it.
const POST_ATTEMPTS: u32 = 6;

/// Where and how to reach the platform, from its environment variables.
#[derive(Debug, Clone)]
pub struct Platform {
    /// Job-take URL, templated.
    pub get_job: String,
    /// Job-done URL template (`$ID` is the job id).
    pub post_output: String,
    /// Heartbeat URL, when pings are configured.
    pub ping: Option<String>,
    /// Time between pings.
    pub ping_interval: Duration,
    /// `Authorization` header value (raw, as the SDK sends it).
    pub api_key: String,
    /// This worker's id (`RUNPOD_POD_ID`).
    pub worker_id: String,
    /// Most jobs running at once.
    pub concurrency: usize,
    /// The HTTP client for the platform (user agent, connect timeout).
    client: reqwest::Client,
}

/// The User-Agent of the platform's client, as the SDK's but naming ember.
fn user_agent() -> String {
    format!(
        "ember/{} (RunPod-Python-SDK/{RUNPOD_SDK_VERSION} compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The HTTP client that talks to the platform, sending `user_agent`; an error says why it
/// cannot be built.
fn platform_client(user_agent: &str) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client of the RunPod worker (RUNPOD_WEBHOOK_GET_JOB)")
}

/// Appends `param` to `url`'s query string.
fn append(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

impl Platform {
    /// Reads the platform's variables and builds the client that talks to it; `None` when not
    /// running as a RunPod worker, an error when the client cannot be built.
    pub fn from_env(concurrency: usize) -> anyhow::Result<Option<Platform>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let Some(get_job) = var("RUNPOD_WEBHOOK_GET_JOB") else {
            return Ok(None);
        };
        let client = platform_client(&user_agent())?;
        let worker_id = var("RUNPOD_POD_ID").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let gpu = var("RUNPOD_GPU_TYPE_ID").unwrap_or_default();
        let fill = |t: String| {
            t.replace("$RUNPOD_POD_ID", &worker_id)
                .replace("$RUNPOD_GPU_TYPE_ID", &gpu)
        };
        let api_key = var("RUNPOD_AI_API_KEY").unwrap_or_default();
        let ping = match (var("RUNPOD_WEBHOOK_PING"), api_key.is_empty()) {
            (Some(p), false) => Some(fill(p)),
            _ => None,
        };
        let ping_ms = var("RUNPOD_PING_INTERVAL")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(10_000)
            .max(100);
        Ok(Some(Platform {
            get_job: fill(get_job).replace("$ID", &worker_id),
            post_output: fill(
                var("RUNPOD_WEBHOOK_POST_OUTPUT").unwrap_or_else(|| "JOB_DONE_URL".into()),
            ),
            ping,
            ping_interval: Duration::from_millis(ping_ms),
            api_key,
            worker_id,
            concurrency,
            client,
        }))
    }

    /// The job-take URL asking for `n` jobs.
    fn take_url(&self, n: usize, in_progress: bool) -> String {
        let base = if n > 1 && self.get_job.contains("/job-take/") {
            append(
                &self.get_job.replace("/job-take/", "/job-take-batch/"),
                &format!("batch_size={n}"),
            )
        } else {
            self.get_job.clone()
        };
        append(&base, &format!("job_in_progress={}", u8::from(in_progress)))
    }

    /// How many jobs one take may ask for.
    fn batch_limit(&self) -> usize {
        if self.get_job.contains("/job-take/") {
            self.concurrency
        } else {
            1
        }
    }
}

/// Ids of the jobs taken and not yet posted.
#[derive(Default)]
struct InFlight(Mutex<BTreeSet<String>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Jobs from one job-take answer (a job object, or a list of them from the batch route).
fn jobs_of(body: Value) -> Vec<Value> {
    match body {
        Value::Array(jobs) => jobs,
        Value::Object(_) => vec![body],
        _ => Vec::new(),
    }
}

struct Worker {
    platform: Platform,
    app: Arc<AppState>,
    client: reqwest::Client,
    in_flight: InFlight,
    slots: Arc<Semaphore>,
}

/// Resolves when shutdown is asked for.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped(stop) => false,
    }
}

impl Worker {
    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header(reqwest::header::AUTHORIZATION, &self.platform.api_key)
    }

    /// One job-take: the jobs handed out, or how long to wait before the next take.
    async fn take(&self, n: usize) -> Result<Vec<Value>, Duration> {
        let in_progress = !self.in_flight.set().is_empty();
        let url = self.platform.take_url(n, in_progress);
        let resp = match tokio::time::timeout(TAKE_TIMEOUT, self.auth(self.client.get(&url)).send())
            .await
        {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "job take failed; retrying");
                return Err(Duration::from_secs(1));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        match status {
            204 | 400 => return Err(Duration::from_millis(200)),
            429 => return Err(Duration::from_secs(5)),
            200..=299 => {}
            _ => {
                tracing::warn!(status, "job take answered an error; retrying");
                return Err(Duration::from_secs(1));
            }
        }
        let body = resp.bytes().await.unwrap_or_default();
        if body.is_empty() {
            return Err(Duration::from_millis(200));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => Ok(jobs_of(v)),
            Err(e) => {
                tracing::warn!(error = %e, "job take answered invalid JSON; ignoring it");
                Err(Duration::from_millis(200))
            }
        }
    }

    /// Posts a job's result, retrying server errors and network failures with backoff.
    async fn post(&self, id: &str, result: &JobResult) {
        let url = append(
            &self.platform.post_output.replace("$ID", id),
            "isStream=false",
        );
        let body = result.to_platform().to_string();
        let mut delay = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 1..=POST_ATTEMPTS {
            let req = self
                .auth(self.client.post(&url))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header("charset", "utf-8")
                .header("X-Request-ID", id)
                .body(body.clone());
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(requestId = id, attempt, "job result posted");
                    return;
                }
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    last = format!("HTTP {}", r.status());
                }
                Ok(r) => {
                    tracing::error!(
                        requestId = id,
                        status = r.status().as_u16(),
                        "the platform refused the job's result; it is not retried"
                    );
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            tracing::warn!(
                requestId = id,
                attempt,
                error = last,
                "posting the job's result failed"
            );
            if attempt < POST_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
        tracing::error!(
            requestId = id,
            attempts = POST_ATTEMPTS,
            error = last,
            "could not post the job's result; the job is lost"
        );
    }

    async fn process(self: Arc<Self>, job: Value, _slot: tokio::sync::OwnedSemaphorePermit) {
        let Some(id) = job.get("id").and_then(Value::as_str).map(String::from) else {
            tracing::error!(job = %job.to_string().chars().take(500).collect::<String>(),
                "the platform handed out a job without an id; it cannot be answered");
            return;
        };
        tracing::info!(requestId = id.as_str(), "job taken");
        let result = match job.get("input") {
            Some(input) => router::run(&self.app, input).await,
            None => JobResult::Failed("Job has missing field(s): id or input.".into()),
        };
        self.post(&id, &result).await;
        self.in_flight.set().remove(&id);
    }

    async fn ping_loop(self: Arc<Self>, url: String, mut done: watch::Receiver<bool>) {
        let interval = self.platform.ping_interval;
        loop {
            let ids: Vec<String> = self.in_flight.set().iter().cloned().collect();
            let mut target = url.clone();
            if !ids.is_empty() {
                target = append(&target, &format!("job_id={}", ids.join(",")));
            }
            target = append(&target, &format!("runpod_version={RUNPOD_SDK_VERSION}"));
            let req = self.auth(self.client.get(&target)).timeout(interval * 2);
            if let Err(e) = req.send().await {
                tracing::debug!(error = %e, "ping failed");
            }
            if !pause(interval, &mut done).await {
                return;
            }
        }
    }
}

/// Takes and runs jobs until `stop` turns true, then finishes and posts every job taken.
pub async fn run(platform: Platform, app: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    tracing::info!(
        worker_id = platform.worker_id.as_str(),
        concurrency = platform.concurrency,
        pings = platform.ping.is_some(),
        "RunPod worker taking jobs"
    );
    let worker = Arc::new(Worker {
        slots: Arc::new(Semaphore::new(platform.concurrency)),
        client: platform.client.clone(),
        platform,
        app,
        in_flight: InFlight::default(),
    });
    let (pings_done, pings_stop) = watch::channel(false);
    let pinger = worker
        .platform
        .ping
        .clone()
        .map(|url| tokio::spawn(worker.clone().ping_loop(url, pings_stop)));
    let mut tasks = tokio::task::JoinSet::new();
    let batch_limit = worker.platform.batch_limit();
    loop {
        if *stop.borrow() {
            break;
        }
        // Wait for a free slot, then ask for as many jobs as there are free slots.
        let first = tokio::select! {
            p = worker.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut stop) => break,
        };
        let free = (worker.slots.available_permits() + 1).min(batch_limit);
        drop(first);
        // A take in flight when shutdown comes is allowed to finish (within a grace period):
        // the platform may already have handed its jobs to this worker.
        let take = worker.take(free);
        tokio::pin!(take);
        let taken = tokio::select! {
            t = &mut take => t,
            _ = stopped(&mut stop) => match tokio::time::timeout(STOP_GRACE, &mut take).await {
                Ok(t) => t,
                Err(_) => {
                    tracing::warn!("shutting down: abandoning a job take still waiting for the platform");
                    break;
                }
            },
        };
        let jobs = match taken {
            Ok(jobs) => jobs,
            Err(wait) => {
                if !pause(wait, &mut stop).await {
                    break;
                }
                continue;
            }
        };
        for job in jobs {
            // The platform hands out at most what was asked for; if it gives more, the
            // extra jobs wait for a slot instead of exceeding the limit.
            let Ok(slot) = worker.slots.clone().acquire_owned().await else {
                break;
            };
            if let Some(id) = job.get("id").and_then(Value::as_str) {
                worker.in_flight.set().insert(id.to_string());
            }
            tasks.spawn(worker.clone().process(job, slot));
        }
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    let pending = tasks.len();
    if pending > 0 {
        tracing::info!(jobs = pending, "shutting down: finishing the jobs taken");
    }
    while tasks.join_next().await.is_some() {}
    let _ = pings_done.send(true);
    if let Some(p) = pinger {
        let _ = p.await;
    }
    tracing::info!("RunPod worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(get_job: &str) -> Platform {
        Platform {
            get_job: get_job.into(),
            post_output: String::new(),
            ping: None,
            ping_interval: Duration::from_secs(10),
            api_key: String::new(),
            worker_id: "w1".into(),
            concurrency: 8,
            client: reqwest::Client::new(),
        }
    }

    #[test]
    fn the_client_is_built_or_start_up_fails_saying_why() {
        assert!(platform_client(&user_agent()).is_ok());
        let e = platform_client("bad\nagent").expect_err("an invalid User-Agent");
        assert!(format!("{e:#}").contains("RunPod worker"), "{e:#}");
    }

    #[test]
    fn take_urls_follow_the_sdk() {
        let p = platform("https://x/v2/e/job-take/w1?gpu=A");
        assert_eq!(
            p.take_url(1, false),
            "https://x/v2/e/job-take/w1?gpu=A&job_in_progress=0"
        );
        assert_eq!(
            p.take_url(3, true),
            "https://x/v2/e/job-take-batch/w1?gpu=A&batch_size=3&job_in_progress=1"
        );
        let p = platform("http://x/next");
        assert_eq!(p.take_url(3, false), "http://x/next?job_in_progress=0");
        assert_eq!(p.batch_limit(), 1);
    }

    #[test]
    fn jobs_come_as_an_object_or_a_list() {
        assert_eq!(jobs_of(serde_json::json!({"id": "a"})).len(), 1);
        assert_eq!(
            jobs_of(serde_json::json!([{"id": "a"}, {"id": "b"}])).len(),
            2
        );
        assert!(jobs_of(serde_json::json!("x")).is_empty());
    }
}
