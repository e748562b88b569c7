//! `ember plugin check`: loads a plugin exactly as the host does and checks, item by item,
//! that it keeps the plugin contract: ABI version, what it reports, error handling (bad batch
//! shapes, empty batches, very long inputs, no panics), output shapes, determinism, padding,
//! distinct outputs for distinct inputs, finite outputs, calls from several threads, and parity
//! with the reference implementation's outputs in the model's `reference.json` (a model without
//! one fails, unless parity is skipped explicitly with `--skip-parity`). Tolerances follow the
//! precision asked for with `--dtype`, never the one the plugin reports about itself.

mod calls;
mod parity;

use crate::config::{ModelSettings, Settings};
use crate::engine::ModelRunner;
use crate::plugin::Plugin;
use crate::startup::{prepare, Prepared};
use ember_plugin_api::{DType, DeviceRequest, PluginError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckArgs {
    /// The plugin file.
    pub plugin: PathBuf,
    /// A model directory to load and run.
    pub model: Option<PathBuf>,
    /// Device to load the model on.
    pub device: DeviceRequest,
    /// Precision to load the model in; also picks the tolerances (auto: fp32's).
    pub dtype: DType,
    /// Do not compare with `reference.json` (the report then says parity was not checked).
    pub skip_parity: bool,
}

/// How closely results must agree, by the precision the model computes in: fp32 is held to
/// float rounding, fp16/bf16 to half-precision rounding, int8 to quantisation error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Minimum cosine against `reference.json` for text embeddings.
    pub parity: f64,
    /// Minimum agreement of a row alone and inside a padded batch.
    pub padding: f64,
    /// Largest difference of a rerank score (after the sigmoid) from the reference.
    pub score: f32,
}

impl Tolerance {
    /// The tolerance for a model asked to load in `dtype` (what the user asked for, not what the
    /// plugin reports: a plugin must not loosen its own checks).
    pub fn of(dtype: DType) -> Tolerance {
        match dtype {
            DType::Int8 | DType::Fp8 => Tolerance {
                parity: 0.97,
                padding: 0.999,
                score: 5e-2,
            },
            DType::Fp16 | DType::Bf16 => Tolerance {
                parity: 0.999,
                padding: 0.999,
                score: 1e-2,
            },
            DType::Auto | DType::Fp32 => Tolerance {
                parity: 0.9999,
                padding: 0.9999,
                score: 1e-4,
            },
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kept the contract.
    Pass(String),
    /// Broke it; the message names the problem.
    Fail(String),
    /// Not applicable here.
    Skip(String),
}

/// Prints results as they come and counts failures.
pub struct Report {
    out: Box<dyn Write>,
    /// Whether the output is a terminal (then the running check is shown until it ends).
    live: bool,
    /// Checks run.
    pub checks: usize,
    /// Checks failed.
    pub failures: usize,
    /// Whether parity with a reference was skipped on request (`--skip-parity`).
    pub parity_skipped: bool,
}

impl Report {
    fn new(out: Box<dyn Write>, live: bool) -> Report {
        Report {
            out,
            live,
            checks: 0,
            failures: 0,
            parity_skipped: false,
        }
    }

    /// Records and prints the outcome of the check `name`.
    pub fn add(&mut self, name: &str, outcome: Outcome) {
        let (tag, detail) = match &outcome {
            Outcome::Pass(d) => ("PASS", d),
            Outcome::Fail(d) => ("FAIL", d),
            Outcome::Skip(d) => ("SKIP", d),
        };
        if !matches!(outcome, Outcome::Skip(_)) {
            self.checks += 1;
        }
        if matches!(outcome, Outcome::Fail(_)) {
            self.failures += 1;
        }
        let _ = writeln!(self.out, "  {tag}  {name}: {detail}");
        let _ = self.out.flush();
    }

    /// Says which check runs next (so that a crash shows where it happened).
    fn running(&mut self, name: &str) {
        if self.live {
            let _ = write!(self.out, "  ....  {name}\r");
            let _ = self.out.flush();
        }
    }
}

/// Cosine similarity of two vectors (0 for a zero vector).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b)).max(1e-12)
}

/// The first non-finite value of `rows`, as `"row R, value V is NaN"`, if there is one.
pub fn non_finite(rows: &[Vec<f32>]) -> Option<String> {
    rows.iter().enumerate().find_map(|(r, row)| {
        row.iter()
            .position(|x| !x.is_finite())
            .map(|i| format!("row {r}, value {i} is {}", row[i]))
    })
}

/// Describes an error for a report line; a caught panic is named as such.
pub fn describe(e: &PluginError) -> String {
    format!("{} error: {}", e.code.as_str(), e.message)
}

fn settings_for(model: &Path, device: DeviceRequest, dtype: DType) -> Result<Settings, String> {
    let mut s = Settings::for_models(vec![ModelSettings {
        name: model.display().to_string(),
        batch_size: 8,
        dtype,
        prompt_name: None,
    }])
    .map_err(|e| e.0)?;
    s.device = device;
    Ok(s)
}

/// Runs every check; returns the report (failures > 0 means the plugin does not conform).
pub fn run(args: &CheckArgs, out: Box<dyn Write>, live: bool) -> Report {
    let mut report = Report::new(out, live);
    let _ = writeln!(report.out, "ember plugin check: {}", args.plugin.display());
    report.running("load");
    let plugin = match Plugin::load(&args.plugin) {
        Ok(p) => p,
        Err(e) => {
            report.add("ABI and initialisation", Outcome::Fail(e.to_string()));
            return report;
        }
    };
    report.add(
        "ABI",
        Outcome::Pass(format!(
            "built for plugin ABI {}, host expects {}",
            plugin.abi,
            ember_plugin_api::ABI_VERSION
        )),
    );
    report.add("capabilities", calls::capabilities(&plugin));
    let Some(model) = &args.model else {
        report.add("model checks", Outcome::Skip("no --model DIR given".into()));
        return report;
    };
    let settings = match settings_for(model, args.device, args.dtype) {
        Ok(s) => s,
        Err(e) => {
            report.add("load model", Outcome::Fail(e));
            return report;
        }
    };
    let model_settings: ModelSettings = settings.models[0].clone();
    report.running("load model");
    let plugin = std::sync::Arc::new(plugin);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report.add("load model", Outcome::Fail(e.to_string()));
            return report;
        }
    };
    let prepared = runtime.block_on(prepare(&plugin, &model_settings, &settings));
    let prepared: Prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            report.add("load model", Outcome::Fail(format!("{e:#}")));
            return report;
        }
    };
    let d = &prepared.runner.described;
    report.add(
        "load model",
        Outcome::Pass(format!(
            "{} model from {} on {} ({}), dim {}, concurrent calls {}{}",
            prepared.manifest.abi.kind.as_str(),
            prepared.local.backend_files.join(", "),
            d.device,
            d.dtype.as_str(),
            d.embedding_dim,
            if d.concurrent_calls {
                "allowed"
            } else {
                "serialised by the host"
            },
            auto_note(args.dtype, d.dtype),
        )),
    );
    check_model(&mut report, &prepared, &prepared.runner, model, args);
    report
}

