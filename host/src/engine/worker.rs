//! A model's worker thread: it takes a window of waiting items, cuts it into plugin calls,
//! makes them one at a time and answers each item; a failed call is split or failed whole,
//! and failures count towards a reload.

use super::batching::{self, CallCost, Key, Shape};
use super::health::AliveGuard;
use super::reload::{Keeper, ModelState};
use super::ModelRunner;
use super::{EngineError, EngineLimits, Item, Output};
use ember_plugin_api::{ErrorCode, PluginError};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How many batches' worth of queued items are sorted together by length.
const WINDOW_BATCHES: usize = 4;

/// The state of a model's worker thread.
pub(super) struct Worker {
    pub(super) metrics: crate::metrics::ModelMetrics,
    /// The model (its name and health too), and when and how it is loaded again.
    pub(super) keeper: Keeper,
    pub(super) limits: EngineLimits,
    /// Consecutive counted failures (bad input aside); the next successful call resets it.
    pub(super) failures: u32,
    /// What a plugin call costs besides its tokens, learned from the calls made (a cell: it
    /// learns while the worker lends out its model).
    pub(super) call_cost: RefCell<CallCost>,
}

impl Worker {
    /// Runs the worker loop until the engine is dropped, restarting it if it panics (the items
    /// it held are answered with an error as their senders drop).
    pub(super) fn supervise(mut self, rx: mpsc::Receiver<Vec<Item>>) {
        let _guard = AliveGuard(self.keeper.health.clone());
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.run(&rx))) {
                Ok(()) => return,
                Err(panic) => {
                    let why = ember_plugin_api::sdk::panic_message(&*panic);
                    self.keeper.health.restarts.fetch_add(1, Ordering::SeqCst);
                    self.keeper.health.calling(None);
                    self.keeper
                        .health
                        .record(Some(format!("worker restarted after a panic: {why}")));
                    tracing::error!(
                        model = &*self.keeper.model,
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
                        self.keeper.retry_load();
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
            self.keeper.retry_load();
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
        self.keeper.health.calling(Some(started));
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
            Key::States => self.token_states(runner, items),
            Key::Sparse => self.sparse(runner, items),
            Key::Score => self.score(runner, items),
            Key::Classify => self.classify(runner, items),
            Key::Image { height, width } => Self::embed_images(runner, items, height, width),
        }))
        .unwrap_or_else(|panic| {
            let why = ember_plugin_api::sdk::panic_message(&*panic);
            Err(PluginError::panicked("a call the host caught", &why))
        });
        self.keeper.health.calling(None);
        let seconds = started.elapsed().as_secs_f64();
        m.inference_seconds.observe(seconds);
        let outputs = outputs?;
        // Token-state and sparse calls also compute and copy more than a call's states, which
        // the cost of a call (learned for the calls most traffic makes) does not predict.
        if text && !matches!(key, Key::States | Key::Sparse) {
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

    fn run_batch(&mut self, items: Vec<Item>) {
        let runner = match &self.keeper.state {
            ModelState::Ready(runner) => runner,
            ModelState::Missing(missing) => {
                let e = missing.answer(&self.keeper.model, self.keeper.retry_every);
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
                self.keeper.succeeded();
                self.keeper.health.record(None);
                for (item, out) in items.into_iter().zip(outputs) {
                    item.answer(Ok(out));
                }
            }
            Err(e) if items.len() > 1 && splits(e.code) => {
                tracing::warn!(
                    model = &*self.keeper.model,
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
                model = &*self.keeper.model,
                rows = items.len(),
                error = %e,
                "plugin call failed"
            );
            self.failures = self.failures.saturating_add(1);
            self.keeper
                .health
                .record(Some(format!("last plugin call failed: {}", e.message)));
        }
        for item in items {
            item.answer(Err(EngineError::Plugin(e.clone())));
        }
        if counts {
            self.keeper.failed(self.failures, &e);
        }
    }

    /// Counts `rows` failed items in the metrics, by reason.
    fn count(&self, e: &PluginError, rows: usize) {
        let reason = if e.is_panic() {
            "panic"
        } else {
            e.code.as_str()
        };
        self.metrics.fail(reason, rows);
    }
}

/// Whether a batch that failed with `code` is retried in halves: bad input fails only its own
/// rows, and fewer rows need less memory. Other failures are not the rows' doing.
fn splits(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::InvalidInput | ErrorCode::OutOfMemory)
}
