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
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::AbortHandle;

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

/// Why a finished job was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Older than [`KEEP_FINISHED`].
    Expired,
    /// Beyond [`MAX_FINISHED`].
    Count,
    /// Beyond `JOBS_MAX_RETAINED_BYTES`.
    Bytes,
}

/// Bytes of `v` serialized as JSON, counted without building the text.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a Value into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// A finished job's `output` or `error` and its serialized size, measured before locking.
struct Body {
    key: &'static str,
    value: Value,
    bytes: usize,
}

impl Body {
    fn of(result: JobResult) -> Body {
        let (key, value) = match result {
            JobResult::Failed(msg) => ("error", Value::String(msg)),
            JobResult::Output(v) => ("output", v),
            r @ JobResult::Rejected(_) => ("output", r.output().unwrap_or_default()),
        };
        let bytes = json_len(&value);
        Body { key, value, bytes }
    }
}

struct Entry {
    status: Status,
    submitted: Instant,
    started: Option<Instant>,
    input_bytes: usize,
    abort: Option<AbortHandle>,
    /// The final status response, once the job has ended; `/runsync` waits on it.
    done: watch::Sender<Option<Arc<Value>>>,
}

impl Entry {
    /// The status response: the stored one once ended, else built with timings up to `now`.
    fn view(&self, id: &str, now: Instant) -> Value {
        if let Some(done) = self.done.borrow().as_ref() {
            return Value::clone(done);
        }
        Value::Object(self.head(id, self.status, now))
    }

    /// `id`, `status`, `delayTime` and (once started) `executionTime`, measured up to `now`.
    fn head(&self, id: &str, status: Status, now: Instant) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        out.insert("status".into(), json!(status.as_str()));
        let start = self.started.unwrap_or(now);
        out.insert(
            "delayTime".into(),
            json!(start.duration_since(self.submitted).as_millis() as u64),
        );
        if let Some(started) = self.started {
            out.insert(
                "executionTime".into(),
                json!(now.duration_since(started).as_millis() as u64),
            );
        }
        out
    }
}

/// A finished job still kept, oldest first.
struct Kept {
    at: Instant,
    id: Arc<str>,
    bytes: usize,
}

/// Every job and the sums the limits are checked against; changed only under the store's lock.
struct Inner {
    limits: JobLimits,
    jobs: HashMap<Arc<str>, Entry>,
    /// Finished jobs, oldest first.
    finished: VecDeque<Kept>,
    /// Sum of `finished`'s bytes.
    retained_bytes: usize,
    /// Jobs in `IN_QUEUE`, and the sum of their input bytes.
    waiting: usize,
    waiting_bytes: usize,
    /// Jobs in `IN_PROGRESS`.
    running: usize,
    completed: u64,
    failed: u64,
    /// Ids of dropped jobs, and the order they were dropped in.
    dropped: HashMap<Arc<str>, Dropped>,
    dropped_order: VecDeque<Arc<str>>,
}

impl Inner {
    fn new(limits: JobLimits) -> Inner {
        Inner {
            limits,
            jobs: HashMap::new(),
            finished: VecDeque::new(),
            retained_bytes: 0,
            waiting: 0,
            waiting_bytes: 0,
            running: 0,
            completed: 0,
            failed: 0,
            dropped: HashMap::new(),
            dropped_order: VecDeque::new(),
        }
    }