/// Where `auto` resolved to a lower precision, a note that the tolerances stay fp32's and how
/// to check with the resolved precision's own.
fn auto_note(asked: DType, loaded: DType) -> String {
    if asked != DType::Auto || loaded == DType::Fp32 || loaded == DType::Auto {
        return String::new();
    }
    let name = loaded.as_str();
    format!("; auto resolved to {name}, held to fp32's tolerances (--dtype {name} uses {name}'s)")
}

fn check_model(
    report: &mut Report,
    prepared: &Prepared,
    runner: &ModelRunner,
    dir: &Path,
    args: &CheckArgs,
) {
    let tolerance = Tolerance::of(args.dtype);
    let suite = calls::Suite::new(prepared, runner, tolerance);
    for (name, check) in suite.checks() {
        report.running(name);
        let outcome = check(&suite);
        report.add(name, outcome);
    }
    if args.skip_parity {
        report.parity_skipped = true;
        report.add(
            "parity",
            Outcome::Skip(
                "NOT CHECKED (--skip-parity): the outputs were not compared with any reference, \
                 so nothing here shows that they are correct"
                    .into(),
            ),
        );
        return;
    }
    report.running("parity");
    report.add("parity", parity::check(prepared, runner, dir, tolerance));
}

/// `ember plugin check` from the command line: prints the report, returns the exit code.
pub fn main(args: &CheckArgs) -> u8 {
    use std::io::IsTerminal;
    let live = std::io::stdout().is_terminal();
    let report = run(args, Box::new(std::io::stdout()), live);
    println!(
        "{} checks, {} failed: {}",
        report.checks,
        report.failures,
        if report.failures > 0 {
            "the plugin does NOT conform"
        } else if report.parity_skipped {
            "the plugin conforms, but parity was NOT checked (--skip-parity)"
        } else {
            "the plugin conforms"
        }
    );
    u8::from(report.failures > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_resolved_to_a_lower_precision_says_how_to_check_with_its_tolerances() {
        let note = auto_note(DType::Auto, DType::Int8);
        assert!(note.contains("auto resolved to int8"), "{note}");
        assert!(note.contains("--dtype int8"), "{note}");
        assert_eq!(auto_note(DType::Auto, DType::Fp32), "");
        assert_eq!(auto_note(DType::Fp16, DType::Fp16), "");
        // The tolerances themselves still follow what was asked.
        assert_eq!(Tolerance::of(DType::Auto), Tolerance::of(DType::Fp32));
    }
}
