//! The masked-language-model heads of the encoder families (BERT's `cls.predictions`,
//! RoBERTa's and MPNet's `lm_head`, DistilBERT's `vocab_*`: a dense layer, its activation and
//! layer norm, then the decoder tied to the word embeddings) and SPLADE's reduction of their
//! logits, done on the device in slices of tokens so that the vocabulary-wide logits of a
//! whole batch never exist at once nor leave the device.

use crate::encoder::Family;
use crate::nn::{Activation, Linear, Norm};
use crate::weights::Weights;
use ember_plugin_api::{PluginError, SparseReduction};
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// Tokens whose logits are computed at once: 256 × a 30522-entry vocabulary is 31 MB in
/// float32, whatever the batch.
const TOKENS_PER_SLICE: i64 = 256;

/// Where a family's `*ForMaskedLM` keeps its head, as transformers names it.
struct Layout {
    dense: &'static str,
    norm: &'static str,
    decoder: &'static str,
    /// The bias the decoder adds, then the tensor it is tied to (what checkpoints that drop
    /// tied tensors store alone).
    bias: [&'static str; 2],
    /// The config key of the activation; `None`: always exact GELU.
    act_key: Option<&'static str>,
    /// The config key of the norm's epsilon; `None`: always 1e-12.
    eps_key: Option<&'static str>,
}

impl Layout {
    /// `None` for ELECTRA, whose generator head ember does not read.
    fn of(family: Family) -> Option<Layout> {
        Some(match family {
            Family::Bert => Layout {
                dense: "cls.predictions.transform.dense",
                norm: "cls.predictions.transform.LayerNorm",
                decoder: "cls.predictions.decoder.weight",
                bias: ["cls.predictions.decoder.bias", "cls.predictions.bias"],
                act_key: Some("hidden_act"),
                eps_key: Some("layer_norm_eps"),
            },
            // RobertaLMHead / MPNetLMHead: gelu() whatever hidden_act says.
            Family::Roberta | Family::MPNet => Layout {
                dense: "lm_head.dense",
                norm: "lm_head.layer_norm",
                decoder: "lm_head.decoder.weight",
                bias: ["lm_head.decoder.bias", "lm_head.bias"],
                act_key: None,
                eps_key: Some("layer_norm_eps"),
            },
            // DistilBertForMaskedLM: its `activation`, a norm fixed at 1e-12.
            Family::DistilBert => Layout {
                dense: "vocab_transform",
                norm: "vocab_layer_norm",
                decoder: "vocab_projector.weight",
                bias: ["vocab_projector.bias", "vocab_projector.bias"],
                act_key: Some("activation"),
                eps_key: None,
            },
            Family::Electra => return None,
        })
    }
}

/// A masked-language-model head.
pub struct MlmHead {
    dense: Linear,
    act: Activation,
    norm: Norm,
    /// `[vocab, hidden]`: the word embeddings, unless the checkpoint unties the decoder.
    decoder: Tensor,
    bias: Tensor,
}

impl MlmHead {
    /// Whether a checkpoint without prefix has `family`'s masked-language head whole (a
    /// dense embedder saved as `*ForMaskedLM` with part of one loads without it).
    pub fn present(family: Family, plain: &Weights) -> bool {
        let Some(l) = Layout::of(family) else {
            return false;
        };
        [l.dense, l.norm]
            .iter()
            .all(|m| plain.has(&format!("{m}.weight")) && plain.has(&format!("{m}.bias")))
            && l.bias.iter().any(|b| plain.has(b))
    }

    /// Reads `family`'s head of a checkpoint without prefix; `words` is the encoder's word
    /// embedding table, the decoder when the checkpoint ties it (stores no decoder weight).
    pub fn load(
        family: Family,
        plain: &Weights,
        words: Tensor,
        cfg: &Value,
    ) -> Result<MlmHead, PluginError> {
        let l = Layout::of(family).ok_or_else(|| {
            PluginError::unsupported(format!("{family:?}'s masked-language head is not read"))
        })?;
        let decoder = match plain.has(l.decoder) {
            true => plain.get(l.decoder)?,
            false => words,
        };
        let bias = match plain.has(l.bias[0]) {
            true => plain.get(l.bias[0])?,
            false => plain.get(l.bias[1])?,
        };
        let act = match l.act_key {
            Some(key) => Activation::parse(
                key,
                cfg[key].as_str().unwrap_or("gelu"),
                &[Activation::Gelu, Activation::GeluTanh, Activation::Relu],
            )?,
            None => Activation::Gelu,
        };
        let eps = l.eps_key.and_then(|key| cfg[key].as_f64()).unwrap_or(1e-12);
        Ok(MlmHead {
            dense: Linear::load(plain, l.dense)?,
            act,
            norm: Norm::load(plain, l.norm, eps)?,
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
