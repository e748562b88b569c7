//! Token states, for plugins that offer them (ABI 3.1): one state per live token of each row,
//! finite, and pooling them as the model pools gives the plugin's own embeddings.

use super::*;
use ember_plugin_api::{pooling, Outputs};

/// Euclidean length of a vector.
fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

impl<'a> Suite<'a> {
    pub(super) fn token_states(&self) -> Outcome {
        if !self.runner.outputs.has(Outputs::TOKEN_STATES) {
            return Outcome::Skip("the model does not offer token states".into());
        }
        if self.rows.is_empty() {
            return Outcome::Fail("the model's tokenizer could not encode the samples".into());
        }
        let batch = pad(&self.rows.iter().collect::<Vec<_>>(), self.pad_id);
        let lengths = batch.row_lengths();
        let states = match self.runner.token_states(&batch) {
            Ok(s) => s,
            Err(e) => return CallError::Plugin(e).fail("token states of the sample batch"),
        };
        if let Err(m) = states.validate(&lengths) {
            return Outcome::Fail(m);
        }
        if let Some(bad) = states.values.iter().position(|x| !x.is_finite()) {
            return Outcome::Fail(format!("token state value {bad} is not finite"));
        }
        let pooled = match self.runner.embed_tokens_pooled(&batch) {
            Ok(p) => p,
            Err(e) => return CallError::Plugin(e).fail("the sample batch"),
        };
        let dim = states.dim as usize;
        if pooled.dim as usize != dim {
            return Outcome::Fail(format!(
                "token states are {dim} wide, the pooled embeddings {}",
                pooled.dim
            ));
        }
        // Direction and length: states are not normalised, so their scale is part of them.
        let (mut worst, mut scale) = (1f64, 1f64);
        for (r, len) in lengths.iter().enumerate() {
            let own = pooling::pool(self.pooling, states.row(r), &vec![1; *len], 1, *len, dim);
            let embedded = &pooled.values[r * dim..(r + 1) * dim];
            worst = worst.min(cosine(&own, embedded));
            let ratio = norm(&own) / norm(embedded).max(1e-12);
            if (ratio - 1.0).abs() > (scale - 1.0).abs() {
                scale = ratio;
            }
        }
        // The bar of a row alone against the same row in a batch: the states and the
        // embeddings come from different calls, possibly of different shapes.
        let bar = self.tolerance.padding;
        if worst >= bar && (scale - 1.0).abs() <= 10.0 * (1.0 - bar) {
            Outcome::Pass(format!(
                "{} tokens x {dim}; {} pooling of them gives the embeddings (cosine >= {worst:.6})",
                states.offsets[states.rows as usize],
                self.pooling.as_str()
            ))
        } else {
            Outcome::Fail(format!(
                "{} pooling of the token states is not the model's embedding (cosine {worst:.6}, \
                 length ratio {scale:.4}): the states must be the ones its embeddings pool",
                self.pooling.as_str()
            ))
        }
    }
}
