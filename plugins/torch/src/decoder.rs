//! Decoder-only transformers used as embedders and rerankers on libtorch: Qwen2, Qwen3,
//! Llama and Mistral. Pre-norm layers with RMSNorm, rotary positions, grouped-query attention
//! (through `scaled_dot_product_attention` with a causal padding mask, sliding where the
//! config says so), SwiGLU feed-forward; Qwen3 normalises queries and keys per head.
//!
//! Rows arrive right-padded whatever side the tokenizer declares: under causal attention a
//! token never sees the padding after it, and rotary positions are relative, so the states of
//! real tokens equal those of the left-padded batch transformers runs.

use crate::encoder::Linear;
use crate::rotary::Rotary;
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// Model types read, for messages.
pub const SUPPORTED: &str = "qwen2, qwen3, llama, mistral";

/// Whether `model_type` is a decoder this module implements.
pub fn implements(model_type: &str) -> bool {
    matches!(model_type, "qwen2" | "qwen3" | "llama" | "mistral")
}

/// Root-mean-square norm, computed in float32 as transformers does.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(w: &Weights, name: &str, eps: f64) -> Result<RmsNorm, PluginError> {
        Ok(RmsNorm {
            weight: w.get(&format!("{name}.weight"))?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let kind = x.kind();
        let h = x.f_to_kind(Kind::Float)?;
        let variance = h
            .f_pow_tensor_scalar(2)?
            .f_mean_dim(-1, true, Kind::Float)?;
        h.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?
            .f_to_kind(kind)?
            .f_mul(&self.weight)
    }
}

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3's per-head norms of queries and keys.
    qk_norms: Option<(RmsNorm, RmsNorm)>,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Keys further back than this are not attended (sliding-window layers).
    window: Option<i64>,
}

/// A loaded decoder.
pub struct Decoder {
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    rotary: Rotary,
    /// Hidden size.
    pub hidden: i64,
    /// Positions the model was trained for.
    pub max_positions: i64,
}

fn num(cfg: &Value, key: &str) -> Result<i64, PluginError> {
    cfg[key]
        .as_i64()
        .ok_or_else(|| PluginError::invalid_input(format!("config.json lacks {key}")))
}

/// The rotary base: `rope_parameters.rope_theta` (transformers 5) or `rope_theta`; any rope
/// scaling other than the default is refused rather than computed wrongly.
fn rope_theta(cfg: &Value) -> Result<f64, PluginError> {
    let params = cfg
        .get("rope_parameters")
        .filter(|p| p.is_object())
        .or_else(|| cfg.get("rope_scaling").filter(|p| p.is_object()));
    if let Some(kind) = params.and_then(|p| p.get("rope_type").or_else(|| p.get("type"))) {
        if kind.as_str() != Some("default") {
            return Err(PluginError::unsupported(format!(
                "rope type {kind} is not implemented by the torch backend (default rotary \
                 positions are)"
            )));
        }
    }
    Ok(params
        .and_then(|p| p["rope_theta"].as_f64())
        .or_else(|| cfg["rope_theta"].as_f64())
        .unwrap_or(10_000.0))
}

/// The sliding window of each layer: Qwen2/Qwen3 name their sliding layers in `layer_types`
/// (when `use_sliding_window`), Mistral slides on every layer when `sliding_window` is set.
fn windows(model_type: &str, cfg: &Value, layers: i64) -> Vec<Option<i64>> {
    let window = cfg["sliding_window"].as_i64();
    let sliding = match model_type {
        "mistral" => window.is_some(),
        "qwen2" | "qwen3" => cfg["use_sliding_window"].as_bool().unwrap_or(false),
        _ => false,
    };
    (0..layers)
        .map(|i| {
            let layer_type = cfg["layer_types"][i as usize].as_str();
            let slides = match layer_type {
                Some(t) => t == "sliding_attention",
                None => sliding,
            };
            if sliding && slides {
                window
            } else {
                None
            }
        })
        .collect()
}

