//! Admission: places in a model's queue are taken for all of a request's items or none, and
//! each place is given back however its item ends.

use super::{Engine, EngineError, Item, Output, Payload};
use ember_plugin_api::PluginError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::oneshot;

/// One item's place in its model's queue count, given back when dropped, so that an item
/// lost in any way (answered, abandoned, dropped by a worker restart) frees its place.
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
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
            self.metrics.fail("overloaded", n);
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
