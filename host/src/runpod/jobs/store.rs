//! The job store's bookkeeping under its lock: waiting, running and finished jobs, their
//! bytes, and which finished jobs are dropped first.

use super::router::JobResult;
use super::{Missing, QueueFull, Status, KEEP_FINISHED, MAX_DROPPED, MAX_FINISHED};
use crate::config::JobLimits;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Why a finished job was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
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

/// A job's status response: `id`, `status`, timings and, once it has finished, its output
/// (JSON text, as the job's answer was serialised) or error.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    #[serde(flatten)]
    head: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl PartialEq for View {
    fn eq(&self, other: &View) -> bool {
        self.head == other.head
            && self.output.as_ref().map(|o| o.get()) == other.output.as_ref().map(|o| o.get())
            && self.error == other.error
    }
}

/// A view as `/stream` answers it: the output, if any, as the one chunk of `stream`.
#[derive(Serialize)]
pub struct Streamed<'a> {
    #[serde(flatten)]
    head: &'a Map<String, Value>,
    stream: Vec<Chunk<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    output: &'a RawValue,
}

impl View {
    /// The job's status, as the platform spells it.
    pub fn status(&self) -> &str {
        self.head
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The view as `/stream` shows it (jobs here are not generators: a finished job streams
    /// its whole output as one chunk).
    pub fn streamed(&self) -> Streamed<'_> {
        Streamed {
            head: &self.head,
            stream: self.output.iter().map(|o| Chunk { output: o }).collect(),
            error: self.error.as_deref(),
        }
    }

    /// The view as a JSON value (tests look into it).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A finished job's `output` or `error` and its serialized size, measured before locking.
pub(super) struct Body {
    output: Option<Box<RawValue>>,
    error: Option<String>,
    key: &'static str,
    bytes: usize,
}

impl Body {
    pub(super) fn of(result: JobResult) -> Body {
        match result {
            JobResult::Failed(msg) => Body {
                bytes: json_len(&Value::String(msg.clone())),
                output: None,
                error: Some(msg),
                key: "error",
            },
            r => {
                let output = r.into_output();
                Body {
                    bytes: output.as_ref().map_or(4, |o| o.get().len()),
                    output,
                    error: None,
                    key: "output",
                }
            }
        }
    }
}

pub(super) struct Entry {
    pub(super) status: Status,
    pub(super) submitted: Instant,
    pub(super) started: Option<Instant>,
    pub(super) input_bytes: usize,
    pub(super) abort: Option<AbortHandle>,
    /// The final status response, once the job has ended; `/runsync` waits on it.
    pub(super) done: watch::Sender<Option<Arc<View>>>,
}

impl Entry {
    /// The status response: the stored one once ended, else built with timings up to `now`.
    pub(super) fn view(&self, id: &str, now: Instant) -> View {
        if let Some(done) = self.done.borrow().as_ref() {
            return View::clone(done);
        }
        View {
            head: self.head(id, self.status, now),
            output: None,
            error: None,
        }
    }

    /// `id`, `status`, `delayTime` and (once started) `executionTime`, measured up to `now`.
    pub(super) fn head(&self, id: &str, status: Status, now: Instant) -> Map<String, Value> {
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
pub(super) struct Kept {
    pub(super) at: Instant,
    pub(super) id: Arc<str>,
    pub(super) bytes: usize,
}

/// Every job and the sums the limits are checked against; changed only under the store's lock.
pub(super) struct Inner {
    pub(super) limits: JobLimits,
    pub(super) jobs: HashMap<Arc<str>, Entry>,
    /// Finished jobs, oldest first.
    pub(super) finished: VecDeque<Kept>,
    /// Sum of `finished`'s bytes.
    pub(super) retained_bytes: usize,
    /// Jobs in `IN_QUEUE`, and the sum of their input bytes.
    pub(super) waiting: usize,
    pub(super) waiting_bytes: usize,
    /// Jobs in `IN_PROGRESS`.
    pub(super) running: usize,
    pub(super) completed: u64,
    pub(super) failed: u64,
    /// Ids of dropped jobs, and the order they were dropped in.
    pub(super) dropped: HashMap<Arc<str>, Dropped>,
    pub(super) dropped_order: VecDeque<Arc<str>>,
}

impl Inner {
    pub(super) fn new(limits: JobLimits) -> Inner {
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
    pub(super) fn admit(&mut self, id: Arc<str>, input_bytes: usize) -> Result<(), QueueFull> {
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
    pub(super) fn start(&mut self, id: &str) -> bool {
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
    pub(super) fn end(
        &mut self,
        id: &str,
        status: Status,
        body: Option<Body>,
    ) -> Option<Arc<View>> {
        let now = Instant::now();
        let (key, e) = self.jobs.get_key_value(id)?;
        if e.status.is_final() {
            return None;
        }
        let key = key.clone();
        let head = e.head(id, status, now);
        // The head is small; the body was measured outside the lock.
        let mut bytes = json_len(&Value::Object(head.clone()));
        let mut view = View {
            head,
            output: None,
            error: None,
        };
        if let Some(body) = body {
            // `,"key":` and the body, inside the head's braces.
            bytes += 1 + (body.key.len() + 2) + 1 + body.bytes;
            view.output = body.output;
            view.error = body.error;
        }
        let view = Arc::new(view);
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
    pub(super) fn forget_old(&mut self, now: Instant) {
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

    pub(super) fn remember_dropped(&mut self, id: Arc<str>, why: Dropped) {
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
    pub(super) fn missing(&self, id: &str) -> Missing {
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

    pub(super) fn view(&mut self, id: &str) -> Result<View, Missing> {
        let now = Instant::now();
        self.forget_old(now);
        match self.jobs.get(id) {
            Some(e) => Ok(e.view(id, now)),
            None => Err(self.missing(id)),
        }
    }
}
