//! Parity with the reference implementation's outputs recorded in the model directory's
//! `reference.json` (the test fixtures' format): sentence-transformers embeddings, transformers
//! rerank scores and classifier probabilities, CLIP text and image features. A model without `reference.json` fails: parity
//! is only left out when the user asks for it (`--skip-parity`, handled by the caller).

use super::{cosine, describe, non_finite, Outcome, Tolerance};
use crate::api::{normalize, Activation};
use crate::engine::pad;
use crate::engine::ModelRunner;
use crate::images::preprocess::{probe, ImageLimits};
use crate::startup::Prepared;
use crate::text::Truncation;
use ember_plugin_api::{ModelKind, PairBatch, PixelBatch};
use serde_json::Value;
use std::path::Path;

/// The rows of a plugin's result, each normalised as the host normalises them; an error names
/// the first non-finite value.
fn normalized_rows(out: &ember_plugin_api::EmbeddingBatch) -> Result<Vec<Vec<f32>>, String> {
    let rows: Vec<Vec<f32>> = out
        .values
        .chunks(out.dim.max(1) as usize)
        .map(|v| v.to_vec())
        .collect();
    if let Some(m) = non_finite(&rows) {
        return Err(format!("non-finite output: {m}"));
    }
    Ok(rows
        .into_iter()
        .map(|mut v| {
            normalize(&mut v);
            v
        })
        .collect())
}

fn vectors(v: &Value) -> Option<Vec<Vec<f32>>> {
    serde_json::from_value(v.clone()).ok()
}

fn strings(v: &Value) -> Option<Vec<String>> {
    serde_json::from_value(v.clone()).ok()
}

/// Embeds texts with the model's tokenizer, normalised.
fn embed_texts(
    p: &Prepared,
    runner: &ModelRunner,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, String> {
    let tokens = p.encoder.encode(texts).map_err(|e| e.to_string())?;
    let batch = pad(&tokens.iter().collect::<Vec<_>>(), p.encoder.pad_id);
    let out = runner.embed_tokens(&batch).map_err(|e| describe(&e))?;
    normalized_rows(&out)
}

fn compare(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], min: f64) -> Result<String, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} results for {} references",
            got.len(),
            want.len()
        ));
    }
    let mut want = want.to_vec();
    want.iter_mut().for_each(|v| normalize(v));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| cosine(g, w))
        .fold(1.0f64, |m, c| {
            if c.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.min(c)
            }
        });
    if worst >= min {
        Ok(format!("{} {what} (min cosine {worst:.6})", got.len()))
    } else {
        Err(format!(
            "{what}: cosine {worst:.6} < {min} against the reference"
        ))
    }
}

fn embed(p: &Prepared, runner: &ModelRunner, r: &Value, t: Tolerance) -> Result<String, String> {
    let texts = strings(&r["texts"]).ok_or("reference.json has no texts")?;
    let want = vectors(&r["embeddings"]).ok_or("reference.json has no embeddings")?;
    let min = t.parity;
    compare("texts", &embed_texts(p, runner, &texts)?, &want, min)
}

/// A SPLADE model's weights against `sparse` (`indices` / `values` per text, as
/// `SparseEncoder.encode` gives them): every entry of either side within the dtype's
/// tolerance of the other's (an entry absent on one side counting as 0 there).
fn sparse(p: &Prepared, runner: &ModelRunner, r: &Value, t: Tolerance) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Row {
        indices: Vec<u32>,
        values: Vec<f32>,
    }
    let texts = strings(&r["texts"]).ok_or("reference.json has no texts")?;
    let want: Vec<Row> = serde_json::from_value(r["sparse"].clone())
        .map_err(|e| format!("reference.json has no sparse weights ({e})"))?;
    let tokens = p.encoder.encode(&texts).map_err(|e| e.to_string())?;
    let batch = pad(&tokens.iter().collect::<Vec<_>>(), p.encoder.pad_id);
    let got = runner.sparse(&batch).map_err(|e| describe(&e))?;
    got.validate(texts.len(), u32::MAX)?;
    let bar = (10.0 * (1.0 - t.parity)) as f32;
    let mut worst = 0f32;
    for (i, w) in want.iter().enumerate() {
        let (ids, values) = got.row(i);
        let mine: std::collections::BTreeMap<u32, f32> =
            ids.iter().copied().zip(values.iter().copied()).collect();
        let theirs: std::collections::BTreeMap<u32, f32> = w
            .indices
            .iter()
            .copied()
            .zip(w.values.iter().copied())
            .collect();
        for id in mine.keys().chain(theirs.keys()) {
            let d = (mine.get(id).unwrap_or(&0.0) - theirs.get(id).unwrap_or(&0.0)).abs();
            if d.is_nan() || d > bar {
                return Err(format!(
                    "text {i}: the weight of id {id} differs from the reference by {d} (over \
                     {bar})"
                ));
            }
            worst = worst.max(d);
        }
    }
    Ok(format!(
        "{} texts' sparse weights (largest difference {worst:.2e})",
        want.len()
    ))
}

