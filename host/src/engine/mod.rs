//! The batching engine: per model a bounded queue, a dedicated worker thread that forms
//! length-sorted batches within a window, calls the plugin, and routes each row's result back
//! to its request.
//!
//! Admission is counted in items: a request whose items do not fit in the queue
//! (`INFINITY_QUEUE_SIZE`) now is refused at once, so overload answers 429 instead of piling
//! up; a request with more items than the whole queue holds could never fit and is refused as
//! too large (413).
//!
//! Failures: a batch that fails with `InvalidInput` or `OutOfMemory` is split in halves and
//! the halves retried, so one bad input fails only its own request and an out-of-memory batch
//! is retried smaller. Any other failure (device, internal, unsupported, a panic in the plugin)
//! fails the whole batch at once. Each failed call that is not split, bad input aside, counts
//! once towards a streak that the next successful call ends; after `RELOAD_AFTER` of them
//! the model is reloaded, at most once per streak. A model on a GPU, or one that ran out of
//! memory, is dropped before its new copy loads, so that both never need memory at once;
//! on the CPU the new copy loads first and then replaces the old one, which serves meanwhile
//! (and stays if the load fails). A model dropped for a load that failed is missing: every
//! item is answered at once with an error saying so, and the load is tried again at most every
//! 30 s (see `RETRY_LOAD_EVERY`) until it succeeds.

mod batching;

use crate::plugin::ModelRunner;
use crate::text::Tokens;
use batching::{CallCost, Key, Shape};
use ember_plugin_api::{ErrorCode, PairBatch, PixelBatch, PluginError, TokenBatch};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How many batches' worth of queued items are sorted together by length.
const WINDOW_BATCHES: usize = 4;

/// Input of one item.
#[derive(Debug)]
pub enum Payload {
    /// A tokenized text to embed.
    Tokens(Tokens),
    /// A query–document pair tokenized together, to score.
    Pair(Tokens),
    /// A tokenized text (or pair of texts) to classify.
    Classify(Tokens),
    /// A preprocessed image (CHW float32) to embed.
    Pixels {
        /// Height in pixels.
        height: u32,
        /// Width in pixels.
        width: u32,
        /// `3 * height * width` values.
        values: Vec<f32>,
    },
}

impl Payload {
    /// The item as the batching policy sees it.
    fn shape(&self) -> Shape {
        match self {
            Payload::Tokens(t) => Shape {
                key: Key::Embed,
                tokens: t.len().max(1),
            },
            Payload::Pair(t) => Shape {
                key: Key::Score,
                tokens: t.len().max(1),
            },
            Payload::Classify(t) => Shape {
                key: Key::Classify,
                tokens: t.len().max(1),
            },
            Payload::Pixels { height, width, .. } => Shape {
                key: Key::Image {
                    height: *height,
                    width: *width,
                },
                tokens: 1,
            },
        }
    }
}

/// Result of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A pooled, not yet normalised vector.
    Vector(Vec<f32>),
    /// A raw relevance logit.
    Score(f32),
    /// A classifier's raw logit of each label.
    Logits(Vec<f32>),
}

/// Why an item was not computed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The queue is too full for the request now.
    #[error(
        "the queue of model {model} is full ({queued} of {capacity} items waiting); retry later"
    )]
    Overloaded {
        /// The model asked for.
        model: String,
        /// Items waiting or running when the request came.
        queued: usize,
        /// Most items the queue holds (`INFINITY_QUEUE_SIZE`).
        capacity: usize,
    },
    /// The request has more items than the queue can ever hold.
    #[error(
        "the request has {items} items, but the queue of model {model} holds at most {capacity} \
         (INFINITY_QUEUE_SIZE); send at most {capacity} items per request"
    )]
    TooLarge {
        /// The model asked for.
        model: String,
        /// Items in the request.
        items: usize,
        /// Most items the queue holds (`INFINITY_QUEUE_SIZE`).
        capacity: usize,
    },
    /// The plugin failed on this item.
    #[error("{}", .0.message)]
    Plugin(PluginError),
    /// The model's worker is gone.
    #[error("the worker of model {0} has stopped")]
    Stopped(String),
}

struct Item {
    payload: Payload,
    reply: oneshot::Sender<Result<Output, EngineError>>,
    queued_at: Instant,
    slot: Slot,
}

/// One item's place in its model's queue count, given back when dropped, so that an item
/// lost in any way (answered, abandoned, dropped by a worker restart) frees its place.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Item {
    /// Answers the item; its place in the queue is given back first, so that a caller who
    /// re-submits at once never sees its own finished item still counted.
    fn answer(self, result: Result<Output, EngineError>) {
        let Item { reply, slot, .. } = self;
        drop(slot);
        let _ = reply.send(result);
    }
}

/// Loads a model again, for a worker whose plugin calls keep failing.
pub type Reload = Box<dyn Fn() -> Result<ModelRunner, PluginError> + Send>;

/// Consecutive counted failures (bad input aside) after which a model is reloaded, once per
/// failure streak.
const RELOAD_AFTER: u32 = 3;

/// How long a model that is not loaded waits between load attempts.
const RETRY_LOAD_EVERY: Duration = Duration::from_secs(30);

/// How long one plugin call may run before `/health` reports the worker as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// Liveness of a model's worker, for `/health`.
#[derive(Debug, Default)]
pub struct Health {
    alive: AtomicBool,
    last_failure: Mutex<Option<String>>,
    call_started: Mutex<Option<Instant>>,
    restarts: AtomicUsize,
}

impl Health {
    /// `Ok` while the worker runs, is not stuck in a plugin call, has its model loaded, and its
    /// last plugin call did not fail for a reason other than bad input; otherwise the reason.
    pub fn status(&self) -> Result<(), String> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err("worker thread has stopped".into());
        }
        if let Ok(Some(since)) = self.call_started.lock().map(|c| *c) {
            let running = since.elapsed();
            if running > STUCK_AFTER {
                return Err(format!(
                    "a plugin call has been running for {} s",
                    running.as_secs()
                ));
            }
        }
        match self.last_failure.lock().map(|f| f.clone()) {
            Ok(Some(reason)) => Err(reason),
            Ok(None) => Ok(()),
            Err(_) => Err("health state poisoned".into()),
        }
    }

    /// How often the worker was restarted or a load of its model was attempted after failures.
    pub fn restarts(&self) -> usize {
        self.restarts.load(Ordering::SeqCst)
    }

    fn record(&self, failure: Option<String>) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = failure;
        }
    }

    fn calling(&self, started: Option<Instant>) {
        if let Ok(mut c) = self.call_started.lock() {
            *c = started;
        }
    }
}

