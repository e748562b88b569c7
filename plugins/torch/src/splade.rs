//! The masked-language-model head of BERT checkpoints (`BertForMaskedLM`: a dense layer, its
//! activation and layer norm, then the decoder tied to the word embeddings) and SPLADE's
//! reduction of its logits, done on the device in slices of tokens so that the
//! vocabulary-wide logits of a whole batch never exist at once nor leave the device.

use crate::nn::{Activation, Linear, Norm};
use crate::weights::Weights;
use ember_plugin_api::{PluginError, SparseReduction};
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// Tokens whose logits are computed at once: 256 × a 30522-entry vocabulary is 31 MB in
/// float32, whatever the batch.
const TOKENS_PER_SLICE: i64 = 256;

/// A BERT masked-language-model head.
pub struct MlmHead {
    dense: Linear,
    act: Activation,
    norm: Norm,
    /// `[vocab, hidden]`: the word embeddings, unless the checkpoint unties the decoder.
    decoder: Tensor,
    bias: Tensor,
}

impl MlmHead {
    /// Whether a checkpoint without prefix has a BERT masked-language head.
    pub fn present(plain: &Weights) -> bool {
        plain.has("cls.predictions.transform.dense.weight")
    }

    /// Reads `cls.predictions.*` of a checkpoint without prefix; `words` is the encoder's word
    /// embedding table, the decoder when the checkpoint ties it (stores no decoder weight).
    pub fn load(plain: &Weights, words: Tensor, cfg: &Value) -> Result<MlmHead, PluginError> {
        let p = "cls.predictions";
        let decoder = match plain.has(&format!("{p}.decoder.weight")) {
            true => plain.get(&format!("{p}.decoder.weight"))?,
            false => words,
        };
        // The decoder's own bias is the one its forward adds; `cls.predictions.bias` is the
        // same tensor when tied, and what older checkpoints store alone.
        let bias = match plain.has(&format!("{p}.decoder.bias")) {
            true => plain.get(&format!("{p}.decoder.bias"))?,
            false => plain.get(&format!("{p}.bias"))?,
        };
        Ok(MlmHead {
            dense: Linear::load(plain, &format!("{p}.transform.dense"))?,
            act: Activation::parse(
                "hidden_act",
                cfg["hidden_act"].as_str().unwrap_or("gelu"),
                &[Activation::Gelu, Activation::GeluTanh, Activation::Relu],
            )?,
            norm: Norm::load(
                plain,
                &format!("{p}.transform.LayerNorm"),
                cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12),
            )?,
            decoder,
            bias,
        })
    }

    /// Each row's SPLADE weights `[rows, vocab]` (float32) of token states
    /// `[rows, seq, hidden]` under the attention mask `[rows, seq]`.
    pub fn splade(
        &self,
        states: &Tensor,
        mask: &Tensor,
        reduction: SparseReduction,
    ) -> Result<Tensor, TchError> {
        let (rows, seq, hidden) = states.size3()?;
        let vocab = self.decoder.size()[0];
        let live = mask
            .f_flatten(0, 1)?
            .f_ne(0)?
            .f_nonzero()?
            .f_squeeze_dim(1)?;
        let tokens = states
            .f_reshape([rows * seq, hidden])?
            .f_index_select(0, &live)?;
        let row_of = live.f_floor_divide_scalar(seq)?;
        let mut out = Tensor::f_zeros([rows, vocab], (Kind::Float, states.device()))?;
        let mut start = 0;
        while start < tokens.size()[0] {
            let n = TOKENS_PER_SLICE.min(tokens.size()[0] - start);
            let x = tokens.f_narrow(0, start, n)?;
            let x = self
                .norm
                .forward(&self.act.apply_owned(self.dense.forward(&x)?)?)?;
            let logits = x.f_linear(&self.decoder, Some(&self.bias))?;
            let mut w = logits.f_to_kind(Kind::Float)?.f_relu()?.f_log1p()?;
            if reduction.log1p_twice {
                w = w.f_log1p()?;
            }
            let rows_of = row_of.f_narrow(0, start, n)?;
            let _ = match reduction.sum {
                true => out.f_index_add_(0, &rows_of, &w)?,
                // Weights are >= 0, so the zeros `out` starts from never win a max.
                false => out.f_index_reduce_(0, &rows_of, &w, "amax", true)?,
            };
            start += n;
        }
        Ok(out)
    }
}
