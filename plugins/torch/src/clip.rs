//! CLIP: the text tower (causal, pooled at the end-of-text token) and the vision tower
//! (patch convolution, class token), each with its projection into the shared space.

use crate::nn::{int, Linear, Norm};
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

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
        let layers = (0..int(cfg, &["num_hidden_layers"])?)
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
            heads: int(cfg, &["num_attention_heads"])?,
            hidden: int(cfg, &["hidden_size"])?,
            act,
        })
    }

    /// Runs the layers on `[rows, seq, hidden]` with a boolean `attend` mask.
    fn forward(&self, mut x: Tensor, attend: Option<&Tensor>) -> Result<Tensor, TchError> {
        let (rows, seq, _) = x.size3()?;
        let head = self.hidden / self.heads;
        let split = |t: Tensor| t.f_view([rows, seq, self.heads, head])?.f_transpose(1, 2);
        for l in &self.layers {
            let h = l.norm1.forward(&x)?;
            let ctx = Tensor::f_scaled_dot_product_attention(
                &split(l.q.forward(&h)?)?,
                &split(l.k.forward(&h)?)?,
                &split(l.v.forward(&h)?)?,
                attend,
                0.0,
                false,
                None,
                false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([rows, seq, self.hidden])?;
            // In place, as `+=` does; the returned handle is `x` itself.
            let _ = x.f_add_(&l.out.forward(&ctx)?)?;
            let h = l.fc1.forward(&l.norm2.forward(&x)?)?;
            let h = match self.act {
                Act::QuickGelu => h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?,
                Act::Gelu => h.f_gelu("none")?,
            };
            let _ = x.f_add_(&l.fc2.forward(&h)?)?;
        }
        Ok(x)
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
            patch_size: int(v, &["patch_size"])?,
            class_embedding: w.get("vision_model.embeddings.class_embedding")?,
            vision_positions: w.get("vision_model.embeddings.position_embedding.weight")?,
            pre_norm: Norm::load(w, "vision_model.pre_layrnorm", eps(v))?,
            vision: Tower::load(w, "vision_model.", v, eps(v))?,
            post_norm: Norm::load(w, "vision_model.post_layernorm", eps(v))?,
            visual_projection: w.get("visual_projection.weight")?,
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.token_embedding.size()[0]
    }

    /// Projected text features `[rows, dim]` for ids and mask `[rows, seq]`.
    pub fn text(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let positions = Tensor::f_arange(seq, (Kind::Int64, device))?.f_unsqueeze(0)?;
        let x = Tensor::f_embedding(&self.token_embedding, ids, -1, false, false)?.f_add(
            &Tensor::f_embedding(&self.text_positions, &positions, -1, false, false)?,
        )?;
        // Causal, and never attending to padding.
        let causal = Tensor::f_ones([seq, seq], (Kind::Bool, device))?.f_tril(0)?;
        let attend = causal
            .f_view([1, 1, seq, seq])?
            .f_logical_and(&mask.f_ne(0)?.f_view([rows, 1, 1, seq])?)?;
        let x = self
            .final_norm
            .forward(&self.text.forward(x, Some(&attend))?)?;
        // Pooled at the end-of-text token: the highest id in old configs (eos id 2), else its
        // first occurrence.
        let eos = if self.eos_id == 2 {
            ids.f_argmax(-1, false)?
        } else {
            ids.f_eq(self.eos_id)?
                .f_to_kind(Kind::Int64)?
                .f_argmax(-1, false)?
        };
        let rows = Tensor::f_arange(rows, (Kind::Int64, device))?;
        let pooled = x.f_index(&[Some(rows), Some(eos)])?;
        pooled.f_linear::<Tensor>(&self.text_projection, None)
    }

    /// Projected image features `[rows, dim]` for pixels `[rows, 3, h, w]`.
    pub fn image(&self, pixels: &Tensor) -> Result<Tensor, TchError> {
        let rows = pixels.size()[0];
        let patches = pixels
            .f_conv2d::<Tensor>(
                &self.patch,
                None,
                [self.patch_size, self.patch_size],
                [0, 0],
                [1, 1],
                1,
            )?
            .f_flatten(2, -1)?
            .f_transpose(1, 2)?;
        let hidden = self.class_embedding.size()[0];
        let class = self
            .class_embedding
            .f_view([1, 1, hidden])?
            .f_expand([rows, 1, hidden], false)?;
        let x =
            Tensor::f_cat(&[class, patches], 1)?.f_add(&self.vision_positions.f_unsqueeze(0)?)?;
        let x = self.vision.forward(self.pre_norm.forward(&x)?, None)?;
        let pooled = self.post_norm.forward(&x.f_select(1, 0)?)?;
        pooled.f_linear::<Tensor>(&self.visual_projection, None)
    }
}
