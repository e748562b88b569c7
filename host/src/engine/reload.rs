//! Reloading a model whose calls keep failing, and loading again one left missing.

use super::health::Health;
use super::ModelRunner;
use ember_plugin_api::{ErrorCode, PluginError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Loads a model again, for a worker whose plugin calls keep failing.
pub type Reload = Box<dyn Fn() -> Result<ModelRunner, PluginError> + Send>;

/// Consecutive counted failures (bad input aside) after which a model is reloaded, once per
/// failure streak.
pub(super) const RELOAD_AFTER: u32 = 3;

/// How long a model that is not loaded waits between load attempts.
pub(super) const RETRY_LOAD_EVERY: Duration = Duration::from_secs(30);

/// Whether a worker has its model.
pub(super) enum ModelState {
    /// Loaded and serving.
    Ready(ModelRunner),
    /// Dropped to be reloaded, and the load failed.
    Missing(Missing),
}

/// A model dropped to be reloaded whose load failed.
pub(super) struct Missing {
    /// Why it was dropped.
    cause: String,
    /// Why the last load attempt failed.
    error: PluginError,
    /// When the load was last tried.
    last_attempt: Instant,
}

impl Missing {
    /// What `/health` says.
    pub(super) fn reason(&self, retry_every: Duration) -> String {
        format!(
            "model is not loaded: {}, and loading it failed: {}; the load is retried every {} s",
            self.cause,
            self.error.message,
            retry_every.as_secs()
        )
    }

    /// The error every item gets: `Device` when the load failed for want of the device or
    /// its memory, else `Internal`.
    pub(super) fn answer(&self, model: &str, retry_every: Duration) -> PluginError {
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

/// A worker's model and the means to load it again: what decides when it is reloaded, and
/// how.
pub(super) struct Keeper {
    /// The model's name, for logs and errors.
    pub(super) model: Arc<str>,
    /// The model, or why it is missing.
    pub(super) state: ModelState,
    /// Loads the model again; `None` when the engine was not given the means.
    pub(super) reload: Option<Reload>,
    /// Whether the model was reloaded already in the current failure streak.
    pub(super) reloaded: bool,
    /// How long a missing model waits between load attempts.
    pub(super) retry_every: Duration,
    /// Where reloads and load failures are told.
    pub(super) health: Arc<Health>,
}

impl Keeper {
    /// A call succeeded: the failure streak is over.
    pub(super) fn succeeded(&mut self) {
        self.reloaded = false;
    }

    /// Reloads the model when `failures` counted failures in a row (`cause` the last) reach
    /// `RELOAD_AFTER`, once per streak.
    pub(super) fn failed(&mut self, failures: u32, cause: &PluginError) {
        if failures >= RELOAD_AFTER && !self.reloaded {
            self.reload_model(failures, cause);
        }
    }

    /// Loads the model again, once per failure streak, when the engine was given the means.
    /// A model on a GPU, or one out of memory, is dropped first; on the CPU the new copy
    /// loads before the old one goes.
    fn reload_model(&mut self, failures: u32, cause: &PluginError) {
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
        let streak = format!("{failures} failed calls in a row (last: {})", cause.message);
        tracing::warn!(
            model = &*self.model,
            failures,
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
    pub(super) fn retry_load(&mut self) {
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
        catch_unwind(AssertUnwindSafe(reload)).unwrap_or_else(|panic| {
            let why = ember_plugin_api::sdk::panic_message(&*panic);
            Err(PluginError::panicked("loading the model", &why))
        })
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
