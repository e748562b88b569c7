//! One plugin call: the items of a batch assembled into the plugin's input, and its output
//! split back into one result per item.

use super::worker::Worker;
use super::ModelRunner;
use super::{Item, Output, Payload};
use crate::text::Tokens;
use ember_plugin_api::{PairBatch, PixelBatch, PluginError, TokenBatch};

impl Worker {
    pub(super) fn tokens(items: &[Item]) -> Vec<&Tokens> {
        items
            .iter()
            .filter_map(|it| match &it.payload {
                Payload::Tokens(t)
                | Payload::States(t)
                | Payload::Sparse(t)
                | Payload::Pair(t)
                | Payload::Classify(t) => Some(t),
                Payload::Pixels { .. } => None,
            })
            .collect()
    }

    pub(super) fn embed(
        &self,
        runner: &ModelRunner,
        items: &[Item],
    ) -> Result<Vec<Output>, PluginError> {
        let batch = pad(&Self::tokens(items), self.limits.pad_id);
        vectors(runner.embed_tokens(&batch)?, items.len())
    }

    pub(super) fn token_states(
        &self,
        runner: &ModelRunner,
        items: &[Item],
    ) -> Result<Vec<Output>, PluginError> {
        let rows = Self::tokens(items);
        let mut batch = pad(&rows, self.limits.pad_id);
        // States are asked for every token a row has; positions past the attention mask
        // (ColBERT's query expansion) are the only ones a pooling mask adds.
        if rows.iter().all(|t| t.unattended == 0) {
            batch.pooling_mask = Default::default();
        }
        let states = runner.token_states(&batch)?;
        states
            .validate(&batch.state_lengths())
            .map_err(|e| PluginError::internal(format!("plugin returned {e}")))?;
        let dim = states.dim as usize;
        Ok((0..items.len())
            .map(|r| Output::States {
                dim,
                values: states.row(r).to_vec(),
            })
            .collect())
    }

    pub(super) fn sparse(
        &self,
        runner: &ModelRunner,
        items: &[Item],
    ) -> Result<Vec<Output>, PluginError> {
        let batch = pad(&Self::tokens(items), self.limits.pad_id);
        let sparse = runner.sparse(&batch)?;
        // Ids are the model's (its masked-language head's rows), which the host does not know.
        sparse
            .validate(items.len(), u32::MAX)
            .map_err(|e| PluginError::internal(format!("plugin returned {e}")))?;
        Ok((0..items.len())
            .map(|r| {
                let (indices, values) = sparse.row(r);
                Output::Sparse {
                    indices: indices.to_vec(),
                    values: values.to_vec(),
                }
            })
            .collect())
    }

    pub(super) fn score(
        &self,
        runner: &ModelRunner,
        items: &[Item],
    ) -> Result<Vec<Output>, PluginError> {
        let tokens = pad(&Self::tokens(items), self.limits.pad_id);
        let result = runner.score_pairs(&PairBatch { tokens })?;
        if result.scores.len() != items.len() {
            return Err(PluginError::internal(format!(
                "plugin returned {} scores for {} pairs",
                result.scores.len(),
                items.len()
            )));
        }
        Ok(result.scores.iter().map(|s| Output::Score(*s)).collect())
    }

    pub(super) fn classify(
        &self,
        runner: &ModelRunner,
        items: &[Item],
    ) -> Result<Vec<Output>, PluginError> {
        let batch = pad(&Self::tokens(items), self.limits.pad_id);
        let result = runner.classify_tokens(&batch)?;
        let labels = result.labels as usize;
        if result.rows as usize != items.len() || result.values.len() != items.len() * labels {
            return Err(PluginError::internal(format!(
                "plugin returned {} rows of {labels} logits ({} values) for {} texts",
                result.rows,
                result.values.len(),
                items.len()
            )));
        }
        Ok(result
            .values
            .chunks(labels.max(1))
            .map(|l| Output::Logits(l.to_vec()))
            .collect())
    }

    /// Embeds images of `height` × `width` pixels (a batch holds one size).
    pub(super) fn embed_images(
        runner: &ModelRunner,
        items: &[Item],
        height: u32,
        width: u32,
    ) -> Result<Vec<Output>, PluginError> {
        let mut values = Vec::new();
        for it in items {
            if let Payload::Pixels { values: v, .. } = &it.payload {
                values.extend_from_slice(v);
            }
        }
        let batch = PixelBatch::rgb(items.len(), height, width, values);
        vectors(runner.embed_pixels(&batch)?, items.len())
    }
}

