//! Sparse (SPLADE) weights, for plugins that offer them (ABI 3.1): well-formed rows, the same
//! from two calls, different for different texts, the same for a row alone as inside a padded
//! batch, and the reduction honoured: twice `log1p` is
//! `log1p` of once (the max commutes with it), and a sum over the tokens is at least their max
//! and more where a vocabulary entry is active at several tokens.

use super::*;
use ember_plugin_api::{Outputs, SparseBatch};
use std::collections::BTreeMap;

/// A row's weights by id.
type Row = BTreeMap<u32, f32>;

const MAX_ONCE: SparseReduction = SparseReduction {
    sum: false,
    log1p_twice: false,
};

impl<'a> Suite<'a> {
    /// Each row's weights under `reduction`, checked for their shape and values.
    fn weights(&self, rows: &[&Tokens], reduction: SparseReduction) -> Result<Vec<Row>, Outcome> {
        let batch = pad(rows, self.pad_id);
        let what = format!(
            "sparse weights ({}, {})",
            if reduction.sum { "sum" } else { "max" },
            if reduction.log1p_twice {
                "log1p twice"
            } else {
                "log1p"
            }
        );
        let out: SparseBatch = self
            .runner
            .sparse_as(&batch, reduction)
            .map_err(|e| CallError::Plugin(e).fail(&what))?;
        out.validate(rows.len(), u32::MAX)
            .map_err(|m| Outcome::Fail(format!("{what}: {m}")))?;
        Ok((0..rows.len())
            .map(|r| {
                let (ids, values) = out.row(r);
                ids.iter().copied().zip(values.iter().copied()).collect()
            })
            .collect())
    }

    /// What a SPLADE model's vector checks answer: the host never asks it for vectors.
    pub(super) fn not_vectors(&self) -> Outcome {
        Outcome::Skip(
            "a SPLADE model: the host asks it for sparse weights only (see \"sparse weights\")"
                .into(),
        )
    }

    pub(super) fn sparse_weights(&self) -> Outcome {
        if !self.runner.outputs.has(Outputs::SPARSE) {
            return Outcome::Skip("the model does not offer sparse weights".into());
        }
        if self.rows.is_empty() {
            return Outcome::Fail("the model's tokenizer could not encode the samples".into());
        }
        let all: Vec<&Tokens> = self.rows.iter().collect();
        let run = |reduction| self.weights(&all, reduction);
        let (once, twice, sum) = match (
            run(MAX_ONCE),
            run(SparseReduction {
                log1p_twice: true,
                ..MAX_ONCE
            }),
            run(SparseReduction {
                sum: true,
                ..MAX_ONCE
            }),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(o), _, _) | (_, Err(o), _) | (_, _, Err(o)) => return o,
        };
        // Relative agreement expected of the same weights from two calls.
        let rel = (10.0 * (1.0 - self.tolerance.padding)).max(1e-4) as f32;
        // A weight within rounding of 0 may be absent from one side.
        let close = |a: f32, b: f32| (a - b).abs() <= rel * a.abs().max(b.abs()) + rel * 0.1;
        let (alone, again) = match (self.weights(&all[..1], MAX_ONCE), run(MAX_ONCE)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(o), _) | (_, Err(o)) => return o,
        };
        if let Some((r, id)) =
            (0..once.len()).find_map(|r| Some((r, differs(&once[r], &again[r], close)?)))
        {
            return Outcome::Fail(format!(
                "row {r}, id {id}: the same batch twice gave different weights"
            ));
        }
        if once.len() > 1 && differs(&once[0], &once[1], close).is_none() {
            return Outcome::Fail("two different texts gave the same weights".into());
        }
        if let Some(id) = differs(&alone[0], &once[0], close) {
            return Outcome::Fail(format!(
                "row 0's weight of id {id} alone differs from the same row in a padded batch: \
                 padding or batch-mates change the weights"
            ));
        }
        for (r, (o, t)) in once.iter().zip(&twice).enumerate() {
            let logged: Row = o.iter().map(|(&id, &w)| (id, w.ln_1p())).collect();
            if let Some(id) = differs(&logged, t, close) {
                return Outcome::Fail(format!(
                    "row {r}, id {id}: log1p applied twice is not log1p of the weight with it \
                     applied once: SparseReduction::log1p_twice is not honoured"
                ));
            }
        }
        let mut grows = 0;
        for (r, (o, s)) in once.iter().zip(&sum).enumerate() {
            for (id, &w) in o {
                let total = s.get(id).copied().unwrap_or(0.0);
                if total < w && !close(total, w) {
                    return Outcome::Fail(format!(
                        "row {r}, id {id}: the sum over tokens ({total}) is below their max \
                         ({w}): SparseReduction::sum is not honoured"
                    ));
                }
                grows += usize::from(total > w && !close(total, w));
            }
        }
        if grows == 0 {
            return Outcome::Fail(
                "summing over the tokens gives the same weights as their max for every entry of \
                 every sample: SparseReduction::sum is not honoured"
                    .into(),
            );
        }
        let active: usize = once.iter().map(Row::len).sum();
        Outcome::Pass(format!(
            "{active} active entries over {} samples, deterministic, distinct, the same alone \
             as batched; log1p twice and sum over tokens as asked",
            once.len()
        ))
    }
}

/// The first id whose weights are not `close` in both rows (absent counting as 0).
fn differs(a: &Row, b: &Row, close: impl Fn(f32, f32) -> bool) -> Option<u32> {
    a.keys()
        .chain(b.keys())
        .copied()
        .find(|id| !close(*a.get(id).unwrap_or(&0.0), *b.get(id).unwrap_or(&0.0)))
}
