//! The benchmark's results as a Markdown document.

use crate::load::{Direct, Measured, NewShapes};
use crate::start::Startup;
use std::fmt::Write;

/// One round's throughput measures of a backend.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// The plugin called directly.
    pub direct: Direct,
    /// The fresh server's first request of each new batch shape.
    pub fresh: NewShapes,
    /// The server with 1 client sending 1 text.
    pub one: Measured,
    /// The server with 8 clients sending 32 texts.
    pub big: Measured,
    /// The server with 32 clients sending 1 text.
    pub small: Measured,
}

/// Everything measured of one backend.
pub struct Row {
    /// The backend's name.
    pub backend: String,
    /// Start-up and memory.
    pub startup: Startup,
    /// The throughput rounds.
    pub rounds: Vec<Round>,
    /// Peak resident memory of the server in any round, MiB.
    pub peak_mib: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Row {
    /// The median over the rounds of what `f` reads from a round.
    fn median(&self, f: impl Fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().map(f).collect())
    }

    /// The median over the rounds of the ratio of two of a round's figures.
    fn ratio(&self, a: impl Fn(&Round) -> f64, b: impl Fn(&Round) -> f64) -> String {
        ratio_of(
            self.rounds
                .iter()
                .filter(|r| b(r) > 0.0)
                .map(|r| a(r) / b(r))
                .collect(),
        )
    }
}

/// The median of ratios, or a dash when there is none.
fn ratio_of(ratios: Vec<f64>) -> String {
    if ratios.is_empty() {
        "–".into()
    } else {
        format!("{:.2}", median(ratios))
    }
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
    /// Rounds per throughput figure.
    pub rounds: usize,
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

/// The document: how it was measured, one row per backend, and the comparisons.
pub fn markdown(setup: &Setup, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ember benchmark\n");
    let _ = writeln!(
        out,
        "Measured by `ember-bench` on {} on {}: model `{}`, `DEVICE={}`, `DTYPES={}`, {} \
         synthetic texts of 8 to 60 words. Throughput and latency figures are the median of {} \
         rounds of {} s each, every round through all backends in turn (ratios: the median of \
         each round's ratio); start-up figures the median of {} starts. The load generator \
         runs on the same machine.\n",
        today(),
        machine(),
        setup.model,
        setup.device,
        setup.dtypes,
        setup.texts,
        setup.rounds,
        setup.seconds,
        setup.starts
    );
    let _ = writeln!(
        out,
        "| backend | 8×32 texts/s (of direct) | 32×1 texts/s (of direct) | 32×1 / 8×32 | \
         1×1 p50 / p99 ms (direct p50) | cold start | warm start | RSS after load | peak RSS | \
         new shape extra p50 / max ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let sorted = |r: &Round| r.direct.sorted.texts_per_s;
        let _ = writeln!(
            out,
            "| {} | {:.0} ({}) | {:.0} ({}) | {} | {:.1} / {:.1} ({:.1}) | {:.2} s | {:.2} s | \
             {:.0} MiB | {:.0} MiB | {:.1} / {:.1} |",
            r.backend,
            r.median(|r| r.big.texts_per_s),
            r.ratio(|r| r.big.texts_per_s, sorted),
            r.median(|r| r.small.texts_per_s),
            r.ratio(|r| r.small.texts_per_s, sorted),
            r.ratio(|r| r.small.texts_per_s, |r| r.big.texts_per_s),
            r.median(|r| r.one.p50_ms),
            r.median(|r| r.one.p99_ms),
            r.median(|r| r.direct.one.p50_ms),
            r.startup.cold_ms / 1e3,
            r.startup.warm_ms / 1e3,
            r.startup.rss_mib,
            r.peak_mib,
            r.median(|r| r.fresh.p50_ms),
            r.median(|r| r.fresh.max_ms),
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.backend == name);
    if let (Some(torch), Some(optimum)) = (find("torch"), find("optimum")) {
        // Round by round: the two ran one after the other.
        let paired = |f: fn(&Round) -> f64| {
            ratio_of(
                torch
                    .rounds
                    .iter()
                    .zip(&optimum.rounds)
                    .filter(|(_, o)| f(o) > 0.0)
                    .map(|(t, o)| f(t) / f(o))
                    .collect(),
            )
        };
        let _ = writeln!(
            out,
            "\ntorch / optimum throughput: {} at 8×32, {} at 32×1.",
            paired(|r| r.big.texts_per_s),
            paired(|r| r.small.texts_per_s)
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
         every file the server maps (binary, plugin, runtime libraries), the model's files and \
         what the server made of them in its cache (the ctranslate2 conversion) \
         ({:.0} MiB here, {:.0} MiB of it kept by other processes' mappings); **warm start** \
         the same with all of it cached.\n\
         - **RSS after load**: resident memory after the first embedding; **peak RSS**: the \
         most resident memory of the server in any round.\n\
         - **new shape extra**: what a freshly started server's first request of each of 8 \
         batch shapes it has not seen (1 to 17 texts of 5 to 110 words) takes over the same \
         request repeated: what a runtime that prepares work per input shape costs the first \
         caller of each.",
        rows.iter()
            .map(|r| r.startup.evicted_mib)
            .fold(0.0, f64::max),
        rows.iter().map(|r| r.startup.kept_mib).fold(0.0, f64::max),
    );
    out
}
