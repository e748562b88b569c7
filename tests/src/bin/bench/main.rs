//! ember's benchmark: throughput and latency of the server over HTTP against the same plugin
//! called directly in this process (same texts, same tokenizer, no HTTP, no queue), printing
//! the ratio of the two, plus the time from process start to the first embedding.
//!
//! Usage: ember-bench [MODEL_DIR] (default: fixtures/all-MiniLM-L6-v2), with BACKEND
//! (default optimum), DEVICE (default cpu), DTYPES (default auto) and BENCH_SECONDS (default 5
//! per scenario) in the environment.

use ember_e2e::{bin_dir, client, fixture, Server};
use ember_host::config::RawSettings;
use ember_host::engine::pad;
use ember_host::startup::{load_plugin, prepare};
use serde_json::json;
use std::time::{Duration, Instant};

/// Deterministic texts of 8 to 60 words.
fn texts(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "embedding",
        "server",
        "vector",
        "search",
        "query",
        "document",
        "rerank",
        "model",
        "latency",
        "throughput",
        "batch",
        "token",
        "plugin",
        "runtime",
        "quality",
        "ranking",
        "semantic",
        "retrieval",
        "index",
        "cosine",
        "similarity",
        "language",
        "dense",
        "sparse",
    ];
    (0..n)
        .map(|i| {
            let len = 8 + (i * 37) % 53;
            (0..len)
                .map(|j| WORDS[(i * 7 + j * 13) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

struct Scenario {
    concurrency: usize,
    batch: usize,
}

struct Measured {
    items_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summarize(items: usize, elapsed: Duration, mut lat: Vec<f64>) -> Measured {
    lat.sort_by(|a, b| a.total_cmp(b));
    Measured {
        items_per_s: items as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    }
}

fn server_run(server: &Server, corpus: &[String], s: &Scenario, secs: f64) -> Measured {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let results: Vec<(usize, Vec<f64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.concurrency)
            .map(|w| {
                scope.spawn(move || {
                    let http = client();
                    let url = format!("{}/v1/embeddings", server.url);
                    let mut items = 0;
                    let mut lat = Vec::new();
                    let mut k = w * 101;
                    while Instant::now() < deadline {
                        let batch: Vec<&String> = (0..s.batch)
                            .map(|j| &corpus[(k + j) % corpus.len()])
                            .collect();
                        k += s.batch;
                        let t = Instant::now();
                        let resp = http
                            .post(&url)
                            .json(&json!({"input": batch}))
                            .send()
                            .unwrap();
                        assert_eq!(resp.status().as_u16(), 200);
                        let _ = resp.bytes().unwrap();
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        items += s.batch;
                    }
                    (items, lat)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let items = results.iter().map(|r| r.0).sum();
    let lat = results.into_iter().flat_map(|r| r.1).collect();
    summarize(items, elapsed, lat)
}

fn main() -> anyhow::Result<()> {
    let model = std::env::args()
        .nth(1)
        .unwrap_or_else(|| fixture("all-MiniLM-L6-v2").display().to_string());
    let backend = std::env::var("BACKEND").unwrap_or_else(|_| "optimum".into());
    let device = std::env::var("DEVICE").unwrap_or_else(|_| "cpu".into());
    let dtypes = std::env::var("DTYPES").unwrap_or_else(|_| "auto".into());
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let corpus = texts(512);
    let scenarios = [
        Scenario {
            concurrency: 1,
            batch: 1,
        },
        Scenario {
            concurrency: 8,
            batch: 32,
        },
        Scenario {
            concurrency: 32,
            batch: 1,
        },
    ];
    println!(
        "ember benchmark: model {model}, backend {backend} on {device} ({dtypes}), {secs} s per scenario, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Start-up: process start to first embedding, median of 5.
    let env = [
        ("MODEL_NAMES", model.as_str()),
        ("BACKEND", backend.as_str()),
        ("DEVICE", device.as_str()),
        ("DTYPES", dtypes.as_str()),
        ("PLUGIN_DIR", &*bin_dir().display().to_string()),
    ];
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let server = Server::start(&env_refs);
        let (status, _) = server.post("/v1/embeddings", &json!({"input": "warm"}));
        assert_eq!(status, 200);
        starts.push(t.elapsed().as_secs_f64() * 1e3);
        drop(server);
    }
    starts.sort_by(|a, b| a.total_cmp(b));
    println!(
        "start to first embedding: median {:.0} ms (runs: {:?})",
        starts[2],
        starts.iter().map(|x| x.round() as u64).collect::<Vec<_>>()
    );

    // Direct: the plugin in this process, batches run back to back.
    let rt = tokio::runtime::Runtime::new()?;
    let direct: Vec<Measured> = {
        std::env::set_var("MODEL_NAMES", &model);
        std::env::set_var("BACKEND", &backend);
        std::env::set_var("DEVICE", &device);
        std::env::set_var("DTYPES", &dtypes);
        std::env::set_var("PLUGIN_DIR", bin_dir());
        let settings = RawSettings::load()?
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let plugin = load_plugin(&settings)?;
        let prepared = rt.block_on(prepare(&plugin, &settings.models[0], &settings))?;
        scenarios
            .iter()
            .map(|s| {
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let started = Instant::now();
                let (mut items, mut lat, mut k) = (0, Vec::new(), 0);
                while Instant::now() < deadline {
                    let batch: Vec<String> = (0..s.batch)
                        .map(|j| corpus[(k + j) % corpus.len()].clone())
                        .collect();
                    k += s.batch;
                    let t = Instant::now();
                    let tokens = prepared.encoder.encode(&batch).unwrap();
                    let refs: Vec<_> = tokens.iter().collect();
                    let out = prepared
                        .runner
                        .embed_tokens(&pad(&refs, prepared.encoder.pad_id))
                        .unwrap();
                    assert_eq!(out.rows as usize, s.batch);
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    items += s.batch;
                }
                summarize(items, started.elapsed(), lat)
            })
            .collect()
    };

    let server = Server::start(&env_refs);
    println!(
        "{:<24} {:>12} {:>12} {:>7} {:>9} {:>9}",
        "scenario", "server it/s", "direct it/s", "ratio", "p50 ms", "p99 ms"
    );
    for (s, d) in scenarios.iter().zip(&direct) {
        let m = server_run(&server, &corpus, s, secs);
        println!(
            "{:<24} {:>12.1} {:>12.1} {:>7.3} {:>9.1} {:>9.1}",
            format!("concurrency {} / batch {}", s.concurrency, s.batch),
            m.items_per_s,
            d.items_per_s,
            m.items_per_s / d.items_per_s,
            m.p50_ms,
            m.p99_ms
        );
    }
    println!(
        "(direct p50 per batch: {})",
        direct
            .iter()
            .map(|d| format!("{:.1} ms", d.p50_ms))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