    /// Accepts a job of `input_bytes` into the queue, unless the queue is full. An input
    /// bigger than the whole byte budget is accepted when nothing else waits, since waiting
    /// would never make room for it.
    fn admit(&mut self, id: Arc<str>, input_bytes: usize) -> Result<(), QueueFull> {
        self.forget_old(Instant::now());
        if self.waiting >= self.limits.max_waiting {
            return Err(QueueFull(format!(
                "the job queue is full ({} jobs waiting, JOBS_MAX_WAITING); retry later",
                self.waiting
            )));
        }
        if self.waiting > 0
            && self.waiting_bytes.saturating_add(input_bytes) > self.limits.max_waiting_bytes
        {
            return Err(QueueFull(format!(
                "the job queue is full ({} bytes of job inputs waiting, this job's {} bytes \
                 would pass JOBS_MAX_WAITING_BYTES={}); retry later",
                self.waiting_bytes, input_bytes, self.limits.max_waiting_bytes
            )));
        }
        self.jobs.insert(
            id,
            Entry {
                status: Status::InQueue,
                submitted: Instant::now(),
                started: None,
                input_bytes,
                abort: None,
                done: watch::Sender::new(None),
            },
        );
        self.waiting += 1;
        self.waiting_bytes += input_bytes;
        Ok(())
    }

    /// Moves a queued job to `IN_PROGRESS`; false if it is no longer queued.
    fn start(&mut self, id: &str) -> bool {
        let Some(e) = self.jobs.get_mut(id) else {
            return false;
        };
        if e.status != Status::InQueue {
            return false;
        }
        e.status = Status::InProgress;
        e.started = Some(Instant::now());
        self.waiting -= 1;
        self.waiting_bytes -= e.input_bytes;
        self.running += 1;
        true
    }

    /// Moves a queued or running job to a final state and keeps it within the limits; returns
    /// its final status response, or `None` if it had already ended (or is unknown).
    fn end(&mut self, id: &str, status: Status, body: Option<Body>) -> Option<Arc<Value>> {
        let now = Instant::now();
        let (key, e) = self.jobs.get_key_value(id)?;
        if e.status.is_final() {
            return None;
        }
        let key = key.clone();
        let mut view = e.head(id, status, now);
        // The head is small; the body was measured outside the lock.
        let mut bytes = json_len(&Value::Object(view.clone()));
        if let Some(body) = body {
            // `,"key":` and the body, inside the head's braces.
            bytes += 1 + (body.key.len() + 2) + 1 + body.bytes;
            view.insert(body.key.into(), body.value);
        }
        let view = Arc::new(Value::Object(view));
        let e = self.jobs.get_mut(id)?;
        match e.status {
            Status::InQueue => {
                self.waiting -= 1;
                self.waiting_bytes -= e.input_bytes;
            }
            Status::InProgress => self.running -= 1,
            _ => {}
        }
        e.status = status;
        e.abort = None;
        e.done.send_replace(Some(view.clone()));
        match status {
            Status::Completed => self.completed += 1,
            Status::Failed => self.failed += 1,
            _ => {}
        }
        tracing::info!(
            requestId = id,
            status = status.as_str(),
            bytes,
            "job finished"
        );
        if bytes > self.limits.max_retained_bytes {
            // Too big to keep at all: whoever waits on it still gets it through `done`.
            self.jobs.remove(id);
            self.remember_dropped(key, Dropped::Bytes);
        } else {
            self.finished.push_back(Kept {
                at: now,
                id: key,
                bytes,
            });
            self.retained_bytes += bytes;
        }
        self.forget_old(now);
        Some(view)
    }

    /// Drops the oldest finished jobs while one is too old, too many are kept, or their
    /// outputs pass the byte budget.
    fn forget_old(&mut self, now: Instant) {
        while let Some(front) = self.finished.front() {
            let why = if now.duration_since(front.at) >= KEEP_FINISHED {
                Dropped::Expired
            } else if self.finished.len() > MAX_FINISHED {
                Dropped::Count
            } else if self.retained_bytes > self.limits.max_retained_bytes {
                Dropped::Bytes
            } else {
                break;
            };
            let Some(kept) = self.finished.pop_front() else {
                break;
            };
            self.retained_bytes -= kept.bytes;
            self.jobs.remove(&kept.id);
            self.remember_dropped(kept.id, why);
        }
    }

    fn remember_dropped(&mut self, id: Arc<str>, why: Dropped) {
        while self.dropped_order.len() >= MAX_DROPPED {
            match self.dropped_order.pop_front() {
                Some(old) => {
                    self.dropped.remove(&old);
                }
                None => break,
            }
        }
        self.dropped.insert(id.clone(), why);
        self.dropped_order.push_back(id);
    }

