//! Prometheus metrics of the process, served by `GET /metrics` in the text format: requests by
//! route and status, queue depth per model, batch sizes and tokens, queue / tokenization /
//! inference durations, failures by reason, model load times, and the HTTP server's open
//! connections and refusals.
//!
//! One [`Metrics`] is made at start-up and handed to what records into it: the HTTP server
//! and router (an `Arc<Metrics>`), and each model's engine and tokenization (its
//! [`ModelMetrics`], the series labelled with the model).

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// Every metric ember records.
pub struct Metrics {
    registry: Registry,
    /// Finished HTTP requests by method (one of [`method_label`]), matched route and status.
    pub requests: IntCounterVec,
    /// HTTP request durations by matched route.
    pub request_seconds: HistogramVec,
    /// Items waiting or running, per model (set when scraped).
    pub queue_depth: IntGaugeVec,
    /// Rows per plugin call, per model.
    pub batch_size: HistogramVec,
    /// Padded tokens (rows x longest row) per plugin call, per model.
    pub batch_tokens: HistogramVec,
    /// Time items wait in a model's queue before their batch starts.
    pub queue_seconds: HistogramVec,
    /// Time spent tokenizing a request's inputs, per model.
    pub tokenize_seconds: HistogramVec,
    /// Time of one plugin call, per model.
    pub inference_seconds: HistogramVec,
    /// Failed items by model and reason (invalid-input, unsupported, internal, panic,
    /// overloaded).
    pub failures: IntCounterVec,
    /// Seconds from the start of a model's download to its warm engine.
    pub load_seconds: GaugeVec,
    /// What one plugin call costs besides its tokens, in padded tokens, as the batching
    /// policy has learned it, per model.
    pub call_overhead: IntGaugeVec,
    /// 1 when a model's calls are learned to cost their padded tokens, 0 when their live
    /// tokens (a backend that skips padding).
    pub call_cost_padded: IntGaugeVec,
    /// 1 once every model is ready, 0 while starting.
    pub ready: IntGauge,
    /// HTTP connections open now.
    pub http_connections: IntGauge,
    /// Requests and connections the HTTP server cut short, by reason (header_timeout,
    /// body_timeout, body_budget).
    pub http_refused: IntCounterVec,
}

