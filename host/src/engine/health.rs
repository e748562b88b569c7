//! The liveness of a model's worker, as `/health` reads it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one plugin call may run before `/health` reports the worker as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// Liveness of a model's worker, for `/health`.
#[derive(Debug, Default)]
pub struct Health {
    pub(super) alive: AtomicBool,
    last_failure: Mutex<Option<String>>,
    call_started: Mutex<Option<Instant>>,
    pub(super) restarts: AtomicUsize,
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

    /// Records the last failure, or `None` once calls succeed again.
    pub(super) fn record(&self, failure: Option<String>) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = failure;
        }
    }

    /// Records that a plugin call started, or `None` that it ended.
    pub(super) fn calling(&self, started: Option<Instant>) {
        if let Ok(mut c) = self.call_started.lock() {
            *c = started;
        }
    }
}

/// Marks the worker dead when its thread ends, normally or by panic.
pub(super) struct AliveGuard(pub(super) Arc<Health>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}