/// Limits of one model's engine.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Most items in one forward call.
    pub batch_size: usize,
    /// Most padded tokens (rows x longest row) in one forward call.
    pub max_batch_tokens: usize,
    /// Most items waiting or running.
    pub queue_size: usize,
    /// Token id used for padding.
    pub pad_id: i64,
}

/// Handle to a model's engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    model: Arc<str>,
    tx: mpsc::Sender<Vec<Item>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Liveness of the worker.
    pub health: Arc<Health>,
}

impl Engine {
    /// Starts the worker thread of `model`.
    /// `reload`, when given, loads the model again after repeated plugin failures.
    pub fn start(
        model: &str,
        runner: ModelRunner,
        limits: EngineLimits,
        reload: Option<Reload>,
    ) -> std::io::Result<Engine> {
        Self::start_retrying(model, runner, limits, reload, RETRY_LOAD_EVERY)
    }

    /// [`Engine::start`], trying to load a missing model again every `retry_every`.
    fn start_retrying(
        model: &str,
        runner: ModelRunner,
        limits: EngineLimits,
        reload: Option<Reload>,
        retry_every: Duration,
    ) -> std::io::Result<Engine> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Health::default());
        health.alive.store(true, Ordering::SeqCst);
        let device = runner.described.device.to_string();
        let worker = Worker {
            model: model.into(),
            metrics: crate::metrics::global().for_model(model),
            state: ModelState::Ready(runner),
            limits: limits.clone(),
            health: health.clone(),
            reload,
            failures: 0,
            reloaded: false,
            retry_every,
            call_cost: RefCell::new(CallCost::for_device(&device)),
        };
        std::thread::Builder::new()
            .name(format!(
                "ember-model-{}",
                model.chars().take(20).collect::<String>()
            ))
            .spawn(move || worker.supervise(rx))?;
        Ok(Engine {
            model: model.into(),
            tx,
            queued,
            capacity: limits.queue_size,
            health,
        })
    }

    /// Most items the queue holds (`INFINITY_QUEUE_SIZE`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items waiting or running.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Takes places for `n` items in the queue, all or none, before their payloads exist:
    /// work done to make them (decoding images) is admitted first.
    pub fn reserve(&self, n: usize) -> Result<Places, EngineError> {
        let refused = || {
            // Counted with the overloaded ones: the queue refused the items.
            crate::metrics::global()
                .failures
                .with_label_values(&[&*self.model, "overloaded"])
                .inc_by(n as u64);
        };
        if n > self.capacity {
            refused();
            return Err(EngineError::TooLarge {
                model: self.model.to_string(),
                items: n,
                capacity: self.capacity,
            });
        }
        let before = self.queued.fetch_add(n, Ordering::SeqCst);
        if before + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            refused();
            return Err(EngineError::Overloaded {
                model: self.model.to_string(),
                queued: before,
                capacity: self.capacity,
            });
        }
        // Each place is owned by a slot from here on, so the count is given back however
        // the places end (submitted and answered, or dropped unused).
        Ok(Places {
            model: self.model.clone(),
            tx: self.tx.clone(),
            slots: (0..n).map(|_| Slot(self.queued.clone())).collect(),
        })
    }

    /// Queues all `payloads` or none; the receivers answer in the same order.
    pub fn submit(
        &self,
        payloads: Vec<Payload>,
    ) -> Result<Vec<oneshot::Receiver<Result<Output, EngineError>>>, EngineError> {
        self.reserve(payloads.len())?.submit(payloads)
    }

    /// Queues `payloads` and waits for all results, in order.
    pub async fn run(&self, payloads: Vec<Payload>) -> Result<Vec<Output>, EngineError> {
        self.reserve(payloads.len())?.run(payloads).await
    }
}

/// Places taken in a model's queue for items not submitted yet; given back when dropped.
pub struct Places {
    model: Arc<str>,
    tx: mpsc::Sender<Vec<Item>>,
    slots: Vec<Slot>,
}

impl Places {
    /// Queues `payloads`, one per place taken; the receivers answer in the same order.
    pub fn submit(
        self,
        payloads: Vec<Payload>,
    ) -> Result<Vec<oneshot::Receiver<Result<Output, EngineError>>>, EngineError> {
        let Places {
            model,
            tx,
            mut slots,
        } = self;
        if payloads.len() != slots.len() {
            return Err(EngineError::Plugin(PluginError::internal(format!(
                "{} items were submitted for {} queue places",
                payloads.len(),
                slots.len()
            ))));
        }
        let mut receivers = Vec::with_capacity(payloads.len());
        let mut items = Vec::with_capacity(payloads.len());
        let queued_at = Instant::now();
        for payload in payloads {
            let (reply, rx) = oneshot::channel();
            items.push(Item {
                payload,
                reply,
                queued_at,
                slot: slots.pop().expect("one slot per payload"),
            });
            receivers.push(rx);
        }
        // One send for the whole request, so the worker sees all of its items at once and
        // batches them together however the threads are scheduled.
        if tx.send(items).is_err() {
            return Err(EngineError::Stopped(model.to_string()));
        }
        Ok(receivers)
    }

    /// Queues `payloads` and waits for all results, in order.
    pub async fn run(self, payloads: Vec<Payload>) -> Result<Vec<Output>, EngineError> {
        let model = self.model.clone();
        let receivers = self.submit(payloads)?;
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(
                rx.await
                    .map_err(|_| EngineError::Stopped(model.to_string()))??,
            );
        }
        Ok(out)
    }
}

struct Worker {
    model: Arc<str>,
    metrics: crate::metrics::ModelMetrics,
    state: ModelState,
    limits: EngineLimits,
    health: Arc<Health>,
    reload: Option<Reload>,
    /// Consecutive counted failures (bad input aside); the next successful call resets it.
    failures: u32,
    /// Whether the model was reloaded already in the current failure streak.
    reloaded: bool,
    /// How long a missing model waits between load attempts.
    retry_every: Duration,
    /// What a plugin call costs besides its tokens, learned from the calls made (a cell: it
    /// learns while the worker lends out its model).
    call_cost: RefCell<CallCost>,
}

/// Whether a worker has its model.
enum ModelState {
    /// Loaded and serving.
    Ready(ModelRunner),
    /// Dropped to be reloaded, and the load failed.
    Missing(Missing),
}

/// A model dropped to be reloaded whose load failed.
struct Missing {
    /// Why it was dropped.
    cause: String,
    /// Why the last load attempt failed.
    error: PluginError,
    /// When the load was last tried.
    last_attempt: Instant,
}

impl Missing {
    /// What `/health` says.
    fn reason(&self, retry_every: Duration) -> String {
        format!(
            "model is not loaded: {}, and loading it failed: {}; the load is retried every {} s",
            self.cause,
            self.error.message,
            retry_every.as_secs()
        )
    }

