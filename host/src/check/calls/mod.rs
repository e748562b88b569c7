//! The behaviour checks: what the plugin answers to good, empty, malformed, overlong and
//! concurrent calls. Every answer is checked for its shape and for finite values before any
//! check looks at it, so that a NaN cannot slip through a comparison.

use super::{cosine, describe, non_finite, Outcome, Tolerance};
use crate::engine::pad;
use crate::engine::ModelRunner;
use crate::plugin::Plugin;
use crate::startup::Prepared;
use crate::text::{Tokens, Truncation};
use ember_plugin_api::{
    ErrorCode, ModelKind, PairBatch, PixelBatch, PluginError, Pooling, SparseReduction, TokenBatch,
};
use std::sync::Mutex;

mod invariance;
mod sparse;
mod states;

/// What the plugin reports about itself.
pub fn capabilities(plugin: &Plugin) -> Outcome {
    let i = &plugin.info;
    let list = |v: Vec<&str>| v.join(",");
    let summary = format!(
        "{} {} on {}: kinds {}, devices {}, dtypes {}",
        i.name,
        i.version,
        i.runtime,
        list(i.kinds.iter().map(|k| k.as_str()).collect()),
        list(i.devices.iter().map(|d| d.as_str()).collect()),
        list(i.dtypes.iter().map(|d| d.as_str()).collect()),
    );
    if i.name.is_empty() || i.kinds.is_empty() || i.devices.is_empty() || i.dtypes.is_empty() {
        Outcome::Fail(format!(
            "name, kinds, devices and dtypes must not be empty: {summary}"
        ))
    } else {
        Outcome::Pass(summary)
    }
}

/// A named check of the suite.
pub type Check<'a> = (&'static str, fn(&Suite<'a>) -> Outcome);

/// Inputs and the model under test.
pub struct Suite<'a> {
    runner: &'a ModelRunner,
    kind: ModelKind,
    dim: usize,
    pad_id: i64,
    max_len: usize,
    rows: Vec<Tokens>,
    image: Option<(u32, u32)>,
    tolerance: Tolerance,
    pooling: Pooling,
    /// Whether the model's pooling reads the prompt (if not, pooling masks must be honoured).
    include_prompt: bool,
    /// A SPLADE model's reduction: the host asks it for sparse weights, never embeddings.
    splade: Option<SparseReduction>,
}

/// Why a call gave no usable answer.
enum CallError {
    /// The plugin returned an error (possibly a panic the SDK caught).
    Plugin(PluginError),
    /// The plugin answered, but the answer breaks the contract (its shape, non-finite values).
    Broken(String),
}

impl CallError {
    /// The outcome of a call that had to succeed: always a failure, saying what failed.
    fn fail(&self, what: &str) -> Outcome {
        match self {
            CallError::Plugin(e) => match refused(e) {
                Err(Outcome::Fail(m)) => Outcome::Fail(format!("on {what}, {m}")),
                Err(o) => o,
                Ok(d) => Outcome::Fail(format!("{what} failed: {d}")),
            },
            CallError::Broken(m) => Outcome::Fail(format!("on {what}: {m}")),
        }
    }
}

/// The cosine above which two vectors count as the same (distinct-inputs check).
pub const SAME_VECTOR: f64 = 0.99999;
/// The difference of two rerank scores below which they count as the same.
pub const SAME_SCORE: f32 = 1e-6;

/// Fails on a caught panic, else describes the error.
fn refused(e: &PluginError) -> Result<String, Outcome> {
    if e.is_panic() {
        Err(Outcome::Fail(format!(
            "the plugin panicked (the SDK turned it into an error, but plugins must return \
             errors, not panic): {}",
            e.message
        )))
    } else {
        Ok(describe(e))
    }
}

/// The largest difference between two results; NaN (never below a tolerance) if any is NaN.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

