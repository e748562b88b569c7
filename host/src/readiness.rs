//! Start-up readiness: the server listens at once and answers every route with a 503 that says
//! how far loading has come (each model downloading, loading or warming up) until every model
//! is ready; then the gate opens onto the real router.

use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tower::ServiceExt;

/// Where a model is in its start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the models before it.
    Waiting,
    /// Resolving and downloading its files.
    Downloading,
    /// Reading its configuration and tokenizer, and loading it into the plugin.
    Loading,
    /// Running the warm-up batch.
    WarmingUp,
    /// Serving.
    Ready,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Downloading => "downloading",
            Phase::Loading => "loading",
            Phase::WarmingUp => "warming up",
            Phase::Ready => "ready",
        }
    }
}

/// The start-up progress of every model.
pub struct Progress {
    started: Instant,
    models: Mutex<Vec<(String, Phase)>>,
}

impl Progress {
    /// Progress of `names`, all waiting.
    pub fn new(names: impl IntoIterator<Item = String>) -> Arc<Progress> {
        Arc::new(Progress {
            started: Instant::now(),
            models: Mutex::new(names.into_iter().map(|n| (n, Phase::Waiting)).collect()),
        })
    }

    /// Moves model `index` to `phase`.
    pub fn set(&self, index: usize, phase: Phase) {
        if let Ok(mut models) = self.models.lock() {
            if let Some(m) = models.get_mut(index) {
                m.1 = phase;
            }
        }
    }

    /// The 503 body: a message, and each model's phase.
    fn body(&self) -> serde_json::Value {
        let models = self.models.lock().map(|m| m.clone()).unwrap_or_default();
        let ready = models.iter().filter(|m| m.1 == Phase::Ready).count();
        let current = models
            .iter()
            .find(|m| !matches!(m.1, Phase::Ready | Phase::Waiting))
            .map(|(name, phase)| format!("; model {name} is {}", phase.as_str()))
            .unwrap_or_default();
        json!({
            "status": "loading",
            "error": {
                "message": format!(
                    "ember is starting: {ready} of {} models ready{current}; retry shortly",
                    models.len()
                ),
                "type": "service_unavailable",
                "param": null,
                "code": 503,
            },
            "models": models
                .iter()
                .map(|(name, phase)| json!({"model": name, "phase": phase.as_str()}))
                .collect::<Vec<_>>(),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        })
    }
}

/// The router served while loading, and the lock that opens it onto the real one.
#[derive(Clone)]
pub struct Gate {
    progress: Arc<Progress>,
    app: Arc<OnceLock<Router>>,
    api_key: Option<Arc<str>>,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A closed gate reporting `progress` (and `metrics` on `/metrics`); while loading it asks
    /// for `api_key` as the real router does (the real router checks it itself once open).
    pub fn new(progress: Arc<Progress>, api_key: Option<&str>, metrics: Arc<Metrics>) -> Gate {
        Gate {
            progress,
            app: Arc::new(OnceLock::new()),
            api_key: api_key.map(Arc::from),
            metrics,
        }
    }

    /// The router to serve: 503 with progress until [`Gate::open`], then `app`.
    pub fn router(&self) -> Router {
        Router::new().fallback(pass).with_state(self.clone())
    }

    /// Sends every request from now on to `app`.
    pub fn open(&self, app: Router) {
        let _ = self.app.set(app);
    }
}

async fn pass(State(gate): State<Gate>, request: Request) -> Response {
    match gate.app.get() {
        Some(app) => match app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => match gate
            .api_key
            .as_deref()
            .and_then(|key| crate::http::key_refusal(&request, key))
        {
            Some(refused) => refused.into_response(),
            // Scrapers see the start-up too (load times appear as models finish).
            None if request.uri().path() == "/metrics" => crate::http::metrics_text(&gate.metrics),
            None => loading(&gate),
        },
    }
}

/// The 503 answer while loading.
fn loading(gate: &Gate) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "5")],
        Json(gate.progress.body()),
    )
        .into_response()
}
