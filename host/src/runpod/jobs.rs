//! Jobs of the local RunPod API: queued up to `RUNPOD_MAX_CONCURRENCY` running at once, each
//! with the platform's statuses and timings, kept after they finish for a bounded time and
//! number so that `/status` can report them.

use super::router::{self, JobResult};
use crate::api::AppState;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;

/// How long a finished job stays readable through `/status`.
pub const KEEP_FINISHED: Duration = Duration::from_secs(30 * 60);
/// Most finished jobs kept; the oldest are forgotten first.
pub const MAX_FINISHED: usize = 10_000;

/// A job's state, as the platform names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted, waiting for a free slot.
    InQueue,
    /// Running.
    InProgress,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl Status {
    /// The platform's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InQueue => "IN_QUEUE",
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

struct Entry {
    status: Status,
    submitted: Instant,
    started: Option<Instant>,
    finished: Option<Instant>,
    result: Option<JobResult>,
    abort: Option<AbortHandle>,
    done: watch::Sender<bool>,
}

impl Entry {
    fn view(&self, id: &str) -> Value {
        let now = Instant::now();
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        out.insert("status".into(), json!(self.status.as_str()));
        let start = self.started.unwrap_or(now);
        out.insert(
            "delayTime".into(),
            json!(start.duration_since(self.submitted).as_millis() as u64),
        );
        if let Some(started) = self.started {
            let end = self.finished.unwrap_or(now);
            out.insert(
                "executionTime".into(),
                json!(end.duration_since(started).as_millis() as u64),
            );
        }
        match &self.result {
            Some(JobResult::Failed(e)) => {
                out.insert("error".into(), json!(e));
            }
            Some(done) => {
                out.insert("output".into(), done.output().unwrap_or_default());
            }
            None => {}
        }
        Value::Object(out)
    }
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Entry>,
    finished: VecDeque<(Instant, String)>,
}

impl Inner {
    fn forget_old(&mut self) {
        let now = Instant::now();
        while let Some((at, id)) = self.finished.front() {
            if now.duration_since(*at) < KEEP_FINISHED && self.finished.len() <= MAX_FINISHED {
                break;
            }
            self.jobs.remove(id);
            self.finished.pop_front();
        }
    }
}

/// The jobs of the local RunPod API.
pub struct JobStore {
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    completed: AtomicU64,
    failed: AtomicU64,
    idle: watch::Sender<usize>,
}

impl JobStore {
    /// A store running at most `concurrency` jobs at once.
    pub fn new(concurrency: usize) -> Arc<JobStore> {
        Arc::new(JobStore {
            inner: Mutex::new(Inner::default()),
            slots: Arc::new(Semaphore::new(concurrency)),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            idle: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (single-field updates).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a job and starts it in the background; returns its id.
    pub fn submit(self: &Arc<Self>, app: Arc<AppState>, prefix: &str, input: Value) -> String {
        let id = format!("{prefix}{}", uuid::Uuid::new_v4());
        let (done, _) = watch::channel(false);
        {
            let mut inner = self.lock();
            inner.forget_old();
            inner.jobs.insert(
                id.clone(),
                Entry {
                    status: Status::InQueue,
                    submitted: Instant::now(),
                    started: None,
                    finished: None,
                    result: None,
                    abort: None,
                    done,
                },
            );
        }
        self.idle.send_modify(|n| *n += 1);
        let store = self.clone();
        let job_id = id.clone();
        let task = tokio::spawn(async move {
            let Ok(_slot) = store.slots.clone().acquire_owned().await else {
                return;
            };
            {
                let mut inner = store.lock();
                match inner.jobs.get_mut(&job_id) {
                    Some(e) if e.status == Status::InQueue => {
                        e.status = Status::InProgress;
                        e.started = Some(Instant::now());
                    }
                    _ => return,
                }
            }
            tracing::info!(requestId = job_id.as_str(), "job started");
            let result = router::run(&app, &input).await;
            store.finish(&job_id, result);
        });
        if let Some(e) = self.lock().jobs.get_mut(&id) {
            e.abort = Some(task.abort_handle());
        }
        id
    }

    fn finish(&self, id: &str, result: JobResult) {
        let status = match &result {
            JobResult::Output(_) | JobResult::Rejected(_) => Status::Completed,
            JobResult::Failed(_) => Status::Failed,
        };
        self.end(id, status, Some(result));
    }

    /// Moves a running or queued job to a final state; false if it had already ended.
    fn end(&self, id: &str, status: Status, result: Option<JobResult>) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.jobs.get_mut(id) else {
            return false;
        };
        if e.status.is_final() {
            return false;
        }
        e.status = status;
        e.finished = Some(Instant::now());
        e.result = result;
        e.abort = None;
        e.done.send_replace(true);
        match status {
            Status::Completed => self.completed.fetch_add(1, Ordering::Relaxed),
            Status::Failed => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        tracing::info!(requestId = id, status = status.as_str(), "job finished");
        inner.finished.push_back((Instant::now(), id.to_string()));
        drop(inner);
        self.idle.send_modify(|n| *n = n.saturating_sub(1));
        true
    }

    /// The job's status response, if the job is known.
    pub fn view(&self, id: &str) -> Option<Value> {
        self.lock().jobs.get(id).map(|e| e.view(id))
    }

    /// Waits up to `wait` for the job to end; returns its status response.
    pub async fn wait(&self, id: &str, wait: Duration) -> Option<Value> {
        let mut rx = self.lock().jobs.get(id)?.done.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|done| *done)).await;
        self.view(id)
    }

    /// Cancels a job that has not ended; returns its status response.
    pub fn cancel(&self, id: &str) -> Option<Value> {
        let abort = self.lock().jobs.get_mut(id)?.abort.take();
        if let Some(a) = abort {
            a.abort();
        }
        self.end(id, Status::Cancelled, None);
        self.view(id)
    }

    /// Cancels every job still waiting for a slot; returns how many.
    pub fn purge_queue(&self) -> usize {
        let queued: Vec<String> = self
            .lock()
            .jobs
            .iter()
            .filter(|(_, e)| e.status == Status::InQueue)
            .map(|(id, _)| id.clone())
            .collect();
        queued.iter().filter(|id| self.cancel(id).is_some()).count()
    }

    /// Job and worker counts in the shape of the platform's `/health`.
    pub fn counts(&self) -> Value {
        let inner = self.lock();
        let count = |s: Status| inner.jobs.values().filter(|e| e.status == s).count();
        let running = count(Status::InProgress);
        json!({
            "jobs": {
                "completed": self.completed.load(Ordering::Relaxed),
                "failed": self.failed.load(Ordering::Relaxed),
                "inProgress": running,
                "inQueue": count(Status::InQueue),
                "retried": 0,
            },
            "workers": {"idle": usize::from(running == 0), "running": usize::from(running > 0)},
        })
    }

    /// Waits until every accepted job has ended (for shutdown).
    pub async fn drain(&self) {
        let mut rx = self.idle.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
