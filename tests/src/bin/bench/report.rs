//! The benchmark's results as a Markdown document.

use crate::load::{Direct, Measured};
use crate::start::Startup;
use std::fmt::Write;

/// Everything measured of one backend.
pub struct Row {
    /// The backend's name.
    pub backend: String,
    /// Start-up and memory.
    pub startup: Startup,
    /// The plugin called directly.
    pub direct: Direct,
    /// The server with 1 client sending 1 text.
    pub one: Measured,
    /// The server with 8 clients sending 32 texts.
    pub big: Measured,
    /// The server with 32 clients sending 1 text.
    pub small: Measured,
    /// Peak resident memory of the server after the loads, MiB.
    pub peak_mib: f64,
}

/// What the run measured, for the document's opening.
pub struct Setup {
    /// The model served.
    pub model: String,
    /// `DEVICE`.
    pub device: String,
    /// `DTYPES`.
    pub dtypes: String,
    /// Seconds per throughput measure.
    pub seconds: f64,
    /// Texts in the corpus.
    pub texts: usize,
    /// Starts per start-up figure.
    pub starts: usize,
}

/// The machine: CPU model, cores and memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1048576.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores, {gib:.0} GiB")
}

/// Today's date (UTC) as `date -u +%F` gives it.
pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or("unknown date".into(), |s| s.trim().to_string())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// The document: how it was measured, one row per backend, and the comparisons.
pub fn markdown(setup: &Setup, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ember benchmark\n");
    let _ = writeln!(
        out,
        "Measured by `ember-bench` on {} on {}: model `{}`, `DEVICE={}`, `DTYPES={}`, {} \
         synthetic texts of 8 to 60 words, {} s per throughput figure, start-up figures the \
         median of {} starts. The load generator runs on the same machine.\n",
        today(),
        machine(),
        setup.model,
        setup.device,
        setup.dtypes,
        setup.texts,
        setup.seconds,
        setup.starts
    );
    let _ = writeln!(
        out,
        "| backend | 8×32 texts/s (of direct) | 32×1 texts/s (of direct) | 32×1 / 8×32 | \
         1×1 p50 / p99 ms (direct p50) | cold start | warm start | RSS after load | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} ({}) | {:.0} ({}) | {} | {:.1} / {:.1} ({:.1}) | {:.2} s | {:.2} s | \
             {:.0} MiB | {:.0} MiB |",
            r.backend,
            r.big.texts_per_s,
            ratio(r.big.texts_per_s, r.direct.sorted.texts_per_s),
            r.small.texts_per_s,
            ratio(r.small.texts_per_s, r.direct.sorted.texts_per_s),
            ratio(r.small.texts_per_s, r.big.texts_per_s),
            r.one.p50_ms,
            r.one.p99_ms,
            r.direct.one.p50_ms,
            r.startup.cold_ms / 1e3,
            r.startup.warm_ms / 1e3,
            r.startup.rss_mib,
            r.peak_mib,
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.backend == name);
    if let (Some(torch), Some(optimum)) = (find("torch"), find("optimum")) {
        let _ = writeln!(
            out,
            "\ntorch / optimum throughput: {} at 8×32, {} at 32×1.",
            ratio(torch.big.texts_per_s, optimum.big.texts_per_s),
            ratio(torch.small.texts_per_s, optimum.small.texts_per_s)
        );
    }
    let _ = writeln!(
        out,
        "\n- **8×32, 32×1**: 8 clients sending 32 texts per request, 32 clients sending one; \
         *of direct* is the server's throughput over the plugin's own on the same texts sorted \
         by length in calls of 32, called in one process without HTTP or queue (the most a \
         server could get out of it).\n\
         - **1×1**: one client sending one text at a time; *direct p50* is one plugin call of \
         one text.\n\
         - **cold start**: process start to first embedding after evicting from the page cache \
         every file the server maps (binary, plugin, runtime libraries) and the model's files \
         ({:.0} MiB here, {:.0} MiB of it kept by other processes' mappings); **warm start** \
         the same with all of it cached.\n\
         - **RSS after load**: resident memory after the first embedding; **peak RSS**: the \
         most resident memory during the whole run.",
        rows.iter()
            .map(|r| r.startup.evicted_mib)
            .fold(0.0, f64::max),
        rows.iter().map(|r| r.startup.kept_mib).fold(0.0, f64::max),
    );
    out
}
