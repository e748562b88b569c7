//! Post-norm bidirectional encoders with rotary positions and no position table, a packed
//! query / key / value projection and a gated feed-forward, in the layouts their checkpoints are
//! published in:
//! - Alibaba's GTE (`model_type` "new": gte-multilingual-base, mGTE and its reranker):
//!   `attention.qkv_proj`, the feed-forward packed in `mlp.up_gate_proj` (up, then gate);
//! - Nomic's BERT (`model_type` "nomic_bert": nomic-embed-text-v1 and v1.5): `attn.Wqkv`, the
//!   feed-forward's up and gate in `mlp.fc11` and `mlp.fc12`, GPT-2's config keys (`n_embd`,
//!   `n_layer`, ...).
//!
//! transformers' `GteModel` and `NomicBertModel` compute the same after renaming those weights
//! (its `conversion_mapping`).

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

/// The layout a checkpoint is published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Alibaba's GTE (`model_type` "new").
    Gte,
    /// Nomic's BERT (`model_type` "nomic_bert").
    Nomic,
}

/// What the encoder's config says, read from either layout's keys.
struct Shape {
    hidden: i64,
    heads: i64,
    layers: i64,
    eps: f64,
    theta: f64,
    max_positions: i64,
    act: Activation,
}

/// The config of a GTE checkpoint.
fn gte_shape(cfg: &Value) -> Result<Shape, PluginError> {
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
    Ok(Shape {
        hidden: int(cfg, &["hidden_size"])?,
        heads: int(cfg, &["num_attention_heads"])?,
        layers: int(cfg, &["num_hidden_layers"])?,
        eps: cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12),
        theta: theta(cfg, 160_000.0)?,
        max_positions: cfg["max_position_embeddings"].as_i64().unwrap_or(8192),
        act,
    })
}

/// The config of a Nomic BERT checkpoint: Nomic's own keys (GPT-2's names, as nomic-ai
/// publishes them), else those of transformers' `NomicBertConfig`; the variants ember does
/// not compute are refused by name, and so are Nomic keys whose absence would mean one of them
/// (Nomic's config defaults them differently from the published models).
fn nomic_shape(cfg: &Value) -> Result<Shape, PluginError> {
    let refuse = |key: &str, what: &str| {
        Err(PluginError::unsupported(format!(
            "{key} {} ({what}) is not implemented by the torch backend for nomic_bert \
             (nomic-embed-text-v1 and v1.5's settings are)",
            cfg[key]
        )))
    };
    // Nomic's own keys, with its config's defaults (GPT-2's); else transformers' keys.
    let own = cfg.get("n_embd").is_some();
    for (key, what) in [
        ("causal", "a left-to-right mask"),
        ("prenorm", "norms before the blocks"),
        ("parallel_block", "attention and feed-forward side by side"),
        ("rotary_emb_interleaved", "interleaved rotary pairs"),
        ("use_rms_norm", "RMS norms"),
    ] {
        if cfg[key].as_bool() == Some(true) {
            return refuse(key, what);
        }
    }
    match cfg["rotary_emb_fraction"].as_f64() {
        Some(f) if f != 1.0 => {
            return refuse(
                "rotary_emb_fraction",
                "rotary positions on part of each head, or learned positions",
            )
        }
        None if own => {
            return refuse(
                "rotary_emb_fraction",
                "absent: Nomic's default, 0, means learned positions",
            )
        }
        _ => {}
    }
    if !cfg["rotary_scaling_factor"].is_null() {
        return refuse("rotary_scaling_factor", "dynamic NTK scaling");
    }
    // Nomic names the gated feed-forward by its activation; transformers' config by the gate's.
    let act = match cfg["activation_function"].as_str() {
        Some("swiglu") => Activation::Silu,
        Some("geglu") => Activation::Gelu,
        _ if own => {
            return refuse(
                "activation_function",
                "the feed-forwards computed are swiglu and geglu",
            )
        }
        _ => Activation::parse(
            "hidden_act",
            cfg["hidden_act"].as_str().unwrap_or("silu"),
            &[Activation::Silu, Activation::Gelu, Activation::GeluTanh],
        )?,
    };
    let theta = match cfg["rotary_emb_base"].as_f64() {
        Some(base) => base,
        None if own => {
            return refuse(
                "rotary_emb_base",
                "absent: Nomic's versions default it differently",
            )
        }
        None => theta(cfg, 1000.0)?,
    };
    let eps = match own {
        true => cfg["layer_norm_epsilon"].as_f64().unwrap_or(1e-5),
        false => cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12),
    };
    Ok(Shape {
        hidden: int(cfg, &["n_embd", "hidden_size"])?,
        heads: int(cfg, &["n_head", "num_attention_heads"])?,
        layers: int(cfg, &["n_layer", "num_hidden_layers"])?,
        eps,
        theta,
        max_positions: ["n_positions", "max_position_embeddings"]
            .iter()
            .find_map(|k| cfg[k].as_i64())
            .unwrap_or(2048),
        act,
    })
}