    /// The error every item gets: `Device` when the load failed for want of the device or
    /// its memory, else `Internal`.
    fn answer(&self, model: &str, retry_every: Duration) -> PluginError {
        let code = match self.error.code {
            ErrorCode::Device | ErrorCode::OutOfMemory => ErrorCode::Device,
            _ => ErrorCode::Internal,
        };
        let next = retry_every.saturating_sub(self.last_attempt.elapsed());
        PluginError::new(
            code,
            format!(
                "model {model} is not loaded: {}, and loading it failed: {}; the next load \
                 attempt is in {} s",
                self.cause,
                self.error.message,
                next.as_secs()
            ),
        )
    }
}

/// Marks the worker dead when its thread ends, normally or by panic.
struct AliveGuard(Arc<Health>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}

impl Worker {
    /// Runs the worker loop until the engine is dropped, restarting it if it panics (the items
    /// it held are answered with an error as their senders drop).
    fn supervise(mut self, rx: mpsc::Receiver<Vec<Item>>) {
        let _guard = AliveGuard(self.health.clone());
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.run(&rx))) {
                Ok(()) => return,
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    self.health.restarts.fetch_add(1, Ordering::SeqCst);
                    self.health.calling(None);
                    self.health
                        .record(Some(format!("worker restarted after a panic: {why}")));
                    tracing::error!(
                        model = &*self.model,
                        error = why,
                        "worker panicked; restarting it"
                    );
                }
            }
        }
    }

    fn run(&mut self, rx: &mpsc::Receiver<Vec<Item>>) {
        let mut lane: VecDeque<Item> = VecDeque::new();
        loop {
            if lane.is_empty() {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(items) => lane.extend(items),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.retry_load();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            while let Ok(items) = rx.try_recv() {
                lane.extend(items);
            }
            let take = lane.len().min(self.limits.batch_size * WINDOW_BATCHES);
            let mut window: Vec<Item> = lane.drain(..take).collect();
            // Requests whose caller went away are not computed (dropping frees their place).
            window.retain(|it| !it.reply.is_closed());
            window.sort_by_key(|it| it.payload.shape());
            self.retry_load();
            for batch in self.cut(window) {
                self.run_batch(batch);
            }
        }
    }

    /// Cuts a window sorted by [`Shape`] into the plugin calls the batching policy picks.
    fn cut(&self, window: Vec<Item>) -> Vec<Vec<Item>> {
        let shapes: Vec<Shape> = window.iter().map(|it| it.payload.shape()).collect();
        let limits = batching::Limits {
            batch_size: self.limits.batch_size,
            max_batch_tokens: self.limits.max_batch_tokens,
        };
        let cost = self.call_cost.borrow().cost();
        self.metrics.call_overhead.set(cost.overhead as i64);
        self.metrics
            .call_cost_padded
            .set(i64::from(cost.work == batching::Work::Padded));
        let calls = batching::cut(&shapes, limits, cost);
        let mut items = window.into_iter();
        calls
            .into_iter()
            .map(|call| items.by_ref().take(call.len()).collect())
            .collect()
    }

    fn forward(&self, runner: &ModelRunner, items: &[Item]) -> Result<Vec<Output>, PluginError> {
        let rows = items.len();
        let key = items[0].payload.shape().key;
        let m = &self.metrics;
        let started = Instant::now();
        self.health.calling(Some(started));
        for it in items {
            m.queue_seconds
                .observe((started - it.queued_at).as_secs_f64());
        }
        m.batch_size.observe(rows as f64);
        let tokens = items.iter().map(|it| it.payload.shape().tokens);
        let padded = rows * tokens.clone().max().unwrap_or(0);
        let live = tokens.sum();
        let text = !matches!(key, Key::Image { .. });
        if text {
            m.batch_tokens.observe(padded as f64);
        }
        let outputs = catch_unwind(AssertUnwindSafe(|| match key {
            Key::Embed => self.embed(runner, items),
            Key::Score => self.score(runner, items),
            Key::Classify => self.classify(runner, items),
            Key::Image { height, width } => Self::embed_images(runner, items, height, width),
        }))
        .unwrap_or_else(|_| Err(PluginError::internal("panic while calling the plugin")));
        self.health.calling(None);
        let seconds = started.elapsed().as_secs_f64();
        m.inference_seconds.observe(seconds);
        let outputs = outputs?;
        if text {
            self.call_cost.borrow_mut().observe(padded, live, seconds);
        }
        if outputs.len() != rows {
            return Err(PluginError::internal(format!(
                "plugin returned {} results for {rows} inputs",
                outputs.len()
            )));
        }
        Ok(outputs)
    }

    fn tokens(items: &[Item]) -> Vec<&Tokens> {
        items
            .iter()
            .filter_map(|it| match &it.payload {
                Payload::Tokens(t) | Payload::Pair(t) | Payload::Classify(t) => Some(t),
                Payload::Pixels { .. } => None,
            })
            .collect()
    }

    fn embed(&self, runner: &ModelRunner, items: &[Item]) -> Result<Vec<Output>, PluginError> {
        let batch = pad(&Self::tokens(items), self.limits.pad_id);
        vectors(runner.embed_tokens(&batch)?, items.len())
    }

    fn score(&self, runner: &ModelRunner, items: &[Item]) -> Result<Vec<Output>, PluginError> {
        let tokens = pad(&Self::tokens(items), self.limits.pad_id);
        let result = runner.score_pairs(&PairBatch { tokens })?;
        if result.scores.len() != items.len() {
            return Err(PluginError::internal(format!(
                "plugin returned {} scores for {} pairs",
                result.scores.len(),
                items.len()
            )));
        }
        Ok(result.scores.iter().map(|s| Output::Score(*s)).collect())
    }

    fn classify(&self, runner: &ModelRunner, items: &[Item]) -> Result<Vec<Output>, PluginError> {
        let batch = pad(&Self::tokens(items), self.limits.pad_id);
        let result = runner.classify_tokens(&batch)?;
        let labels = result.labels as usize;
        if result.rows as usize != items.len() || result.values.len() != items.len() * labels {
            return Err(PluginError::internal(format!(
                "plugin returned {} rows of {labels} logits ({} values) for {} texts",
                result.rows,
                result.values.len(),
                items.len()
            )));
        }
        Ok(result
            .values
            .chunks(labels.max(1))
            .map(|l| Output::Logits(l.to_vec()))
            .collect())
    }

    /// Embeds images of `height` × `width` pixels (a batch holds one size).
    fn embed_images(
        runner: &ModelRunner,
        items: &[Item],
        height: u32,
        width: u32,
    ) -> Result<Vec<Output>, PluginError> {
        let mut values = Vec::new();
        for it in items {
            if let Payload::Pixels { values: v, .. } = &it.payload {
                values.extend_from_slice(v);
            }
        }
        let batch = PixelBatch {
            rows: items.len() as u32,
            channels: 3,
            height,
            width,
            values: values.into(),
        };
        vectors(runner.embed_pixels(&batch)?, items.len())
    }

    fn run_batch(&mut self, items: Vec<Item>) {
        let runner = match &self.state {
            ModelState::Ready(runner) => runner,
            ModelState::Missing(missing) => {
                let e = missing.answer(&self.model, self.retry_every);
                self.count(&e, items.len());
                for item in items {
                    item.answer(Err(EngineError::Plugin(e.clone())));
                }
                return;
            }
        };
        match self.forward(runner, &items) {
            Ok(outputs) => {
                self.failures = 0;
                self.reloaded = false;
                self.health.record(None);
                for (item, out) in items.into_iter().zip(outputs) {
                    item.answer(Ok(out));
                }
            }
            Err(e) if items.len() > 1 && splits(e.code) => {
                tracing::warn!(
                    model = &*self.model,
                    rows = items.len(),
                    error = %e,
                    "batch failed; retrying its halves"
                );
                let mut items = items;
                let second = items.split_off(items.len() / 2);
                self.run_batch(items);
                self.run_batch(second);
            }
            Err(e) => self.fail(items, e),
        }
    }

    /// Answers every item of a batch with the plugin's error `e`, counting it as one failure
    /// (bad input aside) and reloading the model when the streak calls for it.
    fn fail(&mut self, items: Vec<Item>, e: PluginError) {
        self.count(&e, items.len());
        // Health first, so that a caller told of the failure sees it in /health.
        let counts = e.code != ErrorCode::InvalidInput;
        if counts {
            tracing::error!(
                model = &*self.model,
                rows = items.len(),
                error = %e,
                "plugin call failed"
            );
            self.failures = self.failures.saturating_add(1);
            self.health
                .record(Some(format!("last plugin call failed: {}", e.message)));
        }
        for item in items {
            item.answer(Err(EngineError::Plugin(e.clone())));
        }
        if counts && self.failures >= RELOAD_AFTER && !self.reloaded {
            self.reload_model(&e);
        }
    }

    /// Counts `rows` failed items in the metrics, by reason.
    fn count(&self, e: &PluginError, rows: usize) {
        let reason = if e.message.contains("panic") {
            "panic"
        } else {
            e.code.as_str()
        };
        crate::metrics::global()
            .failures
            .with_label_values(&[&*self.model, reason])
            .inc_by(rows as u64);
    }
}

