//! Jobs of the local RunPod API: queued up to `RUNPOD_MAX_CONCURRENCY` running at once, each
//! with the platform's statuses and timings.
//!
//! Jobs waiting for a slot are bounded by count (`JOBS_MAX_WAITING`) and by the serialized
//! size of their inputs (`JOBS_MAX_WAITING_BYTES`): beyond either a job is refused up front,
//! so that every accepted job runs. Finished jobs stay readable through `/status` for
//! [`KEEP_FINISHED`], at most [`MAX_FINISHED`] of them, and while the serialized size of
//! their status responses sums to at most `JOBS_MAX_RETAINED_BYTES`; the oldest go first. The
//! ids of the [`MAX_DROPPED`] most recently dropped jobs are remembered so that `/status` can
//! say why a job is gone rather than call it unknown.

use super::router::{self, JobResult};
use crate::api::AppState;
use crate::config::JobLimits;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// How long a finished job stays readable through `/status`.
pub const KEEP_FINISHED: Duration = Duration::from_secs(30 * 60);
/// Most finished jobs kept; the oldest are forgotten first.
pub const MAX_FINISHED: usize = 10_000;
/// Most ids of dropped jobs remembered; the oldest are forgotten first.
pub const MAX_DROPPED: usize = 100_000;
/// Seconds a refused `/run` or `/runsync` is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

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

/// A job refused because too much is waiting; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull(pub String);

/// Why there is no job to show for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Never seen (or dropped so long ago that its id was forgotten too).
    Unknown,
    /// The job finished and was dropped; the message says why.
    Dropped(String),
}

mod store;
#[cfg(test)]
mod tests;

pub use store::{json_len, Streamed, View};
use store::{Body, Inner};

/// The jobs of the local RunPod API.
pub struct JobStore {
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    /// Jobs accepted and not ended; changed only under `inner`'s lock.
    idle: watch::Sender<usize>,
}

impl JobStore {
    /// A store running at most `concurrency` jobs at once, within `limits`.
    pub fn new(concurrency: usize, limits: JobLimits) -> Arc<JobStore> {
        Arc::new(JobStore {
            inner: Mutex::new(Inner::new(limits)),
            slots: Arc::new(Semaphore::new(concurrency)),
            idle: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (no update panics midway).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a job without starting it; returns its id, or why it is refused.
    fn accept(&self, prefix: &str, input: &Value) -> Result<Arc<str>, QueueFull> {
        let id: Arc<str> = format!("{prefix}{}", uuid::Uuid::new_v4()).into();
        let input_bytes = json_len(input);
        let mut inner = self.lock();
        inner.admit(id.clone(), input_bytes)?;
        self.idle.send_modify(|n| *n += 1);
        Ok(id)
    }

    /// Accepts a job and starts it in the background; returns its id, or why it is refused
    /// (too many jobs or input bytes waiting).
    pub fn submit(
        self: &Arc<Self>,
        app: Arc<AppState>,
        prefix: &str,
        input: Value,
    ) -> Result<String, QueueFull> {
        let id = self.accept(prefix, &input)?;
        let store = self.clone();
        let job_id = id.clone();
        let task = tokio::spawn(async move {
            let Ok(_slot) = store.slots.clone().acquire_owned().await else {
                return;
            };
            if !store.lock().start(&job_id) {
                return;
            }
            tracing::info!(requestId = &*job_id, "job started");
            let result = router::run(&app, &input).await;
            drop(input);
            store.finish(&job_id, result);
        });
        let mut inner = self.lock();
        match inner.jobs.get_mut(&*id) {
            Some(e) if !e.status.is_final() => e.abort = Some(task.abort_handle()),
            _ => {}
        }
        Ok(id.to_string())
    }

    fn finish(&self, id: &str, result: JobResult) {
        let status = match &result {
            JobResult::Output(_) | JobResult::Rejected(_) => Status::Completed,
            JobResult::Failed(_) => Status::Failed,
        };
        self.end(id, status, Some(result));
    }

    /// Moves a queued or running job to a final state; its final response, `None` if it had
    /// already ended.
    fn end(&self, id: &str, status: Status, result: Option<JobResult>) -> Option<Arc<View>> {
        let body = result.map(Body::of);
        self.end_in(&mut self.lock(), id, status, body)
    }

    /// [`JobStore::end`] under a lock already held.
    fn end_in(
        &self,
        inner: &mut Inner,
        id: &str,
        status: Status,
        body: Option<Body>,
    ) -> Option<Arc<View>> {
        let view = inner.end(id, status, body)?;
        self.idle.send_modify(|n| *n = n.saturating_sub(1));
        Some(view)
    }

    /// Stops a job's task and ends it as cancelled; `None` if it had already ended.
    fn cancel_in(&self, inner: &mut Inner, id: &str) -> Option<Arc<View>> {
        if let Some(abort) = inner.jobs.get_mut(id).and_then(|e| e.abort.take()) {
            abort.abort();
        }
        self.end_in(inner, id, Status::Cancelled, None)
    }

    /// The job's status response, or why there is none.
    pub fn view(&self, id: &str) -> Result<View, Missing> {
        self.lock().view(id)
    }

    /// Waits up to `wait` for the job to end; returns its status response (the final one even
    /// if the job's output is too big to keep), or why there is none.
    pub async fn wait(&self, id: &str, wait: Duration) -> Result<View, Missing> {
        let mut rx = {
            let inner = self.lock();
            match inner.jobs.get(id) {
                Some(e) => e.done.subscribe(),
                None => return Err(inner.missing(id)),
            }
        };
        let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        if let Some(done) = rx.borrow().as_ref() {
            return Ok(View::clone(done));
        }
        self.view(id)
    }

    /// Cancels a job that has not ended; returns its status response, or why there is none.
    pub fn cancel(&self, id: &str) -> Result<View, Missing> {
        let mut inner = self.lock();
        match self.cancel_in(&mut inner, id) {
            Some(view) => Ok(View::clone(&view)),
            None => inner.view(id),
        }
    }

    /// Cancels every job still waiting for a slot; returns how many.
    pub fn purge_queue(&self) -> usize {
        let mut inner = self.lock();
        let queued: Vec<Arc<str>> = inner
            .jobs
            .iter()
            .filter(|(_, e)| e.status == Status::InQueue)
            .map(|(id, _)| id.clone())
            .collect();
        queued
            .iter()
            .filter(|id| self.cancel_in(&mut inner, id).is_some())
            .count()
    }

    /// Job and worker counts in the shape of the platform's `/health`.
    pub fn counts(&self) -> Value {
        let inner = self.lock();
        json!({
            "jobs": {
                "completed": inner.completed,
                "failed": inner.failed,
                "inProgress": inner.running,
                "inQueue": inner.waiting,
                "retried": 0,
            },
            "workers": {
                "idle": usize::from(inner.running == 0),
                "running": usize::from(inner.running > 0),
            },
        })
    }

    /// Waits until every accepted job has ended (for shutdown).
    pub async fn drain(&self) {
        let mut rx = self.idle.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