    /// Why `id` has no entry.
    fn missing(&self, id: &str) -> Missing {
        let Some(why) = self.dropped.get(id) else {
            return Missing::Unknown;
        };
        Missing::Dropped(match why {
            Dropped::Expired => format!(
                "job {id} finished more than {} minutes ago and is no longer kept",
                KEEP_FINISHED.as_secs() / 60
            ),
            Dropped::Count => format!(
                "job {id} finished but was dropped: at most {MAX_FINISHED} finished jobs are kept"
            ),
            Dropped::Bytes => format!(
                "job {id} finished but its output was dropped to stay within \
                 JOBS_MAX_RETAINED_BYTES ({} bytes of finished jobs are kept)",
                self.limits.max_retained_bytes
            ),
        })
    }

    fn view(&mut self, id: &str) -> Result<Value, Missing> {
        let now = Instant::now();
        self.forget_old(now);
        match self.jobs.get(id) {
            Some(e) => Ok(e.view(id, now)),
            None => Err(self.missing(id)),
        }
    }
}

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
    fn end(&self, id: &str, status: Status, result: Option<JobResult>) -> Option<Arc<Value>> {
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
    ) -> Option<Arc<Value>> {
        let view = inner.end(id, status, body)?;
        self.idle.send_modify(|n| *n = n.saturating_sub(1));
        Some(view)
    }

    /// Stops a job's task and ends it as cancelled; `None` if it had already ended.
    fn cancel_in(&self, inner: &mut Inner, id: &str) -> Option<Arc<Value>> {
        if let Some(abort) = inner.jobs.get_mut(id).and_then(|e| e.abort.take()) {
            abort.abort();
        }
        self.end_in(inner, id, Status::Cancelled, None)
    }

    /// The job's status response, or why there is none.
    pub fn view(&self, id: &str) -> Result<Value, Missing> {
        self.lock().view(id)
    }

    /// Waits up to `wait` for the job to end; returns its status response (the final one even
    /// if the job's output is too big to keep), or why there is none.
    pub async fn wait(&self, id: &str, wait: Duration) -> Result<Value, Missing> {
        let mut rx = {
            let inner = self.lock();
            match inner.jobs.get(id) {
                Some(e) => e.done.subscribe(),
                None => return Err(inner.missing(id)),
            }
        };
        let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        if let Some(done) = rx.borrow().as_ref() {
            return Ok(Value::clone(done));
        }
        self.view(id)
    }

    /// Cancels a job that has not ended; returns its status response, or why there is none.
    pub fn cancel(&self, id: &str) -> Result<Value, Missing> {
        let mut inner = self.lock();
        match self.cancel_in(&mut inner, id) {
            Some(view) => Ok(Value::clone(&view)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(
        max_waiting: usize,
        max_waiting_bytes: usize,
        max_retained_bytes: usize,
    ) -> Arc<JobStore> {
        JobStore::new(
            1,
            JobLimits {
                max_waiting,
                max_waiting_bytes,
                max_retained_bytes,
            },
        )
    }

    /// A job input or output of about `n` bytes of JSON.
    fn blob(n: usize) -> Value {
        json!({ "text": "x".repeat(n) })
    }

    /// Accepts, starts and finishes a job with `output`; returns its id.
    fn run_job(store: &JobStore, output: Value) -> String {
        let id = store.accept("", &json!({})).expect("accepted");
        assert!(store.lock().start(&id));
        store.finish(&id, JobResult::Output(output));
        id.to_string()
    }

    /// Checks the store's sums against its entries.
    fn check_sums(store: &JobStore) {
        let inner = store.lock();
        let kept: usize = inner.finished.iter().map(|k| k.bytes).sum();
        assert_eq!(inner.retained_bytes, kept);
        assert!(inner.retained_bytes <= inner.limits.max_retained_bytes);
        let queued: Vec<&Entry> = inner
            .jobs
            .values()
            .filter(|e| e.status == Status::InQueue)
            .collect();
        assert_eq!(inner.waiting, queued.len());
        assert_eq!(
            inner.waiting_bytes,
            queued.iter().map(|e| e.input_bytes).sum::<usize>()
        );
        let running = inner
            .jobs
            .values()
            .filter(|e| e.status == Status::InProgress)
            .count();
        assert_eq!(inner.running, running);
        for k in &inner.finished {
            let e = &inner.jobs[&k.id];
            let view = e.view(&k.id, Instant::now());
            assert_eq!(
                k.bytes,
                json_len(&view),
                "the size counted is the response's"
            );
        }
        assert_eq!(inner.dropped.len(), inner.dropped_order.len());
    }

    #[test]
    fn json_len_is_the_serialized_length() {
        for v in [
            json!(null),
            blob(10),
            json!({"a": [1, 2.5, "é\"\n"], "b": {}}),
        ] {
            assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
        }
    }

    #[test]
    fn the_waiting_count_is_bounded() {
        let s = store(2, 1 << 20, 1 << 20);
        let a = s.accept("", &blob(10)).unwrap();
        s.accept("", &blob(10)).unwrap();
        let refused = s.accept("", &blob(10)).unwrap_err();
        assert!(refused.0.contains("2 jobs waiting"), "{}", refused.0);
        assert!(refused.0.contains("JOBS_MAX_WAITING)"), "{}", refused.0);
        assert_eq!(s.counts()["jobs"]["inQueue"], 2);
        assert_eq!(*s.idle.borrow(), 2, "a refused job is not counted");
        // A job that starts leaves the queue and makes room.
        assert!(s.lock().start(&a));
        s.accept("", &blob(10)).unwrap();
        assert!(s.accept("", &blob(10)).is_err());
        check_sums(&s);
        let counts = s.counts();
        assert_eq!(counts["jobs"]["inQueue"], 2);
        assert_eq!(counts["jobs"]["inProgress"], 1);
        assert_eq!(counts["workers"], json!({"idle": 0, "running": 1}));
    }

    #[test]
    fn the_waiting_input_bytes_are_bounded() {
        let s = store(100, 1024, 1 << 20);
        let input = blob(400);
        let n = json_len(&input);
        let a = s.accept("", &input).unwrap();
        let b = s.accept("", &input).unwrap();
        assert_eq!(s.lock().waiting_bytes, 2 * n);
        let refused = s.accept("", &input).unwrap_err();
        assert!(
            refused.0.contains("JOBS_MAX_WAITING_BYTES=1024"),
            "{}",
            refused.0
        );
        // A small one still fits.
        s.accept("", &blob(10)).unwrap();
        // Cancelling a queued job and starting one both give their bytes back.
        s.cancel(&a).unwrap();
        assert!(s.lock().start(&b));
        check_sums(&s);
        assert_eq!(s.lock().waiting_bytes, json_len(&blob(10)));
        s.accept("", &input).unwrap();
        check_sums(&s);
    }

    #[test]
    fn an_input_bigger_than_the_budget_waits_alone() {
        let s = store(100, 1024, 1 << 20);
        let big = blob(5000);
        let id = s.accept("", &big).unwrap();
        assert!(s.accept("", &blob(10)).is_err(), "nothing joins it");
        assert!(s.accept("", &big).is_err());
        assert!(s.lock().start(&id));
        s.accept("", &big).unwrap();
        check_sums(&s);
    }

    #[test]
    fn the_oldest_outputs_are_dropped_first_within_the_byte_budget() {
        let out = blob(1000);
        // The size of one finished job's status response.
        let probe = store(10, 1 << 20, 1 << 20);
        run_job(&probe, out.clone());
        let one = probe.lock().retained_bytes;
        assert!(one > 1000 && one < 1200, "{one}");

        let s = store(10, 1 << 20, 3 * one + one / 2);
        let ids: Vec<String> = (0..6).map(|_| run_job(&s, out.clone())).collect();
        check_sums(&s);
        for (i, id) in ids.iter().enumerate() {
            match s.view(id) {
                Ok(v) if i >= 3 => {
                    assert_eq!(v["status"], "COMPLETED");
                    assert_eq!(v["output"], out);
                }
                Err(Missing::Dropped(msg)) if i < 3 => {
                    assert!(msg.contains(id.as_str()), "{msg}");
                    assert!(msg.contains("JOBS_MAX_RETAINED_BYTES"), "{msg}");
                }
                other => panic!("job {i}: {other:?}"),
            }
        }
        assert_eq!(s.view("no-such-job"), Err(Missing::Unknown));
        assert_eq!(s.cancel(&ids[0]), s.view(&ids[0]));
        let counts = s.counts();
        assert_eq!(counts["jobs"]["completed"], 6, "dropped jobs still count");
        assert_eq!(counts["jobs"]["inQueue"], 0);
        assert_eq!(*s.idle.borrow(), 0);
    }

    #[test]
    fn byte_sums_never_pass_the_budget() {
        let budget = 20_000;
        let s = store(1000, 1 << 20, budget);
        let mut seed: u64 = 42;
        let mut ids = Vec::new();
        for _ in 0..500 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (seed >> 33) as usize % 9000;
            let id = s.accept("", &blob(n)).unwrap();
            if n.is_multiple_of(3) {
                s.cancel(&id).unwrap();
            } else {
                assert!(s.lock().start(&id));
                let result = if n.is_multiple_of(7) {
                    JobResult::Failed("boom".repeat(n / 4))
                } else {
                    JobResult::Output(blob(n * 3))
                };
                s.finish(&id, result);
            }
            ids.push(id);
            check_sums(&s);
        }
        // What is kept is the newest: every job after the oldest kept one is kept too,
        // unless it was too big to keep at all.
        let inner = s.lock();
        let first = ids
            .iter()
            .position(|id| inner.jobs.contains_key(&**id))
            .unwrap();
        for id in &ids[first..] {
            assert!(
                inner.jobs.contains_key(&**id) || inner.dropped.contains_key(&**id),
                "{id}"
            );
        }
        for id in &ids[..first] {
            assert_eq!(inner.dropped.get(&**id), Some(&Dropped::Bytes));
        }
    }

    #[tokio::test]
    async fn an_output_bigger_than_the_budget_reaches_its_waiter_then_is_dropped() {
        let s = store(10, 1 << 20, 5000);
        let small = run_job(&s, blob(100));
        let id = s.accept("sync-", &json!({})).unwrap();
        let waiter = {
            let s = s.clone();
            let id = id.clone();
            tokio::spawn(async move { s.wait(&id, Duration::from_secs(10)).await })
        };
        while s.lock().jobs[&*id].done.receiver_count() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(s.lock().start(&id));
        s.finish(&id, JobResult::Output(blob(10_000)));
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got["status"], "COMPLETED");
        assert_eq!(got["output"], blob(10_000));
        match s.view(&id) {
            Err(Missing::Dropped(msg)) => assert!(msg.contains("JOBS_MAX_RETAINED_BYTES")),
            other => panic!("{other:?}"),
        }
        // It did not push out the older, smaller job.
        assert_eq!(s.view(&small).unwrap()["output"], blob(100));
        check_sums(&s);
        // A waiter that comes after the end gets the kept response at once.
        let got = s.wait(&small, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got["output"], blob(100));
    }

    #[tokio::test]
    async fn a_zero_budget_keeps_nothing_but_answers_waiters_and_cancels() {
        let s = store(10, 1 << 20, 0);
        let id = s.accept("", &json!({})).unwrap();
        let cancelled = s.cancel(&id).unwrap();
        assert_eq!(cancelled["status"], "CANCELLED");
        assert!(matches!(s.view(&id), Err(Missing::Dropped(_))));
        let id = s.accept("sync-", &json!({})).unwrap();
        assert!(s.lock().start(&id));
        s.finish(&id, JobResult::Failed("boom".into()));
        assert!(matches!(
            s.wait(&id, Duration::from_secs(1)).await,
            Err(Missing::Dropped(_))
        ));
        let counts = s.counts();
        assert_eq!(counts["jobs"]["failed"], 1);
        assert_eq!(counts["jobs"]["completed"], 0);
        check_sums(&s);
    }

    #[test]
    fn counts_follow_every_transition() {
        let s = store(10, 1 << 20, 1 << 20);
        let ids: Vec<Arc<str>> = (0..5).map(|_| s.accept("", &blob(10)).unwrap()).collect();
        assert!(s.lock().start(&ids[0]));
        assert!(s.lock().start(&ids[1]));
        s.finish(&ids[0], JobResult::Output(blob(1)));
        s.finish(&ids[1], JobResult::Failed("boom".into()));
        assert!(s.lock().start(&ids[2]));
        let counts = s.counts();
        assert_eq!(
            counts["jobs"],
            json!({"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 2, "retried": 0})
        );
        assert_eq!(*s.idle.borrow(), 3);
        assert_eq!(s.purge_queue(), 2);
        assert_eq!(s.view(&ids[3]).unwrap()["status"], "CANCELLED");
        // A job that already ended is neither cancelled nor counted again.
        assert_eq!(s.cancel(&ids[0]).unwrap()["status"], "COMPLETED");
        assert!(s.end(&ids[0], Status::Failed, None).is_none());
        s.cancel(&ids[2]).unwrap();
        let counts = s.counts();
        assert_eq!(
            counts["jobs"],
            json!({"completed": 1, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0})
        );
        assert_eq!(counts["workers"], json!({"idle": 1, "running": 0}));
        assert_eq!(*s.idle.borrow(), 0);
        assert!(!s.lock().start(&ids[4]), "a cancelled job never starts");
        check_sums(&s);
    }

    #[test]
    fn at_most_max_finished_jobs_are_kept() {
        let s = store(10, 1 << 20, usize::MAX);
        let first = run_job(&s, json!(1));
        for _ in 0..MAX_FINISHED {
            run_job(&s, json!(1));
        }
        assert_eq!(s.lock().finished.len(), MAX_FINISHED);
        match s.view(&first) {
            Err(Missing::Dropped(msg)) => assert!(msg.contains("at most 10000"), "{msg}"),
            other => panic!("{other:?}"),
        }
        check_sums(&s);
    }

    #[test]
    fn expired_jobs_are_dropped_and_say_so() {
        let s = store(10, 1 << 20, 1 << 20);
        let id = run_job(&s, json!(1));
        let later = Instant::now() + KEEP_FINISHED;
        s.lock().forget_old(later);
        match s.view(&id) {
            Err(Missing::Dropped(msg)) => assert!(msg.contains("30 minutes ago"), "{msg}"),
            other => panic!("{other:?}"),
        }
        check_sums(&s);
    }

    #[test]
    fn the_dropped_ids_are_bounded_oldest_first() {
        let mut inner = Inner::new(JobLimits {
            max_waiting: 1,
            max_waiting_bytes: 1024,
            max_retained_bytes: 0,
        });
        for i in 0..MAX_DROPPED + 5 {
            inner.remember_dropped(format!("job-{i}").into(), Dropped::Bytes);
        }
        assert_eq!(inner.dropped.len(), MAX_DROPPED);
        assert_eq!(inner.dropped_order.len(), MAX_DROPPED);
        assert_eq!(inner.missing("job-4"), Missing::Unknown);
        assert!(matches!(inner.missing("job-5"), Missing::Dropped(_)));
        let last = format!("job-{}", MAX_DROPPED + 4);
        assert!(matches!(inner.missing(&last), Missing::Dropped(_)));
    }
}
