//! Alibaba's GTE encoder (`model_type` "new": gte-multilingual-base, mGTE and its reranker) on
//! libtorch, in the layout its checkpoints are published in: a post-norm bidirectional encoder
//! with rotary positions and no position table, query / key / value packed in
//! `attention.qkv_proj`, a gated feed-forward packed in `mlp.up_gate_proj` (up, then gate).
//! transformers' `GteModel` computes the same after renaming those weights (its
//! `conversion_mapping`).

use crate::nn::{attend, int, Activation, Linear, Norm, Segments};
use crate::rotary::Rotary;
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{TchError, Tensor};

struct Layer {
    qkv: Linear,
    out: Linear,
    attn_norm: Norm,
    up_gate: Linear,
    down: Linear,
    mlp_norm: Norm,
}

/// A loaded GTE encoder.
pub struct Gte {
    words: Tensor,
    /// Segment embeddings; gte-base-en-v1.5 (`type_vocab_size` 0) has none.
    types: Segments,
    embed_norm: Norm,
    layers: Vec<Layer>,
    rope: Rotary,
    heads: i64,
    act: Activation,
    /// Hidden size.
    pub hidden: i64,
    /// Positions the model was trained for.
    pub max_positions: i64,
}

/// The rotary base, refusing the scalings ember does not compute (gte-*-en-v1.5's `ntk`).
fn theta(cfg: &Value) -> Result<f64, PluginError> {
    let scaling = cfg
        .get("rope_scaling")
        .filter(|s| !s.is_null())
        .or_else(|| cfg["rope_parameters"].get("rope_type"));
    if let Some(s) = scaling.filter(|s| s.as_str() != Some("default")) {
        return Err(PluginError::unsupported(format!(
            "rope scaling {s} is not implemented by the torch backend (GTE models without \
             rope_scaling, as gte-multilingual-base, are)"
        )));
    }
    Ok(cfg["rope_theta"]
        .as_f64()
        .or_else(|| cfg["rope_parameters"]["rope_theta"].as_f64())
        .unwrap_or(160_000.0))
}

impl Gte {
    /// Builds the encoder from its weights (prefix already set) and config.
    pub fn load(w: &Weights, cfg: &Value) -> Result<Gte, PluginError> {
        let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12);
        let hidden = int(cfg, &["hidden_size"])?;
        let heads = int(cfg, &["num_attention_heads"])?;
        if let Some(t) = cfg["layer_norm_type"]
            .as_str()
            .filter(|t| *t != "layer_norm")
        {
            return Err(PluginError::unsupported(format!(
                "layer_norm_type {t:?} is not implemented by the torch backend (layer_norm is)"
            )));
        }
        let act = Activation::parse(
            "hidden_act",
            cfg["hidden_act"].as_str().unwrap_or("gelu"),
            &[
                Activation::Gelu,
                Activation::GeluTanh,
                Activation::Relu,
                Activation::Silu,
            ],
        )?;
        let layers = (0..int(cfg, &["num_hidden_layers"])?)
            .map(|i| {
                let p = |s: &str| format!("encoder.layer.{i}.{s}");
                Ok(Layer {
                    qkv: Linear::load(w, &p("attention.qkv_proj"))?,
                    out: Linear::load(w, &p("attention.o_proj"))?,
                    attn_norm: Norm::load(w, &p("attn_ln"), eps)?,
                    up_gate: Linear::load(w, &p("mlp.up_gate_proj"))?,
                    down: Linear::load(w, &p("mlp.down_proj"))?,
                    mlp_norm: Norm::load(w, &p("mlp_ln"), eps)?,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let words = w.get("embeddings.word_embeddings.weight")?;
        let types = Segments::load(w, "embeddings.token_type_embeddings.weight")?;
        let device = words.device();
        Ok(Gte {
            types,
            embed_norm: Norm::load(w, "embeddings.LayerNorm", eps)?,
            layers,
            rope: Rotary::new(hidden / heads, theta(cfg)?, device)?,
            heads,
            act,
            hidden,
            max_positions: cfg["max_position_embeddings"].as_i64().unwrap_or(8192),
            words,
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.words.size()[0]
    }

    /// Segments the model distinguishes (1 when it has no segment table).
    pub fn segments(&self) -> i64 {
        self.types.count()
    }

    /// Token states `[rows, seq, hidden]` for right-padded ids, segment ids and their mask.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let tables = self.rope.tables(seq, self.words.kind())?;
        let live = mask.f_ne(0)?.f_view([rows, 1, 1, seq])?;
        let head_dim = self.hidden / self.heads;
        let x = Tensor::f_embedding(&self.words, ids, -1, false, false)?;
        let x = self.types.add(x, types)?;
        let mut x = self.embed_norm.forward(&x)?;
        for l in &self.layers {
            // [rows, seq, 3, heads, head_dim] -> three [rows, heads, seq, head_dim]
            let qkv = l
                .qkv
                .forward(&x)?
                .f_view([rows, seq, 3, self.heads, head_dim])?;
            let part = |i: i64| qkv.f_select(2, i)?.f_transpose(1, 2);
            let q = self.rope.apply(&part(0)?, &tables)?;
            let k = self.rope.apply(&part(1)?, &tables)?;
            let ctx = attend(&q, &k, &part(2)?, &live, None)?;
            x = l.attn_norm.forward(&x.f_add(&l.out.forward(&ctx)?)?)?;
            let inner = l.up_gate.forward(&x)?;
            let half = inner.size()[2] / 2;
            let gated = self
                .act
                .apply(&inner.f_narrow(-1, half, half)?)?
                .f_mul(&inner.f_narrow(-1, 0, half)?)?;
            x = l.mlp_norm.forward(&x.f_add(&l.down.forward(&gated)?)?)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rotary_base_is_read_from_either_key_and_scaling_refused() {
        let base = |cfg: Value| theta(&cfg);
        assert_eq!(
            base(json!({"rope_theta": 160000, "rope_scaling": null})).unwrap(),
            160000.0
        );
        let native = json!({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}});
        assert_eq!(base(native).unwrap(), 5e5);
        let ntk = json!({"rope_theta": 500000, "rope_scaling": {"type": "ntk", "factor": 2.0}});
        let e = base(ntk).unwrap_err();
        assert!(e.message.contains("ntk"), "{}", e.message);
    }
}