impl Decoder {
    /// Builds the decoder from its weights (prefix already set) and config.
    pub fn load(w: &Weights, cfg: &Value) -> Result<Decoder, PluginError> {
        let model_type = cfg["model_type"].as_str().unwrap_or_default();
        let act = cfg["hidden_act"].as_str().unwrap_or("silu");
        if act != "silu" {
            return Err(PluginError::unsupported(format!(
                "hidden_act {act:?} in a {model_type} decoder is not supported (silu is)"
            )));
        }
        let eps = cfg["rms_norm_eps"].as_f64().unwrap_or(1e-6);
        let hidden = num(cfg, "hidden_size")?;
        let heads = num(cfg, "num_attention_heads")?;
        let kv_heads = cfg["num_key_value_heads"].as_i64().unwrap_or(heads);
        let head_dim = cfg["head_dim"].as_i64().unwrap_or(hidden / heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(PluginError::invalid_input(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let layer_count = num(cfg, "num_hidden_layers")?;
        let windows = windows(model_type, cfg, layer_count);
        let layers = (0..layer_count)
            .map(|i| {
                let p = |s: &str| format!("layers.{i}.{s}");
                let qk_norms = if w.has(&p("self_attn.q_norm.weight")) {
                    Some((
                        RmsNorm::load(w, &p("self_attn.q_norm"), eps)?,
                        RmsNorm::load(w, &p("self_attn.k_norm"), eps)?,
                    ))
                } else {
                    None
                };
                Ok(Layer {
                    input_norm: RmsNorm::load(w, &p("input_layernorm"), eps)?,
                    q: Linear::load(w, &p("self_attn.q_proj"))?,
                    k: Linear::load(w, &p("self_attn.k_proj"))?,
                    v: Linear::load(w, &p("self_attn.v_proj"))?,
                    o: Linear::load(w, &p("self_attn.o_proj"))?,
                    qk_norms,
                    post_norm: RmsNorm::load(w, &p("post_attention_layernorm"), eps)?,
                    gate: Linear::load(w, &p("mlp.gate_proj"))?,
                    up: Linear::load(w, &p("mlp.up_proj"))?,
                    down: Linear::load(w, &p("mlp.down_proj"))?,
                    window: windows[i as usize],
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let embed = w.get("embed_tokens.weight")?;
        let theta = rope_theta(cfg)?;
        let rotary = Rotary::new(head_dim, theta, embed.device())?;
        Ok(Decoder {
            embed,
            layers,
            norm: RmsNorm::load(w, "norm", eps)?,
            heads,
            kv_heads,
            head_dim,
            rotary,
            hidden,
            max_positions: cfg["max_position_embeddings"].as_i64().unwrap_or(i64::MAX),
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.embed.size()[0]
    }

    /// Token states `[rows, seq, hidden]` (after the final norm) for right-padded ids and
    /// their mask `[rows, seq]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let kind = self.embed.kind();
        let tables = self.rotary.tables(seq, kind)?;
        // Query i attends key j when j <= i, j is a real token, and (sliding) i - j < window.
        let at = Tensor::f_arange(seq, (Kind::Int64, device))?;
        let distance = at.f_unsqueeze(1)?.f_sub(&at.f_unsqueeze(0)?)?;
        let live = mask.f_ne(0)?.f_view([rows, 1, 1, seq])?;
        let causal = distance.f_ge(0)?.f_logical_and(&live)?;
        let sliding = |window: i64| distance.f_lt(window)?.f_logical_and(&causal);
        let groups = self.heads / self.kv_heads;
        let mut x = Tensor::f_embedding(&self.embed, ids, -1, false, false)?;
        for l in &self.layers {
            let h = l.input_norm.forward(&x)?;
            let split = |t: Tensor, heads: i64| t.f_view([rows, seq, heads, self.head_dim]);
            let mut q = split(l.q.forward(&h)?, self.heads)?;
            let mut k = split(l.k.forward(&h)?, self.kv_heads)?;
            if let Some((qn, kn)) = &l.qk_norms {
                q = qn.forward(&q)?;
                k = kn.forward(&k)?;
            }
            let q = self.rotary.apply(&q.f_transpose(1, 2)?, &tables)?;
            let k = self.rotary.apply(&k.f_transpose(1, 2)?, &tables)?;
            let v = split(l.v.forward(&h)?, self.kv_heads)?.f_transpose(1, 2)?;
            let (k, v) = if groups > 1 {
                (
                    k.f_repeat_interleave_self_int(groups, 1, None)?,
                    v.f_repeat_interleave_self_int(groups, 1, None)?,
                )
            } else {
                (k, v)
            };
            let attend = match l.window {
                Some(window) => sliding(window)?,
                None => causal.shallow_clone(),
            };
            let ctx = Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&attend),
                0.0,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([rows, seq, self.heads * self.head_dim])?;
            x = x.f_add(&l.o.forward(&ctx)?)?;
            let h = l.post_norm.forward(&x)?;
            let gated = l.gate.forward(&h)?.f_silu()?.f_mul(&l.up.forward(&h)?)?;
            x = x.f_add(&l.down.forward(&gated)?)?;
        }
        self.norm.forward(&x)
    }
}
