//! Throughput and latency: the server under concurrent HTTP clients, and the plugin called
//! directly in this process as the ceiling.

use ember_e2e::{client, Server};
use ember_host::config::RawSettings;
use ember_host::engine::pad;
use ember_host::startup::{load_plugin, prepare};
use serde_json::json;
use std::time::{Duration, Instant};

/// Deterministic texts of 8 to 60 words.
pub fn texts(n: usize) -> Vec<String> {
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

/// A load: `clients` callers, each sending `batch` texts per request, one request at a time.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Concurrent callers.
    pub clients: usize,
    /// Texts per request.
    pub batch: usize,
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    /// Texts embedded per second.
    pub texts_per_s: f64,
    /// Median latency of a request (or a direct call), ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summarize(texts: usize, elapsed: Duration, mut lat: Vec<f64>) -> Measured {
    lat.sort_by(|a, b| a.total_cmp(b));
    Measured {
        texts_per_s: texts as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    }
}

/// The server under `s` for `secs` seconds, each caller starting at its own place in `corpus`.
pub fn server(server: &Server, corpus: &[String], s: Scenario, secs: f64) -> Measured {
    to(&server.url, corpus, s, secs)
}

/// The server at `base` (`http://host:port`) under `s` for `secs` seconds.
pub fn to(base: &str, corpus: &[String], s: Scenario, secs: f64) -> Measured {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let results: Vec<(usize, Vec<f64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.clients)
            .map(|w| {
                scope.spawn(move || {
                    let http = client();
                    let url = format!("{base}/v1/embeddings");
                    let (mut texts, mut lat, mut k) = (0, Vec::new(), w * 101);
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
                            .expect("the server answers");
                        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
                        let _ = resp.bytes();
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        texts += s.batch;
                    }
                    (texts, lat)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let texts = results.iter().map(|r| r.0).sum();
    summarize(
        texts,
        elapsed,
        results.into_iter().flat_map(|r| r.1).collect(),
    )
}

/// What the first request of a batch shape a fresh server has not seen costs over a repeat of
/// the same request.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewShapes {
    /// Median over the shapes of the first request's extra time, ms.
    pub p50_ms: f64,
    /// The largest extra time, ms.
    pub max_ms: f64,
}

/// How many new shapes [`new_shapes`] times.
pub const SHAPES_COUNT: usize = 8;

/// Rows × words of the requests [`new_shapes`] sends, each a shape the warm-up (one batch of
/// `BATCH_SIZES` rows) and the others did not make.
const SHAPES: [(usize, usize); SHAPES_COUNT] = [
    (1, 5),
    (2, 17),
    (3, 29),
    (5, 41),
    (7, 53),
    (9, 70),
    (13, 90),
    (17, 110),
];

/// Sends each of [`SHAPES`] twice to a server that has only warmed up and returns what the
/// first request took over the second: the cost of a runtime that prepares work per input
/// shape (kernel selection, graph builds), paid by the first caller of every new shape.
pub fn new_shapes(server: &Server, corpus: &[String]) -> NewShapes {
    let words: Vec<&str> = corpus.iter().flat_map(|t| t.split(' ')).collect();
    let timed = |input: &[String]| {
        let t = Instant::now();
        let (status, body) = server.post("/v1/embeddings", &json!({ "input": input }));
        assert_eq!(status, 200, "{body}");
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut extra: Vec<f64> = SHAPES
        .iter()
        .enumerate()
        .map(|(k, &(rows, n))| {
            let input: Vec<String> = (0..rows)
                .map(|r| {
                    let start = (k * 131 + r * 17) % words.len();
                    (0..n)
                        .map(|j| words[(start + j) % words.len()])
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            let first = timed(&input);
            (first - timed(&input)).max(0.0)
        })
        .collect();
    extra.sort_by(f64::total_cmp);
    NewShapes {
        p50_ms: percentile(&extra, 0.5),
        max_ms: extra.last().copied().unwrap_or(0.0),
    }
}

/// What the plugin does when called directly, without HTTP or queue.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Direct {
    /// One text per call, in corpus order.
    pub one: Measured,
    /// The corpus sorted by length in calls of `batch` texts: the most a server could do.
    pub sorted: Measured,
}

/// Loads the plugin of the environment's `BACKEND` in this process and runs it for `secs`
/// seconds per measure.
pub fn direct(corpus: &[String], batch: usize, secs: f64) -> anyhow::Result<Direct> {
    let settings = RawSettings::load()?
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plugin = load_plugin(&settings)?;
    let rt = tokio::runtime::Runtime::new()?;
    let prepared = rt.block_on(prepare(&plugin, &settings.models[0], &settings))?;
    let encoder = &prepared.encoder;
    let mut tokens = encoder.encode(corpus).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = |calls: &[Vec<&ember_host::text::Tokens>]| -> Measured {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let (mut texts, mut lat) = (0, Vec::new());
        for call in calls.iter().cycle() {
            if Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            let out = prepared
                .runner
                .embed_tokens(&pad(call, encoder.pad_id))
                .expect("the plugin embeds");
            assert_eq!(out.rows as usize, call.len());
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            texts += call.len();
        }
        summarize(texts, started.elapsed(), lat)
    };
    let one: Vec<Vec<_>> = tokens.iter().map(|t| vec![t]).collect();
    let one = run(&one);
    tokens.sort_by_key(|t| t.len());
    let sorted: Vec<Vec<_>> = tokens.chunks(batch).map(|c| c.iter().collect()).collect();
    let sorted = run(&sorted);
    Ok(Direct { one, sorted })
}
