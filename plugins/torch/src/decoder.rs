//! Decoder-only transformers used as embedders and rerankers on libtorch: Qwen2, Qwen3,
//! Llama, Mistral and Gemma 3. Pre-norm layers with RMSNorm, rotary positions, grouped-query
//! attention (through `scaled_dot_product_attention` with a causal padding mask, sliding where
//! the config says so), gated feed-forward; Qwen3 and Gemma 3 normalise queries and keys per
//! head. Gemma 3 also scales its embeddings by sqrt(hidden), norms with `1 + weight`, wraps
//! attention and feed-forward in norms on both sides, uses one rotary base for global layers
//! and another for sliding ones, and (EmbeddingGemma: `use_bidirectional_attention`) attends
//! both ways, its sliding layers within a window either side.
//!
//! Rows arrive right-padded whatever side the tokenizer declares: under causal attention a
//! token never sees the padding after it, and rotary positions are relative, so the states of
//! real tokens equal those of the left-padded batch transformers runs.

use crate::nn::{attend, int, Activation, Linear};
use crate::rotary::Rotary;
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// Model types read, for messages.
pub const SUPPORTED: &str = "qwen2, qwen3, llama, mistral, gemma3_text";

/// Whether `model_type` is a decoder this module implements.
pub fn implements(model_type: &str) -> bool {
    matches!(
        model_type,
        "qwen2" | "qwen3" | "llama" | "mistral" | "gemma3_text"
    )
}

/// Root-mean-square norm, computed in float32 as transformers does: Llama-style
/// (`x.to(kind) * w`) or Gemma-style (`(x * (1 + w)).to(kind)`).
struct RmsNorm {
    weight: Tensor,
    eps: f64,
    gemma: bool,
}