impl<'a> Suite<'a> {
    /// Sample inputs tokenized by the model's own tokenizer.
    pub fn new(prepared: &'a Prepared, runner: &'a ModelRunner, tolerance: Tolerance) -> Suite<'a> {
        let kind = prepared.manifest.abi.kind;
        let texts: Vec<String> = [
            "Hello, world!",
            "The quick brown fox jumps over the lazy dog near the river bank.",
            "a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = match kind {
            ModelKind::Rerank => {
                prepared
                    .encoder
                    .encode_pairs("what does the fox do?", &texts, Truncation::Right)
            }
            _ => prepared.encoder.encode(&texts),
        }
        .unwrap_or_default();
        Suite {
            runner,
            kind,
            dim: runner.described.embedding_dim as usize,
            pad_id: prepared.encoder.pad_id,
            max_len: prepared.manifest.abi.max_input_tokens as usize,
            rows,
            image: prepared
                .manifest
                .preprocessor
                .as_ref()
                .map(|p| p.output_size()),
            tolerance,
            pooling: prepared.manifest.abi.pooling,
            include_prompt: prepared.manifest.abi.include_prompt,
            splade: prepared.manifest.sparse,
        }
    }

    /// Whether results are logits (rerankers, classifiers), compared by their largest
    /// difference, rather than vectors, compared by cosine.
    fn logits(&self) -> bool {
        matches!(self.kind, ModelKind::Rerank | ModelKind::Classify)
    }

    /// The checks that apply to this model's kind.
    pub fn checks(&self) -> Vec<Check<'a>> {
        let mut out: Vec<Check<'a>> = vec![
            ("empty batch", Suite::empty_batch),
            ("bad batch shape", Suite::bad_shape),
            ("very long input", Suite::very_long),
        ];
        let vectors: [Check<'a>; 6] = [
            ("output shape", Suite::output_shape),
            ("determinism", Suite::determinism),
            ("distinct inputs", Suite::distinct),
            ("padding", Suite::padding),
            ("pooling mask", Suite::pooling_mask),
            ("threads", Suite::threads),
        ];
        // A SPLADE model's weights are judged under "sparse weights" (the same invariances).
        out.extend(vectors.map(|(name, check)| match self.splade {
            Some(_) => (name, Suite::not_vectors as fn(&Suite<'a>) -> Outcome),
            None => (name, check),
        }));
        if self.kind == ModelKind::Clip {
            out.push(("image batch", Suite::images));
        }
        if self.kind == ModelKind::Embed {
            out.push(("token states", Suite::token_states));
            out.push(("sparse weights", Suite::sparse_weights));
        }
        out
    }

    /// One forward call on token rows: vectors, one score per row for rerankers, or one logit
    /// per label for classifiers; an answer
    /// of the wrong shape or with a non-finite value is an error.
    fn call(&self, batch: &TokenBatch) -> Result<Vec<Vec<f32>>, CallError> {
        let rows = batch.rows as usize;
        let out: Vec<Vec<f32>> = if self.kind == ModelKind::Classify {
            let l = self
                .runner
                .classify_tokens(batch)
                .map_err(CallError::Plugin)?;
            let labels = l.labels as usize;
            if (labels == 0 && rows > 0)
                || l.rows as usize != rows
                || l.values.len() != rows * labels
            {
                return Err(CallError::Broken(format!(
                    "wrong output shape: {} rows of {} logits ({} in all) for {rows} inputs",
                    l.rows,
                    l.labels,
                    l.values.len()
                )));
            }
            l.values.chunks(labels.max(1)).map(|c| c.to_vec()).collect()
        } else if self.kind == ModelKind::Rerank {
            let s = self
                .runner
                .score_pairs(&PairBatch {
                    tokens: batch.clone(),
                })
                .map_err(CallError::Plugin)?;
            if s.scores.len() != rows {
                return Err(CallError::Broken(format!(
                    "wrong output shape: {} scores for {rows} pairs",
                    s.scores.len()
                )));
            }
            s.scores.iter().map(|x| vec![*x]).collect()
        } else if let Some(reduction) = self.splade {
            // The call the host makes of a SPLADE model; each row's weights, by id.
            let s = self
                .runner
                .sparse_as(batch, reduction)
                .map_err(CallError::Plugin)?;
            s.validate(rows, u32::MAX).map_err(CallError::Broken)?;
            (0..rows).map(|r| s.row(r).1.to_vec()).collect()
        } else {
            let e = self.runner.embed_tokens(batch).map_err(CallError::Plugin)?;
            let dim = e.dim as usize;
            if (dim == 0 && rows > 0) || e.rows as usize != rows || e.values.len() != rows * dim {
                return Err(CallError::Broken(format!(
                    "wrong output shape: {} rows of {} values ({} in all) for {rows} inputs",
                    e.rows,
                    e.dim,
                    e.values.len()
                )));
            }
            e.values.chunks(dim.max(1)).map(|c| c.to_vec()).collect()
        };
        match non_finite(&out) {
            Some(m) => Err(CallError::Broken(format!("non-finite output: {m}"))),
            None => Ok(out),
        }
    }

    fn run(&self, rows: &[&Tokens]) -> Result<Vec<Vec<f32>>, CallError> {
        self.call(&pad(rows, self.pad_id))
    }

    fn sample(&self) -> Result<Vec<Vec<f32>>, CallError> {
        self.run(&self.rows.iter().collect::<Vec<_>>())
    }

    /// The sample batch's result, or the outcome that says why there is none.
    fn baseline(&self) -> Result<Vec<Vec<f32>>, Outcome> {
        if self.rows.is_empty() {
            return Err(Outcome::Fail(
                "the model's tokenizer could not encode the samples".into(),
            ));
        }
        self.sample().map_err(|e| e.fail("the sample batch"))
    }

    fn empty_batch(&self) -> Outcome {
        match self.call(&pad(&[], self.pad_id)) {
            Ok(v) if v.is_empty() => Outcome::Pass("answered 0 rows".into()),
            Ok(v) => Outcome::Fail(format!("answered {} rows for an empty batch", v.len())),
            Err(CallError::Broken(m)) => Outcome::Fail(m),
            Err(CallError::Plugin(e)) => match refused(&e) {
                Err(o) => o,
                Ok(d) if e.code == ErrorCode::InvalidInput => {
                    Outcome::Pass(format!("refused: {d}"))
                }
                Ok(d) => Outcome::Fail(format!(
                    "an empty batch must answer 0 rows or an invalid-input error, got {d}"
                )),
            },
        }
    }

    fn bad_shape(&self) -> Outcome {
        let mut batch = pad(&self.rows.iter().collect::<Vec<_>>(), self.pad_id);
        let len = batch.input_ids.len();
        batch.input_ids.truncate(len.saturating_sub(1));
        match self.call(&batch) {
            Ok(_) => Outcome::Fail(format!(
                "accepted a batch of {}x{} with {} input ids",
                batch.rows,
                batch.seq_len,
                len.saturating_sub(1)
            )),
            Err(CallError::Broken(m)) => Outcome::Fail(m),
            Err(CallError::Plugin(e)) => match refused(&e) {
                Err(o) => o,
                Ok(d) if e.code == ErrorCode::InvalidInput => {
                    Outcome::Pass(format!("refused: {d}"))
                }
                Ok(d) => Outcome::Fail(format!("must be an invalid-input error, got {d}")),
            },
        }
    }

    fn very_long(&self) -> Outcome {
        let Some(first) = self.rows.get(1) else {
            return Outcome::Skip("no sample".into());
        };
        let n = (self.max_len * 4).max(2048);
        let ids: Vec<i64> = first.ids.iter().cycle().take(n).copied().collect();
        let long = Tokens {
            type_ids: vec![0; n],
            ids,
            unpooled: 0,
            unattended: 0,
        };
        match self.run(&[&long]) {
            Ok(_) => Outcome::Pass(format!("{n} tokens answered")),
            Err(CallError::Broken(m)) => Outcome::Fail(format!("{n} tokens: {m}")),
            // Too long is the caller's error (or too much for the memory): an internal error
            // marks the model unhealthy and counts toward reloading it.
            Err(CallError::Plugin(e)) => match refused(&e) {
                Err(o) => o,
                Ok(d) if matches!(e.code, ErrorCode::InvalidInput | ErrorCode::OutOfMemory) => {
                    Outcome::Pass(format!("{n} tokens refused cleanly: {d}"))
                }
                Ok(d) => Outcome::Fail(format!(
                    "{n} tokens must be answered, or refused as invalid input or for memory, \
                     got {d}"
                )),
            },
        }
    }

    fn output_shape(&self) -> Outcome {
        let out = match self.baseline() {
            Ok(o) => o,
            Err(o) => return o,
        };
        let want = if self.kind == ModelKind::Rerank {
            1
        } else {
            self.dim
        };
        if let Some((i, v)) = out.iter().enumerate().find(|(_, v)| v.len() != want) {
            return Outcome::Fail(format!(
                "row {i} has {} values, describe() says {want}",
                v.len()
            ));
        }
        Outcome::Pass(format!("{} rows x {want}, all finite", out.len()))
    }

    fn threads(&self) -> Outcome {
        let base = match self.baseline() {
            Ok(o) => o,
            Err(o) => return o,
        };
        let concurrent = self.runner.described.concurrent_calls;
        let lock = Mutex::new(());
        let worst = Mutex::new((0f32, None::<String>));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..3 {
                        let result = if concurrent {
                            self.sample()
                        } else {
                            let _held = lock.lock();
                            self.sample()
                        };
                        let mut w = worst.lock().unwrap_or_else(|p| p.into_inner());
                        match result {
                            Ok(v) => {
                                let d = max_diff(&v, &base);
                                if d.is_nan() || d > w.0 {
                                    w.0 = d;
                                }
                            }
                            Err(CallError::Plugin(e)) => w.1 = Some(describe(&e)),
                            Err(CallError::Broken(m)) => w.1 = Some(m),
                        }
                    }
                });
            }
        });
        let (diff, error) = worst.into_inner().unwrap_or_else(|p| p.into_inner());
        let how = if concurrent {
            "4 threads at once"
        } else {
            "4 threads, calls serialised as the host does"
        };
        match error {
            Some(e) => Outcome::Fail(format!("{how}: a call failed: {e}")),
            None if diff <= 1e-4 => {
                Outcome::Pass(format!("{how}: results agree (max diff {diff:e})"))
            }
            None => Outcome::Fail(format!("{how}: results differ by {diff:e}")),
        }
    }

    fn images(&self) -> Outcome {
        let Some((h, w)) = self.image else {
            return Outcome::Skip("no image preprocessing".into());
        };
        let per = (3 * h * w) as usize;
        // A deterministic pattern in the normalised range.
        let values: Vec<f32> = (0..2 * per)
            .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
            .collect();
        let batch = PixelBatch {
            rows: 2,
            channels: 3,
            height: h,
            width: w,
            values: values.into(),
        };
        let mut bad = batch.clone();
        bad.values.truncate(per);
        if self.runner.embed_pixels(&bad).is_ok() {
            return Outcome::Fail("accepted a pixel batch with half its values".into());
        }
        let run = || self.runner.embed_pixels(&batch);
        match (run(), run()) {
            (Ok(a), Ok(b)) => {
                let rows: Vec<Vec<f32>> = a
                    .values
                    .chunks(a.dim.max(1) as usize)
                    .map(|c| c.to_vec())
                    .collect();
                if let Some(m) = non_finite(&rows) {
                    return Outcome::Fail(format!("non-finite output for 2 images: {m}"));
                }
                if a.rows != 2 || a.values.len() != 2 * a.dim as usize || a.dim as usize != self.dim
                {
                    return Outcome::Fail(format!(
                        "{} rows of {} values for 2 images (text vectors have {})",
                        a.rows, a.dim, self.dim
                    ));
                }
                let d = a
                    .values
                    .iter()
                    .zip(b.values.iter())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, |m, d| {
                        if d.is_nan() || m.is_nan() {
                            f32::NAN
                        } else {
                            m.max(d)
                        }
                    });
                if d.is_nan() || d > 1e-5 {
                    return Outcome::Fail(format!("the same images gave results {d:e} apart"));
                }
                Outcome::Pass(format!(
                    "2 images -> 2 x {}, deterministic, bad shape refused",
                    a.dim
                ))
            }
            (Err(e), _) | (_, Err(e)) => match refused(&e) {
                Err(o) => o,
                Ok(d) => Outcome::Fail(format!("the image batch failed: {d}")),
            },
        }
    }
}
