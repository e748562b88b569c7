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
//!
//! The parts: [`admission`] (queue places, all or none), [`batching`] (where a window is cut
//! into calls, pure), [`worker`] (the thread's loop and its failure policy), [`calls`] (one
//! plugin call's inputs and outputs), [`reload`] (reloading a failing model, retrying a
//! missing one) and [`health`] (what `/health` reads).

mod admission;
mod batching;
mod calls;
mod health;
mod reload;
mod runner;
mod worker;

pub use admission::Places;
pub use calls::pad;
pub use health::Health;
pub use reload::Reload;
pub use runner::ModelRunner;

use crate::metrics::{Metrics, ModelMetrics};
use crate::text::Tokens;
use admission::Slot;
use batching::{CallCost, Key, Shape};
use ember_plugin_api::PluginError;
use reload::{Keeper, ModelState, RETRY_LOAD_EVERY};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use worker::Worker;

/// Input of one item.
#[derive(Debug)]
pub enum Payload {
    /// A tokenized text to embed.
    Tokens(Tokens),
    /// A tokenized text whose token states are asked for.
    States(Tokens),
    /// A tokenized text whose SPLADE weights are asked for.
    Sparse(Tokens),
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
            Payload::States(t) => Shape {
                key: Key::States,
                tokens: t.len().max(1),
            },
            Payload::Sparse(t) => Shape {
                key: Key::Sparse,
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
    /// Non-zero vocabulary weights: ascending token ids and their weights.
    Sparse {
        /// Token ids.
        indices: Vec<u32>,
        /// Their weights.
        values: Vec<f32>,
    },
    /// The state of each token, `[tokens, dim]` flat.
    States {
        /// Width of each state.
        dim: usize,
        /// The states, token after token.
        values: Vec<f32>,
    },
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
impl Item {
    /// Answers the item; its place in the queue is given back first, so that a caller who
    /// re-submits at once never sees its own finished item still counted.
    fn answer(self, result: Result<Output, EngineError>) {
        let Item { reply, slot, .. } = self;
        drop(slot);
        let _ = reply.send(result);
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
    metrics: ModelMetrics,
}

impl Engine {
    /// Starts the worker thread of `model`, recording into `metrics`.
    /// `reload`, when given, loads the model again after repeated plugin failures.
    pub fn start(
        model: &str,
        runner: ModelRunner,
        limits: EngineLimits,
        reload: Option<Reload>,
        metrics: &Metrics,
    ) -> std::io::Result<Engine> {
        Self::start_retrying(model, runner, limits, reload, RETRY_LOAD_EVERY, metrics)
    }

    /// [`Engine::start`], trying to load a missing model again every `retry_every`.
    fn start_retrying(
        model: &str,
        runner: ModelRunner,
        limits: EngineLimits,
        reload: Option<Reload>,
        retry_every: Duration,
        metrics: &Metrics,
    ) -> std::io::Result<Engine> {
        let metrics = metrics.for_model(model);
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Health::default());
        health.alive.store(true, Ordering::SeqCst);
        let device = runner.described.device.to_string();
        let worker = Worker {
            metrics: metrics.clone(),
            keeper: Keeper {
                model: model.into(),
                state: ModelState::Ready(runner),
                reload,
                reloaded: false,
                retry_every,
                health: health.clone(),
            },
            limits: limits.clone(),
            failures: 0,
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
            metrics,
        })
    }

    /// The model's metrics.
    pub fn metrics(&self) -> &ModelMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests;
