//! ember's benchmark: per backend, in one run, the server's throughput and latency over HTTP
//! against the same plugin called directly (its length-sorted batches as the ceiling), the
//! time from process start to the first embedding with the page cache cold and warm, and the
//! resident memory; printed and written as a Markdown table.
//!
//! Usage: ember-bench [MODEL_DIR] (default: fixtures/all-MiniLM-L6-v2), with in the
//! environment BENCH_BACKENDS (default `torch optimum ctranslate2`), DEVICE (default cpu),
//! DTYPES (default auto), BENCH_SECONDS (default 5 per throughput measure), BENCH_ROUNDS
//! (default 3: each throughput figure is the median of that many measures, taken in rounds
//! through all backends), BENCH_STARTS (default 5 per start-up figure) and BENCH_MARKDOWN (a
//! file to write the table to).
//!
//! `ember-bench --load URL CLIENTS TEXTS SECONDS` only loads a server already running at URL
//! (for profiling it) and prints the throughput and latency.

mod load;
mod report;
mod start;

use ember_e2e::{bin_dir, fixture, Server};
use load::{Direct, Scenario};
use std::path::Path;

/// Texts per call of the direct baseline (the server's default `BATCH_SIZES`).
const DIRECT_BATCH: usize = 32;
/// Texts in the corpus.
const TEXTS: usize = 512;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The plugin measured in a process of its own (so that backends never share one), which
/// prints its figures as JSON.
fn direct_in_child(env: &[(&str, &str)], secs: f64) -> anyhow::Result<Direct> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--direct")
        .envs(env.iter().copied())
        .env("BENCH_SECONDS", secs.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the direct run failed: {}",
        out.status
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `--load URL CLIENTS TEXTS SECONDS`.
fn load_only(corpus: &[String], args: &[String]) -> anyhow::Result<()> {
    let [url, clients, batch, secs] = args else {
        anyhow::bail!("usage: ember-bench --load URL CLIENTS TEXTS SECONDS");
    };
    let s = Scenario {
        clients: clients.parse()?,
        batch: batch.parse()?,
    };
    let m = load::to(url, corpus, s, secs.parse()?);
    println!(
        "{} clients x {} texts: {:.1} texts/s, p50 {:.1} ms, p99 {:.1} ms",
        s.clients, s.batch, m.texts_per_s, m.p50_ms, m.p99_ms
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let corpus = load::texts(TEXTS);
    let secs = number("BENCH_SECONDS", 5.0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--load") {
        return load_only(&corpus, &args[1..]);
    }
    if args.first().map(String::as_str) == Some("--direct") {
        let direct = load::direct(&corpus, DIRECT_BATCH, secs)?;
        println!("{}", serde_json::to_string(&direct)?);
        return Ok(());
    }
    let model = std::env::args()
        .nth(1)
        .unwrap_or_else(|| fixture("all-MiniLM-L6-v2").display().to_string());
    let backends = var("BENCH_BACKENDS", "torch optimum ctranslate2");
    let device = var("DEVICE", "cpu");
    let dtypes = var("DTYPES", "auto");
    let starts = number("BENCH_STARTS", 5.0).max(1.0) as usize;
    let rounds = number("BENCH_ROUNDS", 3.0).max(1.0) as usize;
    let setup = report::Setup {
        // The model's directory name: where this checkout lives is nobody's business.
        model: Path::new(&model)
            .file_name()
            .map_or(model.clone(), |n| n.to_string_lossy().into_owned()),
        device: device.clone(),
        dtypes: dtypes.clone(),
        seconds: secs,
        texts: TEXTS,
        starts,
        rounds,
    };
    println!(
        "ember benchmark: {model} on {device} ({dtypes}), {secs} s per figure, {}",
        report::machine()
    );
    let plugin_dir = bin_dir().display().to_string();
    // The servers' own cache (the ctranslate2 conversion of the model lands there), so that a
    // cold start evicts it like the model's files instead of reading a warm copy.
    let cache = std::env::temp_dir().join(format!("ember-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cache)?;
    let hf_home = cache.display().to_string();
    let backends: Vec<&str> = backends
        .split([' ', ','])
        .filter(|b| !b.is_empty())
        .collect();
    let envs: Vec<[(&str, &str); 6]> = backends
        .iter()
        .map(|&backend| {
            [
                ("MODEL_NAMES", model.as_str()),
                ("BACKEND", backend),
                ("DEVICE", device.as_str()),
                ("DTYPES", dtypes.as_str()),
                ("PLUGIN_DIR", plugin_dir.as_str()),
                ("HF_HOME", hf_home.as_str()),
            ]
        })
        .collect();
    // Start-up first, while no server of this run holds the files in memory.
    let mut startups = Vec::new();
    for (backend, env) in backends.iter().zip(&envs) {
        println!("== {backend}");
        let startup = start::measure(env, &[Path::new(&model), &cache], starts);
        println!(
            "start to first embedding: cold {:.0} ms, warm {:.0} ms; RSS after load {:.0} MiB \
             ({:.0} MiB evicted, {:.0} MiB kept cached by other mappings)",
            startup.cold_ms,
            startup.warm_ms,
            startup.rss_mib,
            startup.evicted_mib,
            startup.kept_mib
        );
        startups.push(startup);
    }
    // Then every backend's throughput in rounds, each round through all backends in turn,
    // so that a slow spell of a shared machine weighs on one round of each, not on one
    // backend; each figure is the median of its rounds. One process at a time runs: the
    // plugin called directly, then a server of its own for the round.
    let mut rounds_of: Vec<Vec<report::Round>> = vec![Vec::new(); backends.len()];
    let mut peak_mib = vec![0f64; backends.len()];
    for round in 1..=rounds {
        for (i, (backend, env)) in backends.iter().zip(&envs).enumerate() {
            println!("== {backend}, round {round} of {rounds}");
            let direct = direct_in_child(env, secs)?;
            println!(
                "direct: one text {:.1} texts/s (p50 {:.1} ms); sorted calls of \
                 {DIRECT_BATCH} {:.1} texts/s",
                direct.one.texts_per_s, direct.one.p50_ms, direct.sorted.texts_per_s
            );
            let server = Server::start(env);
            let fresh = load::new_shapes(&server, &corpus);
            println!(
                "first request of {} new batch shapes, over a repeat: p50 {:.1} ms, most {:.1} ms",
                load::SHAPES_COUNT,
                fresh.p50_ms,
                fresh.max_ms
            );
            let run = |clients, batch| {
                let m = load::server(&server, &corpus, Scenario { clients, batch }, secs);
                println!(
                    "{clients:>2} clients x {batch:>2} texts: {:7.1} texts/s, p50 {:7.1} ms, \
                     p99 {:7.1} ms",
                    m.texts_per_s, m.p50_ms, m.p99_ms
                );
                m
            };
            let (one, big, small) = (run(1, 1), run(8, 32), run(32, 1));
            peak_mib[i] = peak_mib[i].max(server.memory_mib("VmHWM"));
            rounds_of[i].push(report::Round {
                direct,
                fresh,
                one,
                big,
                small,
            });
        }
    }
    let rows: Vec<report::Row> = backends
        .iter()
        .zip(startups)
        .zip(rounds_of)
        .zip(peak_mib)
        .map(|(((backend, startup), rounds), peak_mib)| report::Row {
            backend: backend.to_string(),
            startup,
            rounds,
            peak_mib,
        })
        .collect();
    let table = report::markdown(&setup, &rows);
    println!("\n{table}");
    if let Ok(path) = std::env::var("BENCH_MARKDOWN") {
        std::fs::write(&path, &table)?;
        println!("written to {path}");
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