/// Splits a plugin's `[rows, dim]` result into one vector per input, checking its shape.
pub(super) fn vectors(
    result: ember_plugin_api::EmbeddingBatch,
    rows: usize,
) -> Result<Vec<Output>, PluginError> {
    let dim = result.dim as usize;
    if result.rows as usize != rows || result.values.len() != rows * dim || dim == 0 {
        return Err(PluginError::internal(format!(
            "plugin returned {} rows of {} values ({} in all) for {rows} inputs",
            result.rows,
            result.dim,
            result.values.len()
        )));
    }
    Ok(result
        .values
        .chunks(dim)
        .map(|v| Output::Vector(v.to_vec()))
        .collect())
}

/// Right-pads token sequences into one batch, with a pooling mask when a row leaves tokens
/// out of pooling.
pub fn pad(rows: &[&Tokens], pad_id: i64) -> TokenBatch {
    let seq = rows.iter().map(|t| t.len()).max().unwrap_or(0);
    let n = rows.len() * seq;
    let mut ids = Vec::with_capacity(n);
    let mut mask = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for t in rows {
        let padding = seq - t.len();
        let attended = t.len() - t.unattended.min(t.len());
        ids.extend_from_slice(&t.ids);
        ids.extend(std::iter::repeat_n(pad_id, padding));
        mask.extend(std::iter::repeat_n(1i64, attended));
        mask.extend(std::iter::repeat_n(0i64, seq - attended));
        types.extend_from_slice(&t.type_ids);
        types.extend(std::iter::repeat_n(0i64, padding));
    }
    let mut pooling = Vec::new();
    if rows.iter().any(|t| t.unpooled > 0 || t.unattended > 0) {
        for t in rows {
            let kept = |i: usize| i >= t.unpooled && i < t.len();
            pooling.extend((0..seq).map(|i| i64::from(kept(i))));
        }
    }
    TokenBatch {
        rows: rows.len() as u32,
        seq_len: seq as u32,
        input_ids: ids.into(),
        attention_mask: mask.into(),
        token_type_ids: types.into(),
        pooling_mask: pooling.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_right_pads_with_mask() {
        let a = Tokens {
            ids: vec![1, 2, 3],
            type_ids: vec![0, 0, 0],
            unpooled: 0,
            unattended: 0,
        };
        let b = Tokens {
            ids: vec![4],
            type_ids: vec![0],
            unpooled: 0,
            unattended: 0,
        };
        let batch = pad(&[&a, &b], 9);
        assert_eq!(batch.seq_len, 3);
        assert_eq!(batch.input_ids.as_slice(), &[1, 2, 3, 4, 9, 9]);
        assert_eq!(batch.attention_mask.as_slice(), &[1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.row_lengths(), vec![3, 1]);
        assert!(batch.pooling_mask.is_empty(), "no row leaves tokens out");
        assert_eq!(batch.pooling_mask(), batch.attention_mask.as_slice());
    }

    #[test]
    fn pad_masks_the_prompt_out_of_pooling_per_row() {
        let prompted = Tokens {
            ids: vec![1, 2, 3, 4],
            type_ids: vec![0; 4],
            unpooled: 2,
            unattended: 0,
        };
        let bare = Tokens {
            ids: vec![5, 6],
            type_ids: vec![0; 2],
            unpooled: 0,
            unattended: 0,
        };
        let batch = pad(&[&prompted, &bare], 0);
        assert_eq!(batch.attention_mask.as_slice(), &[1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.pooling_mask.as_slice(), &[0, 0, 1, 1, 1, 1, 0, 0]);
        batch.validate().unwrap();
    }

    #[test]
    fn pad_keeps_unattended_tokens_out_of_attention_only() {
        let expanded = Tokens {
            ids: vec![1, 2, 7, 7],
            type_ids: vec![0; 4],
            unpooled: 0,
            unattended: 2,
        };
        let short = Tokens {
            ids: vec![5],
            type_ids: vec![0],
            unpooled: 0,
            unattended: 0,
        };
        let batch = pad(&[&expanded, &short], 0);
        assert_eq!(batch.input_ids.as_slice(), &[1, 2, 7, 7, 5, 0, 0, 0]);
        assert_eq!(batch.attention_mask.as_slice(), &[1, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(batch.pooling_mask.as_slice(), &[1, 1, 1, 1, 1, 0, 0, 0]);
        assert_eq!(batch.row_lengths(), [2, 1]);
        assert_eq!(batch.state_lengths(), [4, 1]);
    }
}