/// A loaded GTE or Nomic BERT encoder.
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

/// The rotary base, refusing the scalings ember does not compute (gte-*-en-v1.5's `ntk`);
/// `default` without one.
fn theta(cfg: &Value, default: f64) -> Result<f64, PluginError> {
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
        .unwrap_or(default))
}

impl Gte {
    /// Builds the encoder from its weights (prefix already set) and config, published in
    /// `layout`.
    pub fn load(w: &Weights, cfg: &Value, layout: Layout) -> Result<Gte, PluginError> {
        let shape = match layout {
            Layout::Gte => gte_shape(cfg)?,
            Layout::Nomic => nomic_shape(cfg)?,
        };
        let eps = shape.eps;
        let layers = (0..shape.layers)
            .map(|i| match layout {
                Layout::Gte => {
                    let p = |s: &str| format!("encoder.layer.{i}.{s}");
                    Ok(Layer {
                        qkv: Linear::load(w, &p("attention.qkv_proj"))?,
                        out: Linear::load(w, &p("attention.o_proj"))?,
                        attn_norm: Norm::load(w, &p("attn_ln"), eps)?,
                        up_gate: Linear::load(w, &p("mlp.up_gate_proj"))?,
                        down: Linear::load(w, &p("mlp.down_proj"))?,
                        mlp_norm: Norm::load(w, &p("mlp_ln"), eps)?,
                    })
                }
                Layout::Nomic => {
                    let p = |s: &str| format!("encoder.layers.{i}.{s}");
                    let up = Linear::load(w, &p("mlp.fc11"))?;
                    let gate = Linear::load(w, &p("mlp.fc12"))?;
                    Ok(Layer {
                        qkv: Linear::load(w, &p("attn.Wqkv"))?,
                        out: Linear::load(w, &p("attn.out_proj"))?,
                        attn_norm: Norm::load(w, &p("norm1"), eps)?,
                        up_gate: Linear::fuse(vec![up, gate]).map_err(|e| {
                            PluginError::internal(format!(
                                "fusing the feed-forward of layer {i}: {e}"
                            ))
                        })?,
                        down: Linear::load(w, &p("mlp.fc2"))?,
                        mlp_norm: Norm::load(w, &p("norm2"), eps)?,
                    })
                }
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let words = w.get("embeddings.word_embeddings.weight")?;
        let types = Segments::load(w, "embeddings.token_type_embeddings.weight")?;
        let device = words.device();
        let embed_norm = match layout {
            Layout::Gte => "embeddings.LayerNorm",
            Layout::Nomic => "emb_ln",
        };
        Ok(Gte {
            types,
            embed_norm: Norm::load(w, embed_norm, eps)?,
            layers,
            rope: Rotary::new(shape.hidden / shape.heads, shape.theta, device)?,
            heads: shape.heads,
            act: shape.act,
            hidden: shape.hidden,
            max_positions: shape.max_positions,
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