/// Whether a batch that failed with `code` is retried in halves: bad input fails only its own
/// rows, and fewer rows need less memory. Other failures are not the rows' doing.
fn splits(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::InvalidInput | ErrorCode::OutOfMemory)
}

impl Worker {
    /// Loads the model again after `RELOAD_AFTER` counted failures in a row, `cause` the last;
    /// once per failure streak, when the engine was given the means. A model on a GPU, or one
    /// out of memory, is dropped first; on the CPU the new copy loads before the old one goes.
    fn reload_model(&mut self, cause: &PluginError) {
        if self.reload.is_none() {
            return;
        }
        self.reloaded = true;
        self.health.restarts.fetch_add(1, Ordering::SeqCst);
        let on_device = match &self.state {
            ModelState::Ready(runner) => !runner.described.device.eq_ignore_ascii_case("cpu"),
            ModelState::Missing(_) => true,
        };
        let free_first = on_device || cause.code == ErrorCode::OutOfMemory;
        let streak = format!(
            "{} failed calls in a row (last: {})",
            self.failures, cause.message
        );
        tracing::warn!(
            model = &*self.model,
            failures = self.failures,
            free_first,
            "plugin calls keep failing; reloading the model"
        );
        if free_first {
            // The new copy may need the memory the old one holds: drop the old one first.
            let old = std::mem::replace(
                &mut self.state,
                ModelState::Missing(Missing {
                    cause: format!("it was dropped to be reloaded after {streak}"),
                    error: PluginError::internal("the reload has not finished"),
                    last_attempt: Instant::now(),
                }),
            );
            drop(old);
            match self.load() {
                Ok(runner) => {
                    self.state = ModelState::Ready(runner);
                    self.health.record(Some(format!(
                        "model reloaded (old copy freed first) after {streak}; healthy again \
                         after its next successful call"
                    )));
                    tracing::info!(model = &*self.model, "model reloaded");
                }
                Err(error) => {
                    tracing::error!(
                        model = &*self.model,
                        error = %error,
                        "reloading the model failed; it is not loaded"
                    );
                    self.load_failed(error);
                }
            }
        } else {
            match self.load() {
                Ok(runner) => {
                    // The old copy served until now; it goes once the new one is in place.
                    let old = std::mem::replace(&mut self.state, ModelState::Ready(runner));
                    drop(old);
                    self.health.record(Some(format!(
                        "model reloaded after {streak}; healthy again after its next successful \
                         call"
                    )));
                    tracing::info!(model = &*self.model, "model reloaded");
                }
                Err(error) => {
                    self.health.record(Some(format!(
                        "reloading the model after {streak} failed: {}; the loaded copy keeps \
                         serving",
                        error.message
                    )));
                    tracing::error!(
                        model = &*self.model,
                        error = %error,
                        "reloading the model failed; the loaded copy keeps serving"
                    );
                }
            }
        }
    }

    /// Tries to load a missing model again, when `retry_every` has passed since the last try.
    fn retry_load(&mut self) {
        let ModelState::Missing(missing) = &self.state else {
            return;
        };
        if missing.last_attempt.elapsed() < self.retry_every {
            return;
        }
        self.health.restarts.fetch_add(1, Ordering::SeqCst);
        tracing::info!(model = &*self.model, "loading the missing model again");
        match self.load() {
            Ok(runner) => {
                self.state = ModelState::Ready(runner);
                self.health.record(Some(
                    "model loaded again after it was missing; healthy again after its next \
                     successful call"
                        .into(),
                ));
                tracing::info!(model = &*self.model, "model loaded again");
            }
            Err(error) => {
                tracing::error!(
                    model = &*self.model,
                    error = %error,
                    "loading the missing model failed again"
                );
                self.load_failed(error);
            }
        }
    }

    /// Calls the reload function, a panic in it being an error.
    fn load(&self) -> Result<ModelRunner, PluginError> {
        let Some(reload) = &self.reload else {
            return Err(PluginError::internal("this engine cannot load its model"));
        };
        catch_unwind(AssertUnwindSafe(reload))
            .unwrap_or_else(|_| Err(PluginError::internal("panic while loading the model")))
    }

