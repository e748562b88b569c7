//! BERT and RoBERTa / XLM-RoBERTa encoders on libtorch, attention through
//! `scaled_dot_product_attention` (fused kernels on GPU), padding masked.

use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// The families this encoder implements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// bert (MiniLM, bge, e5, gte v1).
    Bert,
    /// roberta, xlm-roberta, camembert: position ids count from the padding index.
    Roberta,
}

/// Model types read, for messages.
pub const SUPPORTED: &str = "bert, roberta, xlm-roberta, camembert";

impl Family {
    /// The family of a `config.json`'s `model_type`.
    pub fn of(model_type: &str) -> Result<Family, PluginError> {
        match model_type {
            "bert" => Ok(Family::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Ok(Family::Roberta),
            other => Err(PluginError::unsupported(format!(
                "the torch backend does not implement model_type {other:?}; supported: {SUPPORTED}"
            ))),
        }
    }

    /// The prefix of the encoder's weights inside a `*ForSequenceClassification` checkpoint.
    pub fn head_prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
        }
    }
}

/// A dense layer.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `{name}.weight` and `{name}.bias`.
    pub fn load(w: &Weights, name: &str) -> Result<Linear, PluginError> {
        let bias = format!("{name}.bias");
        Ok(Linear {
            weight: w.get(&format!("{name}.weight"))?,
            bias: if w.has(&bias) {
                Some(w.get(&bias)?)
            } else {
                None
            },
        })
    }

    /// `x W^T + b`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_linear(&self.weight, self.bias.as_ref())
    }
}

/// A layer norm.
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    /// Reads `{name}.weight` and `{name}.bias` (or gamma and beta).
    pub fn load(w: &Weights, name: &str, eps: f64) -> Result<Norm, PluginError> {
        // Old checkpoints name the parameters gamma and beta.
        let (a, b) = if w.has(&format!("{name}.weight")) {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(Norm {
            weight: w.get(&format!("{name}.{a}"))?,
            bias: w.get(&format!("{name}.{b}"))?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let h = self.weight.size()[0];
        x.f_layer_norm([h], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

#[derive(Clone, Copy)]
enum Act {
    Gelu,
    GeluTanh,
    Relu,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// A loaded encoder.
pub struct Encoder {
    family: Family,
    words: Tensor,
    positions: Tensor,
    types: Tensor,
    embed_norm: Norm,
    layers: Vec<Layer>,
    heads: i64,
    /// Hidden size.
    pub hidden: i64,
    act: Act,
    pad_id: i64,
    /// Position embeddings available (longest input, counting RoBERTa's offset).
    pub max_positions: i64,
}

fn num(cfg: &Value, key: &str) -> Result<i64, PluginError> {
    cfg[key]
        .as_i64()
        .ok_or_else(|| PluginError::invalid_input(format!("config.json lacks {key}")))
}

impl Encoder {
    /// Builds the encoder of `family` from its weights (prefix already set) and config.
    pub fn load(family: Family, w: &Weights, cfg: &Value) -> Result<Encoder, PluginError> {
        let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12);
        let act = match cfg["hidden_act"].as_str().unwrap_or("gelu") {
            "gelu" => Act::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Act::GeluTanh,
            "relu" => Act::Relu,
            other => {
                return Err(PluginError::unsupported(format!(
                    "hidden_act {other:?} is not supported (gelu, gelu_new, relu are)"
                )))
            }
        };
        let layers = (0..num(cfg, "num_hidden_layers")?)
            .map(|i| {
                let p = |s: &str| format!("encoder.layer.{i}.{s}");
                Ok(Layer {
                    query: Linear::load(w, &p("attention.self.query"))?,
                    key: Linear::load(w, &p("attention.self.key"))?,
                    value: Linear::load(w, &p("attention.self.value"))?,
                    attn_out: Linear::load(w, &p("attention.output.dense"))?,
                    attn_norm: Norm::load(w, &p("attention.output.LayerNorm"), eps)?,
                    up: Linear::load(w, &p("intermediate.dense"))?,
                    down: Linear::load(w, &p("output.dense"))?,
                    out_norm: Norm::load(w, &p("output.LayerNorm"), eps)?,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let positions = w.get("embeddings.position_embeddings.weight")?;
        let pad_id = cfg["pad_token_id"].as_i64().unwrap_or(1);
        let table = positions.size()[0];
        Ok(Encoder {
            family,
            words: w.get("embeddings.word_embeddings.weight")?,
            positions,
            types: w.get("embeddings.token_type_embeddings.weight")?,
            embed_norm: Norm::load(w, "embeddings.LayerNorm", eps)?,
            layers,
            heads: num(cfg, "num_attention_heads")?,
            hidden: num(cfg, "hidden_size")?,
            act,
            pad_id,
            max_positions: match family {
                Family::Bert => table,
                Family::Roberta => table - pad_id - 1,
            },
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.words.size()[0]
    }

    /// Segments the model distinguishes; with one, segment ids are ignored (all read as 0).
    pub fn segments(&self) -> i64 {
        self.types.size()[0]
    }

    /// Token states `[rows, seq, hidden]` for ids, segment ids and mask `[rows, seq]`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let positions = match self.family {
            Family::Bert => Tensor::f_arange(seq, (Kind::Int64, device))?.f_unsqueeze(0)?,
            Family::Roberta => {
                let live = ids.f_ne(self.pad_id)?.f_to_kind(Kind::Int64)?;
                live.f_cumsum(1, Kind::Int64)?
                    .f_mul(&live)?
                    .f_add_scalar(self.pad_id)?
            }
        };
        // RoBERTa-family checkpoints have one segment: every token is segment 0.
        let types = if self.segments() == 1 {
            types.f_zeros_like()?
        } else {
            types.shallow_clone()
        };
        let x = Tensor::f_embedding(&self.words, ids, -1, false, false)?
            .f_add(&Tensor::f_embedding(
                &self.positions,
                &positions,
                -1,
                false,
                false,
            )?)?
            .f_add(&Tensor::f_embedding(&self.types, &types, -1, false, false)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        let attend = mask.f_ne(0)?.f_view([rows, 1, 1, seq])?;
        let head = self.hidden / self.heads;
        let split = |t: Tensor| t.f_view([rows, seq, self.heads, head])?.f_transpose(1, 2);
        for l in &self.layers {
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
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
            .f_reshape([rows, seq, self.hidden])?;
            let attended = l.attn_norm.forward(&l.attn_out.forward(&ctx)?.f_add(&x)?)?;
            let inner = l.up.forward(&attended)?;
            let inner = match self.act {
                Act::Gelu => inner.f_gelu("none")?,
                Act::GeluTanh => inner.f_gelu("tanh")?,
                Act::Relu => inner.f_relu()?,
            };
            x = l
                .out_norm
                .forward(&l.down.forward(&inner)?.f_add(&attended)?)?;
        }
        Ok(x)
    }
}