impl RmsNorm {
    fn load(w: &Weights, name: &str, eps: f64, gemma: bool) -> Result<RmsNorm, PluginError> {
        Ok(RmsNorm {
            weight: w.get(&format!("{name}.weight"))?,
            eps,
            gemma,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let kind = x.kind();
        let h = x.f_to_kind(Kind::Float)?;
        let variance = h
            .f_pow_tensor_scalar(2)?
            .f_mean_dim(-1, true, Kind::Float)?;
        let normed = h.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        if self.gemma {
            normed
                .f_mul(&self.weight.f_to_kind(Kind::Float)?.f_add_scalar(1.0)?)?
                .f_to_kind(kind)
        } else {
            normed.f_to_kind(kind)?.f_mul(&self.weight)
        }
    }
}

/// A layer's norms: Llama-style (before attention, before the feed-forward) or Gemma's
/// sandwich (before and after each).
enum Norms {
    Pre {
        attention: RmsNorm,
        feed_forward: RmsNorm,
    },
    Sandwich {
        before_attention: RmsNorm,
        after_attention: RmsNorm,
        before_feed_forward: RmsNorm,
        after_feed_forward: RmsNorm,
    },
}

struct Layer {
    norms: Norms,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3's and Gemma 3's per-head norms of queries and keys.
    qk_norms: Option<(RmsNorm, RmsNorm)>,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// A sliding-window layer (it attends within the decoder's `window`).
    slides: bool,
}

/// A loaded decoder.
pub struct Decoder {
    embed: Tensor,
    /// Gemma 3 multiplies embeddings by sqrt(hidden).
    embed_scale: Option<f64>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    rotary: Rotary,
    /// The rotary embedding of sliding layers when it differs (Gemma 3's local base).
    local_rotary: Option<Rotary>,
    /// Softmax scale when not 1/sqrt(head_dim) (Gemma 3's query_pre_attn_scalar).
    scale: Option<f64>,
    /// Attention both ways (EmbeddingGemma) instead of causal.
    bidirectional: bool,
    /// The sliding layers' window (see `windows`).
    window: Option<i64>,
    act: Activation,
    /// Hidden size.
    pub hidden: i64,
    /// Positions the model was trained for.
    pub max_positions: i64,
}

/// The rotary base: `rope_parameters.rope_theta` (transformers 5; per layer type for Gemma 3)
/// or `rope_theta`; any rope scaling other than the default is refused rather than computed
/// wrongly.
fn rope_theta(cfg: &Value, layer_type: Option<&str>) -> Result<f64, PluginError> {
    let params = cfg.get("rope_parameters").filter(|p| p.is_object());
    let params = match (params, layer_type) {
        (Some(p), Some(t)) if p.get(t).is_some_and(Value::is_object) => Some(&p[t]),
        (p, _) => p.or_else(|| cfg.get("rope_scaling").filter(|p| p.is_object())),
    };
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

/// The sliding window, as the distance from the query from which keys are no longer
/// attended, and which layers slide: Qwen2/Qwen3 name their sliding layers in `layer_types`
/// (when `use_sliding_window`), Mistral slides on every layer when `sliding_window` is set,
/// Gemma 3 on the layers `layer_types` (or every layer but each `sliding_window_pattern`th)
/// names; a bidirectional Gemma 3 attends `sliding_window / 2` tokens either side. No window
/// when no layer slides.
fn windows(model_type: &str, cfg: &Value, layers: i64) -> (Option<i64>, Vec<bool>) {
    let window = cfg["sliding_window"].as_i64();
    let sliding = match model_type {
        "mistral" | "gemma3_text" => window.is_some(),
        "qwen2" | "qwen3" => cfg["use_sliding_window"].as_bool().unwrap_or(false),
        _ => false,
    };
    let gemma = model_type == "gemma3_text";
    let pattern = cfg["sliding_window_pattern"].as_i64().unwrap_or(6).max(1);
    let window = match (gemma, bidirectional(cfg), window) {
        (true, true, Some(w)) => Some(w / 2 + 1),
        (_, _, w) => w,
    };
    let slides: Vec<bool> = (0..layers)
        .map(|i| {
            let slides = match cfg["layer_types"][i as usize].as_str() {
                Some(t) => t == "sliding_attention",
                None if gemma => (i + 1) % pattern != 0,
                None => sliding,
            };
            sliding && slides && window.is_some()
        })
        .collect();
    (window.filter(|_| slides.contains(&true)), slides)
}

/// Whether the model attends both ways (EmbeddingGemma's `use_bidirectional_attention`).
fn bidirectional(cfg: &Value) -> bool {
    cfg["use_bidirectional_attention"]
        .as_bool()
        .unwrap_or(false)
}

impl Decoder {
    /// Builds the decoder from its weights (prefix already set) and config.
    pub fn load(w: &Weights, cfg: &Value) -> Result<Decoder, PluginError> {
        let model_type = cfg["model_type"].as_str().unwrap_or_default();
        let gemma = model_type == "gemma3_text";
        let act_key = if gemma {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let default_act = if gemma { "gelu_pytorch_tanh" } else { "silu" };
        let act = Activation::parse(
            act_key,
            cfg[act_key].as_str().unwrap_or(default_act),
            &[Activation::Silu, Activation::GeluTanh],
        )?;
        if let Some(cap) = cfg["attn_logit_softcapping"].as_f64() {
            return Err(PluginError::unsupported(format!(
                "attn_logit_softcapping {cap} (soft-capped attention scores) is not implemented \
                 by the torch backend"
            )));
        }
        let eps = cfg["rms_norm_eps"].as_f64().unwrap_or(1e-6);
        let hidden = int(cfg, &["hidden_size"])?;
        let heads = int(cfg, &["num_attention_heads"])?;
        let kv_heads = cfg["num_key_value_heads"].as_i64().unwrap_or(heads);
        let head_dim = cfg["head_dim"].as_i64().unwrap_or(hidden / heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(PluginError::invalid_input(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let layer_count = int(cfg, &["num_hidden_layers"])?;
        let (window, slides) = windows(model_type, cfg, layer_count);
        let layers = (0..layer_count)
            .map(|i| {
                let p = |s: &str| format!("layers.{i}.{s}");
                let norm = |name: &str| RmsNorm::load(w, &p(name), eps, gemma);
                let qk_norms = if w.has(&p("self_attn.q_norm.weight")) {
                    Some((norm("self_attn.q_norm")?, norm("self_attn.k_norm")?))
                } else {
                    None
                };
                let norms = if gemma {
                    Norms::Sandwich {
                        before_attention: norm("input_layernorm")?,
                        after_attention: norm("post_attention_layernorm")?,
                        before_feed_forward: norm("pre_feedforward_layernorm")?,
                        after_feed_forward: norm("post_feedforward_layernorm")?,
                    }
                } else {
                    Norms::Pre {
                        attention: norm("input_layernorm")?,
                        feed_forward: norm("post_attention_layernorm")?,
                    }
                };
                Ok(Layer {
                    norms,
                    q: Linear::load(w, &p("self_attn.q_proj"))?,
                    k: Linear::load(w, &p("self_attn.k_proj"))?,
                    v: Linear::load(w, &p("self_attn.v_proj"))?,
                    o: Linear::load(w, &p("self_attn.o_proj"))?,
                    qk_norms,
                    gate: Linear::load(w, &p("mlp.gate_proj"))?,
                    up: Linear::load(w, &p("mlp.up_proj"))?,
                    down: Linear::load(w, &p("mlp.down_proj"))?,
                    slides: slides[i as usize],
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let embed = w.get("embed_tokens.weight")?;
        let device = embed.device();
        let (rotary, local_rotary) = if gemma {
            // Both layer types' rope parameters must be the default kind; their bases are
            // read as Gemma 3 configs of either transformers generation name them.
            rope_theta(cfg, Some("full_attention"))?;
            rope_theta(cfg, Some("sliding_attention"))?;
            let rope = &cfg["rope_parameters"];
            let global = rope["full_attention"]["rope_theta"]
                .as_f64()
                .or_else(|| cfg["rope_theta"].as_f64())
                .unwrap_or(1_000_000.0);
            let local = rope["sliding_attention"]["rope_theta"]
                .as_f64()
                .or_else(|| cfg["rope_local_base_freq"].as_f64())
                .unwrap_or(10_000.0);
            (
                Rotary::new(head_dim, global, device)?,
                Some(Rotary::new(head_dim, local, device)?),
            )
        } else {
            (Rotary::new(head_dim, rope_theta(cfg, None)?, device)?, None)
        };
        let scale = match gemma {
            true => Some(
                cfg["query_pre_attn_scalar"]
                    .as_f64()
                    .unwrap_or(256.0)
                    .powf(-0.5),
            ),
            false => None,
        };
        Ok(Decoder {
            embed,
            embed_scale: gemma.then(|| (hidden as f64).sqrt()),
            layers,
            norm: RmsNorm::load(w, "norm", eps, gemma)?,
            heads,
            kv_heads,
            head_dim,
            rotary,
            local_rotary,
            scale,
            bidirectional: gemma && bidirectional(cfg),
            window,
            act,
            hidden,
            max_positions: cfg["max_position_embeddings"].as_i64().unwrap_or(i64::MAX),
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.embed.size()[0]
    }

    /// The token embedding table (the output projection of models that tie them).
    pub fn embeddings(&self) -> &Tensor {
        &self.embed
    }

    /// Token states `[rows, seq, hidden]` (after the final norm) for right-padded ids and
    /// their mask `[rows, seq]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let kind = self.embed.kind();
        let tables = self.rotary.tables(seq, kind)?;
        let local_tables = match &self.local_rotary {
            Some(r) => Some(r.tables(seq, kind)?),
            None => None,
        };
        // Query i attends key j when j is a real token, j <= i (unless bidirectional), and
        // (sliding) |i - j| < window.
        let at = Tensor::f_arange(seq, (Kind::Int64, device))?;
        let distance = at.f_unsqueeze(1)?.f_sub(&at.f_unsqueeze(0)?)?;
        let live = mask.f_ne(0)?.f_view([rows, 1, 1, seq])?;
        let full = if self.bidirectional {
            live.shallow_clone()
        } else {
            distance.f_ge(0)?.f_logical_and(&live)?
        };
        let sliding = match self.window {
            Some(w) => Some(distance.f_abs()?.f_lt(w)?.f_logical_and(&full)?),
            None => None,
        };
        let groups = self.heads / self.kv_heads;
        let mut x = Tensor::f_embedding(&self.embed, ids, -1, false, false)?;
        if let Some(s) = self.embed_scale {
            // transformers multiplies by the scale cast to the weights' precision.
            let scale = Tensor::f_full([1], s, (Kind::Float, device))?.f_to_kind(kind)?;
            x = x.f_mul(&scale)?;
        }
        for l in &self.layers {
            let h = match &l.norms {
                Norms::Pre { attention, .. } => attention.forward(&x)?,
                Norms::Sandwich {
                    before_attention, ..
                } => before_attention.forward(&x)?,
            };
            let (rotary, tables) = match (&self.local_rotary, &local_tables, l.slides) {
                (Some(r), Some(t), true) => (r, t),
                _ => (&self.rotary, &tables),
            };
            let split = |t: Tensor, heads: i64| t.f_view([rows, seq, heads, self.head_dim]);
            let mut q = split(l.q.forward(&h)?, self.heads)?;
            let mut k = split(l.k.forward(&h)?, self.kv_heads)?;
            if let Some((qn, kn)) = &l.qk_norms {
                q = qn.forward(&q)?;
                k = kn.forward(&k)?;
            }
            let q = rotary.apply(&q.f_transpose(1, 2)?, tables)?;
            let k = rotary.apply(&k.f_transpose(1, 2)?, tables)?;
            let v = split(l.v.forward(&h)?, self.kv_heads)?.f_transpose(1, 2)?;
            let (k, v) = if groups > 1 {
                (
                    k.f_repeat_interleave_self_int(groups, 1, None)?,
                    v.f_repeat_interleave_self_int(groups, 1, None)?,
                )
            } else {
                (k, v)
            };
            let attend_mask = match (&sliding, l.slides) {
                (Some(m), true) => m,
                _ => &full,
            };
            let ctx = attend(&q, &k, &v, attend_mask, self.scale)?;
            let attended = l.o.forward(&ctx)?;
            let gate = |h: &Tensor| -> Result<Tensor, TchError> {
                let g = self.act.apply(&l.gate.forward(h)?)?;
                l.down.forward(&g.f_mul(&l.up.forward(h)?)?)
            };
            match &l.norms {
                Norms::Pre { feed_forward, .. } => {
                    x = x.f_add(&attended)?;
                    x = x.f_add(&gate(&feed_forward.forward(&x)?)?)?;
                }
                Norms::Sandwich {
                    after_attention,
                    before_feed_forward,
                    after_feed_forward,
                    ..
                } => {
                    x = x.f_add(&after_attention.forward(&attended)?)?;
                    let f = gate(&before_feed_forward.forward(&x)?)?;
                    x = x.f_add(&after_feed_forward.forward(&f)?)?;
                }
            }
        }
        self.norm.forward(&x)
    }
}
