//! ModernBERT on libtorch: a pre-norm bidirectional encoder with rotary positions (one base
//! for global layers, another for local ones), local layers attending a window of
//! `local_attention / 2` tokens either side, GeGLU feed-forward, and no biases unless the
//! config asks for them. Reads transformers 4.x configs (`global_attn_every_n_layers`,
//! `global_rope_theta`, `local_rope_theta`, `local_attention`) and 5.x ones (`layer_types`,
//! `rope_parameters`).

use crate::nn::{attend, int, Activation, Linear, Norm};
use crate::rotary::Rotary;
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// The activations ModernBERT configs may name.
const ACTIVATIONS: &[Activation] = &[
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Silu,
    Activation::Relu,
];

struct Layer {
    /// None on the first layer (its input is the normalised embeddings).
    attn_norm: Option<Norm>,
    qkv: Linear,
    out: Linear,
    mlp_norm: Norm,
    wi: Linear,
    wo: Linear,
    /// Local layers: keys further than this from the query are not attended.
    window: Option<i64>,
}

/// A loaded ModernBERT encoder.
pub struct ModernBert {
    embed: Tensor,
    embed_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    global_rope: Rotary,
    local_rope: Rotary,
    heads: i64,
    act: Activation,
    /// Hidden size.
    pub hidden: i64,
    /// Positions the model was trained for.
    pub max_positions: i64,
}

/// The rotary base of `layer_type` (`full_attention` / `sliding_attention`).
fn theta(cfg: &Value, layer_type: &str) -> Result<f64, PluginError> {
    let params = &cfg["rope_parameters"][layer_type];
    if let Some(kind) = params["rope_type"].as_str() {
        if kind != "default" {
            return Err(PluginError::unsupported(format!(
                "rope type {kind:?} is not implemented by the torch backend"
            )));
        }
    }
    let (old_key, default) = match layer_type {
        "full_attention" => ("global_rope_theta", 160_000.0),
        _ => ("local_rope_theta", 10_000.0),
    };
    Ok(params["rope_theta"]
        .as_f64()
        .or_else(|| cfg[old_key].as_f64())
        .unwrap_or(default))
}