fn rerank(p: &Prepared, runner: &ModelRunner, r: &Value, t: Tolerance) -> Result<String, String> {
    let max = t.score;
    let mut done = Vec::new();
    for case in ["short", "long_query"] {
        let c = &r[case];
        let Some(query) = c["query"].as_str() else {
            continue;
        };
        let docs = strings(&c["documents"]).ok_or("reference.json case has no documents")?;
        let want: Vec<f32> =
            serde_json::from_value(c["scores"].clone()).map_err(|e| e.to_string())?;
        let tokens = p
            .encoder
            .encode_pairs(query, &docs, Truncation::Right)
            .map_err(|e| e.to_string())?;
        let batch = pad(&tokens.iter().collect::<Vec<_>>(), p.encoder.pad_id);
        let got = runner
            .score_pairs(&PairBatch { tokens: batch })
            .map_err(|e| describe(&e))?;
        if let Some(i) = got.scores.iter().position(|s| !s.is_finite()) {
            return Err(format!(
                "{case}: non-finite output: row {i} is {}",
                got.scores[i]
            ));
        }
        let worst = got
            .scores
            .iter()
            .zip(&want)
            .map(|(l, s)| (1.0 / (1.0 + (-l).exp()) - s).abs())
            .fold(0.0f32, f32::max);
        if got.scores.len() != want.len() || worst.is_nan() || worst > max {
            return Err(format!(
                "{case}: scores differ by {worst:e} (> {max:e}) from the reference"
            ));
        }
        done.push(format!("{case}: {} scores within {worst:.1e}", want.len()));
    }
    if done.is_empty() {
        return Err("reference.json has no rerank cases".into());
    }
    Ok(done.join("; "))
}

fn classify(p: &Prepared, runner: &ModelRunner, r: &Value, t: Tolerance) -> Result<String, String> {
    let texts = strings(&r["texts"]).ok_or("reference.json has no texts")?;
    let want = vectors(&r["scores"]).ok_or("reference.json has no scores")?;
    let classes = p
        .manifest
        .classes
        .as_ref()
        .ok_or("the model has no labels")?;
    let tokens = p.encoder.encode(&texts).map_err(|e| e.to_string())?;
    let batch = pad(&tokens.iter().collect::<Vec<_>>(), p.encoder.pad_id);
    let out = runner.classify_tokens(&batch).map_err(|e| describe(&e))?;
    let rows: Vec<Vec<f32>> = out
        .values
        .chunks(out.labels.max(1) as usize)
        .map(|l| Activation::Model.apply(l, classes.multi_label))
        .collect();
    if let Some(m) = non_finite(&rows) {
        return Err(format!("non-finite output: {m}"));
    }
    if rows.len() != want.len() || rows.iter().zip(&want).any(|(g, w)| g.len() != w.len()) {
        return Err(format!(
            "{} rows of {} scores for {} references of {} labels",
            rows.len(),
            out.labels,
            want.len(),
            classes.labels.len()
        ));
    }
    let worst = rows
        .iter()
        .zip(&want)
        .flat_map(|(g, w)| g.iter().zip(w).map(|(a, b)| (a - b).abs()))
        .fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    let max = t.score;
    if worst.is_nan() || worst > max {
        return Err(format!(
            "scores differ by {worst:e} (> {max:e}) from the reference"
        ));
    }
    Ok(format!(
        "{} texts x {} labels within {worst:.1e}",
        rows.len(),
        classes.labels.len()
    ))
}

fn clip(
    p: &Prepared,
    runner: &ModelRunner,
    r: &Value,
    dir: &Path,
    t: Tolerance,
) -> Result<String, String> {
    let texts = strings(&r["texts"]).ok_or("reference.json has no texts")?;
    let want = vectors(&r["text_embeddings"]).ok_or("reference.json has no text_embeddings")?;
    let min = t.parity.min(0.999);
    let text = compare("texts", &embed_texts(p, runner, &texts)?, &want, min)?;
    let names = strings(&r["images"]).ok_or("reference.json has no images")?;
    let want = vectors(&r["image_embeddings"]).ok_or("reference.json has no image_embeddings")?;
    let pre = p
        .manifest
        .preprocessor
        .as_ref()
        .ok_or("no image preprocessing")?;
    let (height, width) = pre.output_size();
    let images = dir.parent().unwrap_or(dir).join("images");
    let mut values = Vec::new();
    for n in &names {
        let bytes = std::fs::read(images.join(n))
            .map_err(|e| format!("{}: {e}", images.join(n).display()))?;
        let limits = ImageLimits {
            max_pixels: u64::MAX,
            max_aspect_ratio: f64::INFINITY,
        };
        let probe = probe(&bytes, limits).map_err(|e| format!("{n}: {e}"))?;
        values.extend(pre.run(&bytes, &probe).map_err(|e| format!("{n}: {e}"))?);
    }
    let batch = PixelBatch::rgb(names.len(), height, width, values);
    let out = runner.embed_pixels(&batch).map_err(|e| describe(&e))?;
    let got = normalized_rows(&out)?;
    let image = compare("images", &got, &want, min)?;
    Ok(format!("{text}; {image}"))
}

/// Compares the plugin's outputs with `reference.json` in `dir` within the tolerance `t`; a
/// missing reference is a failure.
pub fn check(p: &Prepared, runner: &ModelRunner, dir: &Path, t: Tolerance) -> Outcome {
    let path = dir.join("reference.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return Outcome::Fail(format!(
                "cannot read {} ({e}): without reference outputs nothing shows that the \
                 plugin computes the right thing; add one (the format of ember's test \
                 fixtures), or pass --skip-parity to leave parity unchecked",
                path.display()
            ))
        }
    };
    let r: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Outcome::Fail(format!("{}: {e}", path.display())),
    };
    let result = match p.manifest.abi.kind {
        ModelKind::Embed if p.manifest.sparse.is_some() => sparse(p, runner, &r, t),
        ModelKind::Embed => embed(p, runner, &r, t),
        ModelKind::Rerank => rerank(p, runner, &r, t),
        ModelKind::Clip => clip(p, runner, &r, dir, t),
        ModelKind::Classify => classify(p, runner, &r, t),
    };
    match result {
        Ok(m) => Outcome::Pass(m),
        Err(m) => Outcome::Fail(m),
    }
}