/// The `method` label of a request: one of a fixed set, so that arbitrary methods do not
/// create series.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid histogram");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered in a registry of their own.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let seconds = prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "ember_requests_total",
            "HTTP requests by method, route and status.",
            &["method", "route", "status"],
        );
        let http_refused = counter(
            "ember_http_refused_total",
            "Requests and connections the HTTP server cut short, by reason.",
            &["reason"],
        );
        let failures = counter(
            "ember_failures_total",
            "Items that failed, by model and reason.",
            &["model", "reason"],
        );
        let queue_depth = IntGaugeVec::new(
            Opts::new("ember_queue_depth", "Items waiting or running per model."),
            &["model"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(queue_depth.clone()))
            .expect("unique metric");
        let load_seconds = GaugeVec::new(
            Opts::new(
                "ember_model_load_seconds",
                "Seconds to download, load and warm up each model.",
            ),
            &["model"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(load_seconds.clone()))
            .expect("unique metric");
        let call_overhead = IntGaugeVec::new(
            Opts::new(
                "ember_call_overhead_tokens",
                "What one plugin call costs besides its tokens, in tokens (padded or live, as \
                 ember_call_cost_padded says), as batching has learned it.",
            ),
            &["model"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(call_overhead.clone()))
            .expect("unique metric");
        let call_cost_padded = IntGaugeVec::new(
            Opts::new(
                "ember_call_cost_padded",
                "1 when batching has learned that a call's time grows with its padded tokens \
                 (rows x longest), 0 when with its live tokens.",
            ),
            &["model"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(call_cost_padded.clone()))
            .expect("unique metric");
        let ready = IntGauge::new(
            "ember_ready",
            "1 once every model is ready, 0 while starting.",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(ready.clone()))
            .expect("unique metric");
        let http_connections =
            IntGauge::new("ember_http_connections", "HTTP connections open now.")
                .expect("valid gauge");
        registry
            .register(Box::new(http_connections.clone()))
            .expect("unique metric");
        Metrics {
            ready,
            http_connections,
            http_refused,
            request_seconds: histogram(
                &registry,
                "ember_request_duration_seconds",
                "HTTP request durations by route.",
                &["route"],
                seconds.clone(),
            ),
            batch_size: histogram(
                &registry,
                "ember_batch_size",
                "Rows per plugin call.",
                &["model"],
                prometheus::exponential_buckets(1.0, 2.0, 10).expect("valid buckets"),
            ),
            batch_tokens: histogram(
                &registry,
                "ember_batch_tokens",
                "Padded tokens per plugin call.",
                &["model"],
                prometheus::exponential_buckets(16.0, 2.0, 14).expect("valid buckets"),
            ),
            queue_seconds: histogram(
                &registry,
                "ember_queue_duration_seconds",
                "Time items wait in the queue before their batch starts.",
                &["model"],
                seconds.clone(),
            ),
            tokenize_seconds: histogram(
                &registry,
                "ember_tokenization_duration_seconds",
                "Time to tokenize a request's inputs.",
                &["model"],
                seconds.clone(),
            ),
            inference_seconds: histogram(
                &registry,
                "ember_inference_duration_seconds",
                "Time of one plugin call.",
                &["model"],
                seconds,
            ),
            registry,
            requests,
            queue_depth,
            failures,
            load_seconds,
            call_overhead,
            call_cost_padded,
        }
    }

    /// The series of `model`: the per-batch and tokenization ones resolved once, so that a
    /// batch records them without looking labels up, and its failures by reason.
    pub fn for_model(&self, model: &str) -> ModelMetrics {
        ModelMetrics {
            queue_seconds: self.queue_seconds.with_label_values(&[model]),
            batch_size: self.batch_size.with_label_values(&[model]),
            batch_tokens: self.batch_tokens.with_label_values(&[model]),
            inference_seconds: self.inference_seconds.with_label_values(&[model]),
            call_overhead: self.call_overhead.with_label_values(&[model]),
            call_cost_padded: self.call_cost_padded.with_label_values(&[model]),
            tokenize_seconds: self.tokenize_seconds.with_label_values(&[model]),
            failures: self.failures.clone(),
            model: model.into(),
        }
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The series of one model: what its worker records for every batch, its tokenization and
/// its failed items.
#[derive(Clone)]
pub struct ModelMetrics {
    /// Queue wait of each item.
    pub queue_seconds: Histogram,
    /// Rows per plugin call.
    pub batch_size: Histogram,
    /// Padded tokens per plugin call.
    pub batch_tokens: Histogram,
    /// Duration of each plugin call.
    pub inference_seconds: Histogram,
    /// The overhead of a call the batching policy uses.
    pub call_overhead: prometheus::IntGauge,
    /// Whether the policy counts a call's padded tokens (1) or its live ones (0).
    pub call_cost_padded: prometheus::IntGauge,
    /// Time spent tokenizing a request's inputs.
    pub tokenize_seconds: Histogram,
    failures: IntCounterVec,
    model: Arc<str>,
}

impl ModelMetrics {
    /// Counts `items` failed items for `reason` (see [`Metrics::failures`]).
    pub fn fail(&self, reason: &str, items: usize) {
        self.failures
            .with_label_values(&[&self.model, reason])
            .inc_by(items as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_fixed_set_share_one_label() {
        for m in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
            assert_eq!(method_label(m), m);
        }
        for m in ["FOO", "get", "PROPFIND", "CONNECT", "TRACE", ""] {
            assert_eq!(method_label(m), "other", "{m}");
        }
    }
}