impl ModernBert {
    /// Builds the encoder from its weights (prefix already set) and config.
    pub fn load(w: &Weights, cfg: &Value) -> Result<ModernBert, PluginError> {
        let eps = cfg["norm_eps"].as_f64().unwrap_or(1e-5);
        let hidden = int(cfg, &["hidden_size"])?;
        let heads = int(cfg, &["num_attention_heads"])?;
        let count = int(cfg, &["num_hidden_layers"])?;
        let every = cfg["global_attn_every_n_layers"]
            .as_i64()
            .unwrap_or(3)
            .max(1);
        let half_window = cfg["sliding_window"]
            .as_i64()
            .unwrap_or_else(|| cfg["local_attention"].as_i64().unwrap_or(128) / 2);
        let act = Activation::parse(
            "hidden_activation",
            cfg["hidden_activation"].as_str().unwrap_or("gelu"),
            ACTIVATIONS,
        )?;
        let layers = (0..count)
            .map(|i| {
                let local = match cfg["layer_types"][i as usize].as_str() {
                    Some(t) => t == "sliding_attention",
                    None => i % every != 0,
                };
                let p = |s: &str| format!("layers.{i}.{s}");
                Ok(Layer {
                    attn_norm: if i == 0 {
                        None
                    } else {
                        Some(Norm::load_bias_optional(w, &p("attn_norm"), eps)?)
                    },
                    qkv: Linear::load(w, &p("attn.Wqkv"))?,
                    out: Linear::load(w, &p("attn.Wo"))?,
                    mlp_norm: Norm::load_bias_optional(w, &p("mlp_norm"), eps)?,
                    wi: Linear::load(w, &p("mlp.Wi"))?,
                    wo: Linear::load(w, &p("mlp.Wo"))?,
                    window: local.then_some(half_window),
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let embed = w.get("embeddings.tok_embeddings.weight")?;
        let head_dim = hidden / heads;
        let device = embed.device();
        Ok(ModernBert {
            embed_norm: Norm::load_bias_optional(w, "embeddings.norm", eps)?,
            layers,
            final_norm: Norm::load_bias_optional(w, "final_norm", eps)?,
            global_rope: Rotary::new(head_dim, theta(cfg, "full_attention")?, device)?,
            local_rope: Rotary::new(head_dim, theta(cfg, "sliding_attention")?, device)?,
            heads,
            act,
            hidden,
            max_positions: cfg["max_position_embeddings"].as_i64().unwrap_or(8192),
            embed,
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.embed.size()[0]
    }

    /// Token states `[rows, seq, hidden]` for right-padded ids and their mask.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let kind = self.embed.kind();
        let global = self.global_rope.tables(seq, kind)?;
        let local = self.local_rope.tables(seq, kind)?;
        let live = mask.f_ne(0)?.f_view([rows, 1, 1, seq])?;
        let at = Tensor::f_arange(seq, (Kind::Int64, device))?;
        let distance = at.f_unsqueeze(1)?.f_sub(&at.f_unsqueeze(0)?)?.f_abs()?;
        let head_dim = self.hidden / self.heads;
        let mut x =
            self.embed_norm
                .forward(&Tensor::f_embedding(&self.embed, ids, -1, false, false)?)?;
        for l in &self.layers {
            let h = match &l.attn_norm {
                Some(n) => n.forward(&x)?,
                None => x.shallow_clone(),
            };
            // [rows, seq, 3, heads, head_dim] -> three [rows, heads, seq, head_dim]
            let qkv = l
                .qkv
                .forward(&h)?
                .f_view([rows, seq, 3, self.heads, head_dim])?;
            let part = |i: i64| qkv.f_select(2, i)?.f_transpose(1, 2);
            let (rope, tables, mask) = match l.window {
                Some(w) => (
                    &self.local_rope,
                    &local,
                    distance.f_le(w)?.f_logical_and(&live)?,
                ),
                None => (&self.global_rope, &global, live.shallow_clone()),
            };
            let q = rope.apply(&part(0)?, tables)?;
            let k = rope.apply(&part(1)?, tables)?;
            let ctx = attend(&q, &k, &part(2)?, &mask, None)?;
            x = x.f_add(&l.out.forward(&ctx)?)?;
            let inner = l.wi.forward(&l.mlp_norm.forward(&x)?)?;
            let half = inner.size()[2] / 2;
            let gated = self
                .act
                .apply(&inner.f_narrow(-1, 0, half)?)?
                .f_mul(&inner.f_narrow(-1, half, half)?)?;
            x = x.f_add(&l.wo.forward(&gated)?)?;
        }
        self.final_norm.forward(&x)
    }
}

/// `ModernBertForSequenceClassification`'s head: CLS or mean pooling (`classifier_pooling`),
/// dense + activation + norm, then the classifier.
pub struct Head {
    mean: bool,
    dense: Linear,
    act: Activation,
    norm: Norm,
    classifier: Linear,
}

impl Head {
    /// Reads `head.dense`, `head.norm` and `classifier` (no prefix).
    pub fn load(w: &Weights, cfg: &Value) -> Result<Head, PluginError> {
        let eps = cfg["norm_eps"].as_f64().unwrap_or(1e-5);
        let mean = match cfg["classifier_pooling"].as_str().unwrap_or("cls") {
            "cls" => false,
            "mean" => true,
            other => {
                return Err(PluginError::unsupported(format!(
                    "classifier_pooling {other:?} is not supported (cls, mean are)"
                )))
            }
        };
        Ok(Head {
            mean,
            dense: Linear::load(w, "head.dense")?,
            act: Activation::parse(
                "classifier_activation",
                cfg["classifier_activation"].as_str().unwrap_or("gelu"),
                ACTIVATIONS,
            )?,
            norm: Norm::load_bias_optional(w, "head.norm", eps)?,
            classifier: Linear::load(w, "classifier")?,
        })
    }

    /// The logits `[rows, labels]` of token states under `mask`.
    pub fn logits(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let pooled = if self.mean {
            let m = mask.f_unsqueeze(-1)?.f_to_kind(states.kind())?;
            states
                .f_mul(&m)?
                .f_sum_dim_intlist(1, false, states.kind())?
                .f_div(&m.f_sum_dim_intlist(1, false, states.kind())?)?
        } else {
            states.f_select(1, 0)?
        };
        let h = self
            .norm
            .forward(&self.act.apply(&self.dense.forward(&pooled)?)?)?;
        self.classifier.forward(&h)
    }
}
