//! Answers that must not depend on how rows are batched: the same rows give the same vectors
//! twice, different rows different vectors, and padding or masked tokens change nothing.

use super::*;

impl<'a> Suite<'a> {
    pub(super) fn determinism(&self) -> Outcome {
        let (a, b) = match (self.baseline(), self.baseline()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(o), _) | (_, Err(o)) => return o,
        };
        let d = max_diff(&a, &b);
        if d <= 1e-5 {
            Outcome::Pass(format!("repeated call differs by at most {d:e}"))
        } else {
            Outcome::Fail(format!("the same batch gave results {d:e} apart"))
        }
    }

    /// Distinct inputs must give distinct outputs: no two of the sample texts (which share no
    /// content) may map to the same vector (cosine >= SAME_VECTOR) or, for rerankers, to the
    /// same score (within SAME_SCORE). A plugin that ignores its input, or returns a constant,
    /// fails here even though it is deterministic and padding-invariant.
    pub(super) fn distinct(&self) -> Outcome {
        let out = match self.baseline() {
            Ok(o) => o,
            Err(o) => return o,
        };
        if out.len() < 2 {
            return Outcome::Fail(format!("{} sample rows, need 2", out.len()));
        }
        let rerank = self.logits();
        let mut closest = (f64::NEG_INFINITY, 0, 0);
        for i in 0..out.len() {
            for j in i + 1..out.len() {
                let same = if rerank {
                    -max_diff(&out[i..=i], &out[j..=j]) as f64
                } else {
                    cosine(&out[i], &out[j])
                };
                if same.is_nan() || same > closest.0 {
                    closest = (same, i, j);
                }
            }
        }
        let (same, i, j) = closest;
        let (what, alike) = if rerank {
            (
                format!("scores {:e} apart", -same),
                -same < SAME_SCORE as f64,
            )
        } else {
            (format!("cosine {same:.6}"), same >= SAME_VECTOR)
        };
        if alike || same.is_nan() {
            Outcome::Fail(format!(
                "different inputs (sample rows {i} and {j}) gave the same output ({what}): \
                 does the plugin ignore its input?"
            ))
        } else {
            Outcome::Pass(format!(
                "{} inputs, {} distinct outputs (closest pair: {what})",
                out.len(),
                out.len()
            ))
        }
    }

    pub(super) fn padding(&self) -> Outcome {
        let batched = match self.baseline() {
            Ok(o) => o,
            Err(o) => return o,
        };
        let mut worst = 1.0f64;
        for (i, row) in self.rows.iter().enumerate() {
            let alone = match self.run(&[row]) {
                Ok(v) => v,
                Err(e) => return e.fail(&format!("row {i} alone")),
            };
            let c = if self.logits() {
                1.0 - max_diff(&alone[..1], &batched[i..=i]) as f64
            } else {
                cosine(&alone[0], &batched[i])
            };
            if c.is_nan() || c < worst {
                worst = c;
            }
        }
        let min = self.tolerance.padding;
        if worst >= min {
            Outcome::Pass(format!(
                "each row alone agrees with it inside a padded batch (worst {worst:.6})"
            ))
        } else {
            Outcome::Fail(format!(
                "a row's result changes when the batch is padded (agreement {worst:.6} < \
                 {min}): is the attention mask applied?"
            ))
        }
    }

    /// A text embedder must pool under the pooling mask the host sends (models whose pooling
    /// leaves the prompt out), or refuse it as unsupported when the model does not need one.
    /// The longest sample row goes in three times: pooled whole, over its first half only
    /// and over its second half only. The plugin's pooled outputs (before any Dense module)
    /// must then fit together as the pooling mode says (the two means weighted by their
    /// token counts make the whole one; the two maxima's maximum is the whole one; CLS is
    /// the first half's, last-token the second half's), and the masked-out half must show.
    pub(super) fn pooling_mask(&self) -> Outcome {
        if self.kind != ModelKind::Embed {
            return Outcome::Skip(format!(
                "{} models pool their own way (no pooling mask is sent to them)",
                self.kind.as_str()
            ));
        }
        let Some(row) = self.rows.iter().max_by_key(|r| r.len()) else {
            return Outcome::Fail("the model's tokenizer could not encode the samples".into());
        };
        let n = row.len();
        if n < 4 {
            return Outcome::Skip(format!("the longest sample has {n} tokens, too few"));
        }
        let k = n / 2;
        let mut batch = pad(&[row, row, row], self.pad_id);
        let mut mask = vec![1i64; n];
        mask.extend((0..n).map(|t| i64::from(t < k)));
        mask.extend((0..n).map(|t| i64::from(t >= k)));
        batch.pooling_mask = mask.into();
        let out = match self.runner.embed_tokens_pooled(&batch) {
            Ok(e) if e.rows == 3 && e.dim > 0 && e.values.len() == 3 * e.dim as usize => e,
            Ok(e) => {
                return Outcome::Fail(format!(
                    "wrong output shape: {} rows of {} values for 3 inputs",
                    e.rows, e.dim
                ))
            }
            Err(e) => {
                return match refused(&e) {
                    Err(o) => o,
                    Ok(d) if e.code == ErrorCode::Unsupported && self.include_prompt => {
                        Outcome::Pass(format!(
                            "refused as unsupported ({d}); fine for this model, which pools \
                             its prompt, but models that leave it out must be refused at load"
                        ))
                    }
                    Ok(d) => Outcome::Fail(format!("a batch with a pooling mask failed: {d}")),
                };
            }
        };
        let v: Vec<Vec<f32>> = out
            .values
            .chunks(out.dim as usize)
            .map(<[f32]>::to_vec)
            .collect();
        if let Some(m) = non_finite(&v) {
            return Outcome::Fail(format!("non-finite output: {m}"));
        }
        let (whole, head, tail) = (&v[0], &v[1], &v[2]);
        let (kf, nf) = (k as f32, n as f32);
        let weighted = |w: fn(f32) -> f32| -> Vec<f32> {
            head.iter()
                .zip(tail)
                .map(|(h, t)| (w(kf) * h + w(nf - kf) * t) / w(nf))
                .collect()
        };
        // What the whole row's vector must equal, and which half must differ from it.
        let (expected, what, moved) = match self.pooling {
            Pooling::Mean => (
                weighted(|c| c),
                "the halves' means weighted by length",
                head,
            ),
            Pooling::MeanSqrtLen => (
                weighted(f32::sqrt),
                "the halves' sums over sqrt(length), recombined",
                head,
            ),
            Pooling::Max => (
                head.iter().zip(tail).map(|(h, t)| h.max(*t)).collect(),
                "the larger of the halves' maxima",
                if cosine(head, whole) < SAME_VECTOR {
                    head
                } else {
                    tail
                },
            ),
            Pooling::Cls => (head.clone(), "the first half's first token", tail),
            Pooling::LastToken => (tail.clone(), "the second half's last token", head),
        };
        let fit = cosine(&expected, whole);
        let min = self.tolerance.padding;
        let apart = cosine(moved, whole);
        if fit.is_nan() || fit < min {
            Outcome::Fail(format!(
                "{} pooling of a row split in two by the pooling mask: the whole row's vector \
                 is not {what} (cosine {fit:.6} < {min})",
                self.pooling.as_str()
            ))
        } else if apart >= SAME_VECTOR {
            Outcome::Fail(format!(
                "a pooling mask that leaves half of the row out gave the whole row's vector \
                 (cosine {apart:.6}): is pooling_mask ignored?"
            ))
        } else {
            Outcome::Pass(format!(
                "{} pooling under masks that split a {n}-token row: whole = {what} (cosine \
                 {fit:.6}), a masked half moves it (cosine {apart:.4})",
                self.pooling.as_str()
            ))
        }
    }
}
