//! CLIP: the text tower (causal, pooled at the end-of-text token) and the vision tower
//! (patch convolution, class token), each with its projection into the shared space.

use crate::encoder::{Linear, Norm};
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, Tensor};

#[derive(Clone, Copy)]
enum Act {
    QuickGelu,
    Gelu,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm1: Norm,
    fc1: Linear,
    fc2: Linear,
    norm2: Norm,
}

/// A stack of pre-norm transformer layers.
struct Tower {
    layers: Vec<Layer>,
    heads: i64,
    hidden: i64,
    act: Act,
}

fn num(cfg: &Value, key: &str) -> Result<i64, PluginError> {
    cfg[key]
        .as_i64()
        .ok_or_else(|| PluginError::invalid_input(format!("config.json lacks {key}")))
}

impl Tower {
    fn load(w: &Weights, prefix: &str, cfg: &Value, eps: f64) -> Result<Tower, PluginError> {
        let act = match cfg["hidden_act"].as_str().unwrap_or("quick_gelu") {
            "quick_gelu" => Act::QuickGelu,
            "gelu" => Act::Gelu,
            other => {
                return Err(PluginError::unsupported(format!(
                    "CLIP hidden_act {other:?} is not supported (quick_gelu, gelu are)"
                )))
            }
        };
        let layers = (0..num(cfg, "num_hidden_layers")?)
            .map(|i| {
                let p = |s: &str| format!("{prefix}encoder.layers.{i}.{s}");
                Ok(Layer {
                    q: Linear::load(w, &p("self_attn.q_proj"))?,
                    k: Linear::load(w, &p("self_attn.k_proj"))?,
                    v: Linear::load(w, &p("self_attn.v_proj"))?,
                    out: Linear::load(w, &p("self_attn.out_proj"))?,
                    norm1: Norm::load(w, &p("layer_norm1"), eps)?,
                    fc1: Linear::load(w, &p("mlp.fc1"))?,
                    fc2: Linear::load(w, &p("mlp.fc2"))?,
                    norm2: Norm::load(w, &p("layer_norm2"), eps)?,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        Ok(Tower {
            layers,
            heads: num(cfg, "num_attention_heads")?,
            hidden: num(cfg, "hidden_size")?,
            act,
        })
    }

    /// Runs the layers on `[rows, seq, hidden]` with a boolean `attend` mask.
    fn forward(&self, mut x: Tensor, attend: Option<&Tensor>) -> Tensor {
        let (rows, seq, _) = x.size3().unwrap_or((0, 0, 0));
        let head = self.hidden / self.heads;
        let split = |t: Tensor| t.view([rows, seq, self.heads, head]).transpose(1, 2);
        for l in &self.layers {
            let h = l.norm1.forward(&x);
            let ctx = Tensor::scaled_dot_product_attention(
                &split(l.q.forward(&h)),
                &split(l.k.forward(&h)),
                &split(l.v.forward(&h)),
                attend,
                0.0,
                false,
                None,
                false,
            )
            .transpose(1, 2)
            .reshape([rows, seq, self.hidden]);
            x += l.out.forward(&ctx);
            let h = l.fc1.forward(&l.norm2.forward(&x));
            let h = match self.act {
                Act::QuickGelu => &h * (&h * 1.702).sigmoid(),
                Act::Gelu => h.gelu("none"),
            };
            x += l.fc2.forward(&h);
        }
        x
    }
}

/// A CLIP model's two towers and projections.
pub struct Clip {
    token_embedding: Tensor,
    text_positions: Tensor,
    text: Tower,
    final_norm: Norm,
    text_projection: Tensor,
    eos_id: i64,
    patch: Tensor,
    patch_size: i64,
    class_embedding: Tensor,
    vision_positions: Tensor,
    pre_norm: Norm,
    vision: Tower,
    post_norm: Norm,
    visual_projection: Tensor,
    /// Length of the projected vectors.
    pub dim: i64,
    /// Longest text.
    pub max_positions: i64,
}

impl Clip {
    /// Builds both towers from a `CLIPModel` checkpoint and its `config.json`.
    pub fn load(w: &Weights, cfg: &Value) -> Result<Clip, PluginError> {
        let t = &cfg["text_config"];
        let v = &cfg["vision_config"];
        let eps = |c: &Value| c["layer_norm_eps"].as_f64().unwrap_or(1e-5);
        let text_positions = w.get("text_model.embeddings.position_embedding.weight")?;
        let text_projection = w.get("text_projection.weight")?;
        Ok(Clip {
            token_embedding: w.get("text_model.embeddings.token_embedding.weight")?,
            max_positions: text_positions.size()[0],
            text_positions,
            text: Tower::load(w, "text_model.", t, eps(t))?,
            final_norm: Norm::load(w, "text_model.final_layer_norm", eps(t))?,
            dim: text_projection.size()[0],
            text_projection,
            eos_id: t["eos_token_id"].as_i64().unwrap_or(2),
            patch: w.get("vision_model.embeddings.patch_embedding.weight")?,
            patch_size: num(v, "patch_size")?,
            class_embedding: w.get("vision_model.embeddings.class_embedding")?,
            vision_positions: w.get("vision_model.embeddings.position_embedding.weight")?,
            pre_norm: Norm::load(w, "vision_model.pre_layrnorm", eps(v))?,
            vision: Tower::load(w, "vision_model.", v, eps(v))?,
            post_norm: Norm::load(w, "vision_model.post_layernorm", eps(v))?,
            visual_projection: w.get("visual_projection.weight")?,
        })
    }

    /// Projected text features `[rows, dim]` for ids and mask `[rows, seq]`.
    pub fn text(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let (rows, seq) = ids.size2().unwrap_or((0, 0));
        let device = ids.device();
        let positions = Tensor::arange(seq, (Kind::Int64, device)).unsqueeze(0);
        let x = Tensor::embedding(&self.token_embedding, ids, -1, false, false)
            + Tensor::embedding(&self.text_positions, &positions, -1, false, false);
        // Causal, and never attending to padding.
        let causal = Tensor::ones([seq, seq], (Kind::Bool, device)).tril(0);
        let attend = causal
            .view([1, 1, seq, seq])
            .logical_and(&mask.ne(0).view([rows, 1, 1, seq]));
        let x = self
            .final_norm
            .forward(&self.text.forward(x, Some(&attend)));
        // Pooled at the end-of-text token: the highest id in old configs (eos id 2), else its
        // first occurrence.
        let eos = if self.eos_id == 2 {
            ids.argmax(-1, false)
        } else {
            ids.eq(self.eos_id).to_kind(Kind::Int64).argmax(-1, false)
        };
        let pooled = x.index(&[Some(Tensor::arange(rows, (Kind::Int64, device))), Some(eos)]);
        pooled.linear::<Tensor>(&self.text_projection, None)
    }

    /// Projected image features `[rows, dim]` for pixels `[rows, 3, h, w]`.
    pub fn image(&self, pixels: &Tensor) -> Tensor {
        let rows = pixels.size()[0];
        let patches = pixels
            .conv2d::<Tensor>(
                &self.patch,
                None,
                [self.patch_size, self.patch_size],
                [0, 0],
                [1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let hidden = self.class_embedding.size()[0];
        let class = self
            .class_embedding
            .view([1, 1, hidden])
            .expand([rows, 1, hidden], false);
        let x = Tensor::cat(&[class, patches], 1) + self.vision_positions.unsqueeze(0);
        let x = self.vision.forward(self.pre_norm.forward(&x), None);
        let pooled = self.post_norm.forward(&x.select(1, 0));
        pooled.linear::<Tensor>(&self.visual_projection, None)
    }
}