    /// Records a failed load of a missing model, for its items and `/health`.
    fn load_failed(&mut self, error: PluginError) {
        if let ModelState::Missing(missing) = &mut self.state {
            missing.error = error;
            missing.last_attempt = Instant::now();
            self.health.record(Some(missing.reason(self.retry_every)));
        }
    }
}

/// Splits a plugin's `[rows, dim]` result into one vector per input, checking its shape.
fn vectors(
    result: ember_plugin_api::EmbeddingBatch,
    rows: usize,
) -> Result<Vec<Output>, PluginError> {
    let dim = result.dim as usize;
    if result.rows as usize != rows || result.values.len() != rows * dim || dim == 0 {
        return Err(PluginError::internal(format!(
            "plugin returned {} rows of {} values ({} in all) for {rows} inputs",
            result.rows,
            result.dim,
            result.values.len()
        )));
    }
    Ok(result
        .values
        .chunks(dim)
        .map(|v| Output::Vector(v.to_vec()))
        .collect())
}

/// Right-pads token sequences into one batch, with a pooling mask when a row leaves tokens
/// out of pooling.
pub fn pad(rows: &[&Tokens], pad_id: i64) -> TokenBatch {
    let seq = rows.iter().map(|t| t.len()).max().unwrap_or(0);
    let n = rows.len() * seq;
    let mut ids = Vec::with_capacity(n);
    let mut mask = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for t in rows {
        let padding = seq - t.len();
        ids.extend_from_slice(&t.ids);
        ids.extend(std::iter::repeat_n(pad_id, padding));
        mask.extend(std::iter::repeat_n(1i64, t.len()));
        mask.extend(std::iter::repeat_n(0i64, padding));
        types.extend_from_slice(&t.type_ids);
        types.extend(std::iter::repeat_n(0i64, padding));
    }
    let mut pooling = Vec::new();
    if rows.iter().any(|t| t.unpooled > 0) {
        pooling = mask.clone();
        for (r, t) in rows.iter().enumerate() {
            pooling[r * seq..r * seq + t.unpooled.min(seq)].fill(0);
        }
    }
    TokenBatch {
        rows: rows.len() as u32,
        seq_len: seq as u32,
        input_ids: ids.into(),
        attention_mask: mask.into(),
        token_type_ids: types.into(),
        pooling_mask: pooling.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_plugin_api::sdk::into_model_box;
    use ember_plugin_api::{DType, EmbeddingBatch, LoadedModel, Model, ScoreBatch};

    /// An in-process model: the vector of a row is [its length, its first token]; a row
    /// containing token 666 is rejected as invalid input, token 999 makes the plugin panic.
    struct Echo;

    impl Model for Echo {
        fn describe(&self) -> LoadedModel {
            LoadedModel {
                embedding_dim: 2,
                device: "cpu".into(),
                dtype: DType::Fp32,
                concurrent_calls: false,
            }
        }

        fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
            let s = batch.seq_len as usize;
            if batch.input_ids.contains(&999) {
                panic!("simulated plugin crash");
            }
            if batch.input_ids.contains(&666) {
                return Err(PluginError::invalid_input("token 666 is not allowed"));
            }
            let lens = batch.row_lengths();
            let values: Vec<f32> = (0..batch.rows as usize)
                .flat_map(|r| [lens[r] as f32, batch.input_ids[r * s] as f32])
                .collect();
            Ok(EmbeddingBatch {
                rows: batch.rows,
                dim: 2,
                values: values.into(),
            })
        }

        /// The score of a pair is minus its length.
        fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
            let scores: Vec<f32> = batch
                .tokens
                .row_lengths()
                .iter()
                .map(|l| -(*l as f32))
                .collect();
            Ok(ScoreBatch {
                scores: scores.into(),
            })
        }

        /// The vector of an image is [its first value, the batch's rows].
        fn embed_pixels(&self, batch: &PixelBatch) -> Result<EmbeddingBatch, PluginError> {
            let per = (batch.channels * batch.height * batch.width) as usize;
            let values: Vec<f32> = batch
                .values
                .chunks(per)
                .flat_map(|img| [img[0], batch.rows as f32])
                .collect();
            Ok(EmbeddingBatch {
                rows: batch.rows,
                dim: 2,
                values: values.into(),
            })
        }
    }

    fn engine(queue_size: usize) -> Engine {
        let runner = ModelRunner::new(into_model_box(Box::new(Echo)));
        let limits = EngineLimits {
            batch_size: 4,
            max_batch_tokens: 1024,
            queue_size,
            pad_id: 0,
        };
        Engine::start("echo", runner, limits, None).unwrap()
    }

    fn toks(first: i64, len: usize) -> Payload {
        let mut ids = vec![first];
        ids.resize(len, 7);
        Payload::Tokens(Tokens {
            type_ids: vec![0; len],
            ids,
            unpooled: 0,
        })
    }

    #[tokio::test]
    async fn results_come_back_in_order_across_sorted_batches() {
        let e = engine(100);
        let payloads: Vec<Payload> = (0..10).map(|i| toks(i as i64 + 1, 10 - i)).collect();
        let out = e.run(payloads).await.unwrap();
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o, &Output::Vector(vec![(10 - i) as f32, (i + 1) as f32]));
        }
        assert_eq!(e.queued(), 0);
    }

    #[tokio::test]
    async fn a_bad_input_fails_only_its_own_request() {
        let e = engine(100);
        // Submitted together so they share batches.
        let good1 = e.submit(vec![toks(1, 3), toks(2, 3)]).unwrap();
        let bad = e.submit(vec![toks(666, 3)]).unwrap();
        let good2 = e.submit(vec![toks(3, 3)]).unwrap();
        for rx in good1.into_iter().chain(good2) {
            assert!(matches!(rx.await.unwrap(), Ok(Output::Vector(_))));
        }
        let err = bad.into_iter().next().unwrap().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("token 666"), "{err}");
        assert!(
            e.health.status().is_ok(),
            "bad input does not make the model unhealthy"
        );
        assert_eq!(e.queued(), 0);
    }

    #[tokio::test]
    async fn a_plugin_panic_is_an_error_and_marks_health() {
        let e = engine(100);
        let err = e.run(vec![toks(999, 2)]).await.unwrap_err();
        assert!(err.to_string().contains("simulated plugin crash"), "{err}");
        assert!(e
            .health
            .status()
            .unwrap_err()
            .contains("simulated plugin crash"));
        // The worker survives and recovers on the next good call.
        assert!(e.run(vec![toks(1, 2)]).await.is_ok());
        assert!(e.health.status().is_ok());
    }

    #[tokio::test]
    async fn repeated_failures_reload_the_model_and_health_recovers() {
        let reloads = Arc::new(AtomicUsize::new(0));
        let counter = reloads.clone();
        let reload: Reload = Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(ModelRunner::new(into_model_box(Box::new(Echo))))
        });
        let limits = EngineLimits {
            batch_size: 4,
            max_batch_tokens: 1024,
            queue_size: 100,
            pad_id: 0,
        };
        let runner = ModelRunner::new(into_model_box(Box::new(Echo)));
        let e = Engine::start("echo", runner, limits, Some(reload)).unwrap();
        for i in 1..RELOAD_AFTER {
            assert!(e.run(vec![toks(999, 2)]).await.is_err());
            assert_eq!(reloads.load(Ordering::SeqCst), 0, "after {i} failures");
        }
        assert!(e.run(vec![toks(999, 2)]).await.is_err());
        // The failing item is answered first; the reload follows on the worker.
        let deadline = Instant::now() + Duration::from_secs(5);
        while e.health.restarts() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(reloads.load(Ordering::SeqCst), 1);
        let reason = e.health.status().unwrap_err();
        assert!(reason.contains("model reloaded"), "{reason}");
        assert_eq!(e.health.restarts(), 1);
        // Bad input is the caller's fault: it never counts towards a reload.
        for _ in 0..RELOAD_AFTER {
            assert!(e.run(vec![toks(666, 2)]).await.is_err());
        }
        assert_eq!(reloads.load(Ordering::SeqCst), 1);
        assert!(e.run(vec![toks(1, 2)]).await.is_ok());
        assert!(e.health.status().is_ok());
        assert_eq!(e.queued(), 0);
    }

    #[tokio::test]
    async fn texts_pairs_and_images_are_batched_by_call() {
        let e = engine(100);
        let image = |v: f32| Payload::Pixels {
            height: 1,
            width: 1,
            values: vec![v; 3],
        };
        let pair = |len: usize| {
            let Payload::Tokens(t) = toks(5, len) else {
                unreachable!()
            };
            Payload::Pair(t)
        };
        let out = e
            .run(vec![
                toks(1, 3),
                pair(4),
                image(7.0),
                toks(2, 2),
                image(8.0),
                pair(6),
            ])
            .await
            .unwrap();
        assert_eq!(out[0], Output::Vector(vec![3.0, 1.0]));
        assert_eq!(out[1], Output::Score(-4.0));
        // A request's items reach the worker together: the two images make one call of two
        // rows, images only; the two texts one call of their own.
        assert_eq!(out[2], Output::Vector(vec![7.0, 2.0]));
        assert_eq!(out[3], Output::Vector(vec![2.0, 2.0]));
        assert_eq!(out[4], Output::Vector(vec![8.0, 2.0]));
        assert_eq!(out[5], Output::Score(-6.0));
        assert_eq!(e.queued(), 0);
    }

    /// What the scripted models of one test record, shared with the test.
    #[derive(Default)]
    struct Probe {
        /// Plugin calls made, held calls aside.
        calls: AtomicUsize,
        /// Rows of each call, in order, held calls aside.
        rows: Mutex<Vec<usize>>,
        /// `load N` and `drop N` of the model copies, in order (the first copy is 0).
        events: Mutex<Vec<String>>,
        /// Copies loaded so far.
        copies: AtomicUsize,
        /// Reloads asked of the engine's reload function.
        reloads: AtomicUsize,
        /// How many of the next reloads fail.
        failing_reloads: AtomicUsize,
    }

    impl Probe {
        fn events(&self) -> Vec<String> {
            self.events.lock().unwrap().clone()
        }

        fn rows(&self) -> Vec<usize> {
            self.rows.lock().unwrap().clone()
        }
    }

    /// A batch holding this token waits twice at the model's barrier: once to tell the test
    /// that the worker is inside the call, once to be released.
    const HOLD: i64 = 1000;
    /// A batch holding this token fails as a whole with a device error.
    const DEVICE_LOST: i64 = 13;
    /// A batch holding this token runs out of memory when it has more than two rows.
    const BIG: i64 = 88;
    /// A batch holding this token runs out of memory whatever its size.
    const HUGE: i64 = 77;

    /// An in-process model driven by the tokens it gets (see the constants above; 666 is bad
    /// input as for [`Echo`]), on a device of the test's choosing, that logs its loads and
    /// drops; the vector of a row is [its length, its first token].
    struct Scripted {
        copy: usize,
        device: &'static str,
        probe: Arc<Probe>,
        hold: Arc<std::sync::Barrier>,
    }

    impl Scripted {
        fn load(
            device: &'static str,
            probe: &Arc<Probe>,
            hold: &Arc<std::sync::Barrier>,
        ) -> ModelRunner {
            let copy = probe.copies.fetch_add(1, Ordering::SeqCst);
            probe.events.lock().unwrap().push(format!("load {copy}"));
            ModelRunner::new(into_model_box(Box::new(Scripted {
                copy,
                device,
                probe: probe.clone(),
                hold: hold.clone(),
            })))
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            if let Ok(mut events) = self.probe.events.lock() {
                events.push(format!("drop {}", self.copy));
            }
        }
    }

    impl Model for Scripted {
        fn describe(&self) -> LoadedModel {
            LoadedModel {
                embedding_dim: 2,
                device: self.device.into(),
                dtype: DType::Fp32,
                concurrent_calls: false,
            }
        }

        fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
            let ids = batch.input_ids.as_slice();
            if ids.contains(&HOLD) {
                self.hold.wait();
                self.hold.wait();
            } else {
                self.probe.calls.fetch_add(1, Ordering::SeqCst);
                self.probe.rows.lock().unwrap().push(batch.rows as usize);
            }
            if ids.contains(&DEVICE_LOST) {
                return Err(PluginError::new(ErrorCode::Device, "device lost"));
            }
            if ids.contains(&HUGE) || (ids.contains(&BIG) && batch.rows > 2) {
                return Err(PluginError::new(ErrorCode::OutOfMemory, "out of memory"));
            }
            if ids.contains(&666) {
                return Err(PluginError::invalid_input("token 666 is not allowed"));
            }
            Echo.embed_tokens(batch)
        }
    }

    /// A scripted engine with its probe and barrier; reloads load a new scripted copy unless
    /// the probe says they fail.
    fn scripted(
        device: &'static str,
        batch_size: usize,
        queue_size: usize,
        retry_every: Duration,
    ) -> (Engine, Arc<Probe>, Arc<std::sync::Barrier>) {
        let probe = Arc::new(Probe::default());
        let hold = Arc::new(std::sync::Barrier::new(2));
        let runner = Scripted::load(device, &probe, &hold);
        let (p, h) = (probe.clone(), hold.clone());
        let reload: Reload = Box::new(move || {
            p.reloads.fetch_add(1, Ordering::SeqCst);
            let fail = p
                .failing_reloads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(PluginError::new(ErrorCode::Device, "no device memory left"));
            }
            Ok(Scripted::load(device, &p, &h))
        });
        let limits = EngineLimits {
            batch_size,
            max_batch_tokens: 1 << 20,
            queue_size,
            pad_id: 0,
        };
        let e =
            Engine::start_retrying("scripted", runner, limits, Some(reload), retry_every).unwrap();
        (e, probe, hold)
    }

    /// Runs `queue` while the worker is held inside a call, so that everything it submits
    /// is waiting when the worker next forms a window.
    fn while_held<T>(e: &Engine, hold: &std::sync::Barrier, queue: impl FnOnce() -> T) -> T {
        let held = e.submit(vec![toks(HOLD, 1)]).unwrap();
        hold.wait();
        let out = queue();
        hold.wait();
        for rx in held {
            assert!(rx.blocking_recv().unwrap().is_ok());
        }
        out
    }

    /// Submits one item alone and waits for its result.
    fn one(e: &Engine, payload: Payload) -> Result<Output, EngineError> {
        let rx = e.submit(vec![payload]).unwrap().pop().unwrap();
        rx.blocking_recv().unwrap()
    }

    fn code(result: Result<Output, EngineError>) -> ErrorCode {
        match result {
            Err(EngineError::Plugin(e)) => e.code,
            other => panic!("expected a plugin error, got {other:?}"),
        }
    }

    #[test]
    fn admission_is_all_or_nothing_within_the_queue_bound() {
        let (e, _, hold) = scripted("cpu", 4, 3, RETRY_LOAD_EVERY);
        let waiting = while_held(&e, &hold, || {
            // The held item and these two fill the queue of 3.
            let waiting = e.submit(vec![toks(1, 2), toks(2, 2)]).unwrap();
            let refused = e.submit(vec![toks(3, 2)]);
            assert!(
                matches!(
                    refused,
                    Err(EngineError::Overloaded {
                        queued: 3,
                        capacity: 3,
                        ..
                    })
                ),
                "{refused:?}"
            );
            assert_eq!(e.queued(), 3, "a refused request leaves nothing queued");
            waiting
        });
        for rx in waiting {
            assert!(rx.blocking_recv().unwrap().is_ok());
        }
        assert_eq!(e.queued(), 0);
        assert!(e.submit((0..3).map(|_| toks(1, 2)).collect()).is_ok());
    }

    #[test]
    fn a_request_larger_than_the_queue_is_too_large_not_overloaded() {
        let e = engine(3);
        let refused = e.submit((0..4).map(|_| toks(1, 2)).collect());
        let Err(err @ EngineError::TooLarge { .. }) = refused else {
            panic!("expected TooLarge, got {refused:?}");
        };
        assert!(matches!(
            err,
            EngineError::TooLarge {
                items: 4,
                capacity: 3,
                ..
            }
        ));
        assert_eq!(e.queued(), 0, "a refused request leaves nothing queued");
        let api = crate::api::ApiError::from(err);
        assert_eq!(api.status, 413);
        assert!(
            api.message.contains("4 items") && api.message.contains("INFINITY_QUEUE_SIZE"),
            "{}",
            api.message
        );
        // A request that fits an empty queue is only ever refused as overload, with 429.
        let overloaded = EngineError::Overloaded {
            model: "m".into(),
            queued: 2,
            capacity: 3,
        };
        assert_eq!(crate::api::ApiError::from(overloaded).status, 429);
        assert!(e.submit((0..3).map(|_| toks(1, 2)).collect()).is_ok());
    }

    #[test]
    fn a_systemic_failure_fails_the_whole_batch_in_one_call() {
        let (e, probe, hold) = scripted("cpu", 32, 100, RETRY_LOAD_EVERY);
        let rxs = while_held(&e, &hold, || {
            e.submit((0..32).map(|i| toks(DEVICE_LOST, 1 + i % 3)).collect())
                .unwrap()
        });
        for rx in rxs {
            assert_eq!(code(rx.blocking_recv().unwrap()), ErrorCode::Device);
        }
        assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
        assert_eq!(probe.rows(), vec![32]);
        let reason = e.health.status().unwrap_err();
        assert!(reason.contains("device lost"), "{reason}");
        // One failure counted, not one per row: no reload yet.
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 0);
        assert_eq!(e.queued(), 0);
    }

    #[test]
    fn out_of_memory_splits_until_the_rows_fit() {
        let (e, probe, hold) = scripted("cpu", 8, 100, RETRY_LOAD_EVERY);
        let rxs = while_held(&e, &hold, || {
            e.submit((0..8).map(|_| toks(BIG, 4)).collect()).unwrap()
        });
        for rx in rxs {
            assert_eq!(
                rx.blocking_recv().unwrap().unwrap(),
                Output::Vector(vec![4.0, BIG as f32])
            );
        }
        // 8 fails, 4 fails, 2 and 2 fit; the other 4 fails, 2 and 2 fit.
        assert_eq!(probe.rows(), vec![8, 4, 2, 2, 4, 2, 2]);
        assert_eq!(probe.calls.load(Ordering::SeqCst), 7);
        assert!(e.health.status().is_ok());
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_bad_input_in_a_shared_batch_fails_only_its_own_request() {
        let (e, probe, hold) = scripted("cpu", 4, 100, RETRY_LOAD_EVERY);
        let (good1, bad, good2) = while_held(&e, &hold, || {
            (
                e.submit(vec![toks(1, 3), toks(2, 3)]).unwrap(),
                e.submit(vec![toks(666, 3)]).unwrap(),
                e.submit(vec![toks(3, 3)]).unwrap(),
            )
        });
        for rx in good1.into_iter().chain(good2) {
            assert!(matches!(rx.blocking_recv().unwrap(), Ok(Output::Vector(_))));
        }
        let bad = bad.into_iter().next().unwrap().blocking_recv().unwrap();
        let err = bad.as_ref().unwrap_err().to_string();
        assert!(err.contains("token 666"), "{err}");
        assert_eq!(code(bad), ErrorCode::InvalidInput);
        // 4 fails; [1, 2] fits; [666, 3] fails; [666] fails alone, [3] fits.
        assert_eq!(probe.rows(), vec![4, 2, 2, 1, 1]);
        assert!(e.health.status().is_ok());
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_failure_streak_reloads_the_model_once() {
        let (e, probe, _) = scripted("cpu", 4, 100, RETRY_LOAD_EVERY);
        for i in 0..10 {
            assert_eq!(
                code(one(&e, toks(DEVICE_LOST, 2))),
                ErrorCode::Device,
                "{i}"
            );
        }
        assert_eq!(probe.calls.load(Ordering::SeqCst), 10);
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
        assert_eq!(e.health.restarts(), 1);
        // A success ends the streak; the next one may reload again.
        assert!(one(&e, toks(1, 2)).is_ok());
        assert!(e.health.status().is_ok());
        for _ in 0..RELOAD_AFTER {
            assert!(one(&e, toks(DEVICE_LOST, 2)).is_err());
        }
        // Answered after the reload that follows the streak's last failure.
        assert!(one(&e, toks(1, 2)).is_ok());
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 2);
    }

    /// The load/drop log of a scripted model on `device` reloaded after failures on `token`.
    fn reload_events(device: &'static str, token: i64) -> Vec<String> {
        let (e, probe, _) = scripted(device, 4, 100, RETRY_LOAD_EVERY);
        for _ in 0..RELOAD_AFTER {
            assert!(one(&e, toks(token, 2)).is_err());
        }
        // Answered after the reload.
        assert!(one(&e, toks(1, 2)).is_ok());
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
        probe.events()
    }

    #[test]
    fn a_gpu_or_out_of_memory_model_is_freed_before_its_reload() {
        let freed_first = ["load 0", "drop 0", "load 1"];
        assert_eq!(reload_events("cuda:0", DEVICE_LOST), freed_first);
        assert_eq!(reload_events("cpu", HUGE), freed_first);
    }

    #[test]
    fn a_cpu_model_loads_its_new_copy_before_dropping_the_old() {
        assert_eq!(
            reload_events("cpu", DEVICE_LOST),
            ["load 0", "load 1", "drop 0"]
        );
    }

    #[test]
    fn a_failed_cpu_reload_keeps_the_loaded_copy_serving() {
        let (e, probe, _) = scripted("cpu", 4, 100, RETRY_LOAD_EVERY);
        probe.failing_reloads.store(1, Ordering::SeqCst);
        for _ in 0..RELOAD_AFTER {
            assert!(one(&e, toks(DEVICE_LOST, 2)).is_err());
        }
        assert!(one(&e, toks(1, 2)).is_ok());
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
        assert_eq!(probe.events(), ["load 0"]);
    }

    #[tokio::test]
    async fn a_failed_reload_leaves_the_worker_answering_errors() {
        let (e, probe, _) = scripted("cuda:0", 4, 100, RETRY_LOAD_EVERY);
        probe.failing_reloads.store(usize::MAX, Ordering::SeqCst);
        let run = |payload| {
            let e = e.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), e.run(vec![payload]))
                    .await
                    .expect("the worker answers")
            }
        };
        for _ in 0..RELOAD_AFTER {
            assert!(run(toks(DEVICE_LOST, 2)).await.is_err());
        }
        for _ in 0..5 {
            let Err(EngineError::Plugin(err)) = run(toks(1, 2)).await else {
                panic!("a missing model answers an error");
            };
            assert_eq!(err.code, ErrorCode::Device);
            assert!(
                err.message.contains("not loaded") && err.message.contains("no device memory left"),
                "{}",
                err.message
            );
        }
        let reason = e.health.status().unwrap_err();
        assert!(
            reason.contains("not loaded") && reason.contains("no device memory left"),
            "{reason}"
        );
        // The old copy was freed, no new one came, the plugin was not called again, and the
        // load is not retried before its interval.
        assert_eq!(probe.events(), ["load 0", "drop 0"]);
        assert_eq!(probe.calls.load(Ordering::SeqCst), RELOAD_AFTER as usize);
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
        assert_eq!(e.queued(), 0);
    }

    #[test]
    fn a_missing_model_is_loaded_again_after_the_retry_interval() {
        let retry = Duration::from_millis(300);
        let (e, probe, _) = scripted("cuda:0", 4, 100, retry);
        probe.failing_reloads.store(1, Ordering::SeqCst);
        for _ in 0..RELOAD_AFTER {
            assert!(one(&e, toks(DEVICE_LOST, 2)).is_err());
        }
        std::thread::sleep(retry + Duration::from_millis(200));
        assert_eq!(one(&e, toks(1, 2)).unwrap(), Output::Vector(vec![2.0, 1.0]));
        assert!(e.health.status().is_ok());
        assert_eq!(probe.reloads.load(Ordering::SeqCst), 2);
        assert_eq!(probe.events(), ["load 0", "drop 0", "load 1"]);
    }

    #[tokio::test]
    async fn reserved_places_count_until_used_or_dropped() {
        let e = engine(3);
        let places = e.reserve(2).unwrap();
        assert_eq!(e.queued(), 2);
        assert!(matches!(e.reserve(2), Err(EngineError::Overloaded { .. })));
        drop(places);
        assert_eq!(e.queued(), 0, "unused places are given back");
        let places = e.reserve(2).unwrap();
        assert!(
            places.submit(vec![toks(1, 2)]).is_err(),
            "one payload per place"
        );
        assert_eq!(e.queued(), 0);
        let out = e
            .reserve(2)
            .unwrap()
            .run(vec![toks(4, 2), toks(5, 3)])
            .await
            .unwrap();
        assert_eq!(out[1], Output::Vector(vec![3.0, 5.0]));
        assert_eq!(e.queued(), 0);
    }

    #[test]
    fn pad_right_pads_with_mask() {
        let a = Tokens {
            ids: vec![1, 2, 3],
            type_ids: vec![0, 0, 0],
            unpooled: 0,
        };
        let b = Tokens {
            ids: vec![4],
            type_ids: vec![0],
            unpooled: 0,
        };
        let batch = pad(&[&a, &b], 9);
        assert_eq!(batch.seq_len, 3);
        assert_eq!(batch.input_ids.as_slice(), &[1, 2, 3, 4, 9, 9]);
        assert_eq!(batch.attention_mask.as_slice(), &[1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.row_lengths(), vec![3, 1]);
        assert!(batch.pooling_mask.is_empty(), "no row leaves tokens out");
        assert_eq!(batch.pooling_mask(), batch.attention_mask.as_slice());
    }

    #[test]
    fn pad_masks_the_prompt_out_of_pooling_per_row() {
        let prompted = Tokens {
            ids: vec![1, 2, 3, 4],
            type_ids: vec![0; 4],
            unpooled: 2,
        };
        let bare = Tokens {
            ids: vec![5, 6],
            type_ids: vec![0; 2],
            unpooled: 0,
        };
        let batch = pad(&[&prompted, &bare], 0);
        assert_eq!(batch.attention_mask.as_slice(), &[1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.pooling_mask.as_slice(), &[0, 0, 1, 1, 1, 1, 0, 0]);
        batch.validate().unwrap();
    }
}
