//! The layers every architecture is built from: dense layers, layer norms, segment embeddings,
//! activations,
//! attention through `scaled_dot_product_attention`, and integers read from `config.json`.

use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Device, TchError, Tensor};

/// The first of `keys` that `cfg` has as an integer (families name their sizes differently:
/// DistilBERT's `dim` is everyone else's `hidden_size`).
pub fn int(cfg: &Value, keys: &[&str]) -> Result<i64, PluginError> {
    keys.iter()
        .find_map(|k| cfg[k].as_i64())
        .ok_or_else(|| PluginError::invalid_input(format!("config.json lacks {}", keys[0])))
}

/// A model's segment embeddings (`token_type_embeddings`), where it has them.
pub struct Segments(Option<Tensor>);

impl Segments {
    /// The segment embeddings of `table`, or none.
    pub fn new(table: Option<Tensor>) -> Segments {
        Segments(table)
    }

    /// The table `name` of `w` when it is there, else none.
    pub fn load(w: &Weights, name: &str) -> Result<Segments, PluginError> {
        Ok(Segments(match w.has(name) {
            true => Some(w.get(name)?),
            false => None,
        }))
    }

    /// Segments the model distinguishes; with one (or none), segment ids are not read.
    pub fn count(&self) -> i64 {
        self.0.as_ref().map_or(1, |t| t.size()[0])
    }

    /// `x` plus the embeddings of segment ids `types`; a table of one row (RoBERTa-family
    /// checkpoints) reads every token as segment 0.
    pub fn add(&self, x: Tensor, types: &Tensor) -> Result<Tensor, TchError> {
        let Some(table) = &self.0 else {
            return Ok(x);
        };
        let types = match self.count() {
            1 => types.f_zeros_like()?,
            _ => types.shallow_clone(),
        };
        x.f_add(&Tensor::f_embedding(table, &types, -1, false, false)?)
    }
}

/// A dense layer.
pub struct Linear {
    /// `[in, out]` on the CPU (see [`Linear::new`]), `[out, in]` as checkpoints store it
    /// elsewhere.
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// The layer of a checkpoint's `[out, in]` weight.
    ///
    /// On the CPU the weight is stored transposed, once: libtorch's `linear` multiplies by
    /// `weight.t()`, and MKL's products of few rows by a transposed operand are two to three
    /// times slower than by a contiguous one (30 rows by a 1536 × 384 weight on 2 cores: 53
    /// against 175 GFLOP/s), while from about a thousand rows on both run alike. A request of
    /// one short text is a product of few rows. GPU BLAS libraries run both layouts alike, so
    /// elsewhere the checkpoint's layout stays (and a large model never holds two copies of a
    /// weight on the GPU while it loads).
    fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Linear, TchError> {
        let weight = match weight.device() {
            Device::Cpu => weight.f_transpose(0, 1)?.f_contiguous()?,
            _ => weight,
        };
        Ok(Linear { weight, bias })
    }

    /// Whether the weight is stored `[in, out]` (on the CPU).
    fn transposed(&self) -> bool {
        self.weight.device() == Device::Cpu
    }

    /// Reads `{name}.weight` (taking it out of `w`) and `{name}.bias`.
    pub fn load(w: &Weights, name: &str) -> Result<Linear, PluginError> {
        let bias = format!("{name}.bias");
        let bias = if w.has(&bias) {
            Some(w.get(&bias)?)
        } else {
            None
        };
        Linear::new(w.take(&format!("{name}.weight"))?, bias)
            .map_err(|e| crate::error::from_tch(&format!("laying out {name}.weight"), e))
    }

    /// Outputs of the layer.
    fn outputs(&self) -> i64 {
        self.weight.size()[if self.transposed() { 1 } else { 0 }]
    }

    /// One layer computing `layers` side by side (their outputs concatenated in order), so
    /// that one matrix product does the work of several.
    pub fn fuse(layers: Vec<Linear>) -> Result<Linear, TchError> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        let bias = if layers.iter().any(|l| l.bias.is_some()) {
            let biases = layers
                .iter()
                .map(|l| match &l.bias {
                    Some(b) => Ok(b.shallow_clone()),
                    None => Tensor::f_zeros([l.outputs()], (l.weight.kind(), l.weight.device())),
                })
                .collect::<Result<Vec<_>, TchError>>()?;
            Some(Tensor::f_cat(&biases, 0)?)
        } else {
            None
        };
        // The layers of one model share a device, hence a layout: outputs are columns when
        // transposed, rows otherwise.
        let outputs_dim = match layers.first().is_some_and(Linear::transposed) {
            true => 1,
            false => 0,
        };
        Ok(Linear {
            weight: Tensor::f_cat(&weights, outputs_dim)?,
            bias,
        })
    }

    /// `x W^T + b`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        if !self.transposed() {
            return x.f_linear(&self.weight, self.bias.as_ref());
        }
        let mut shape = x.size();
        let Some(inputs) = shape.pop() else {
            return Err(TchError::Shape(
                "a linear layer's input has no dimension".into(),
            ));
        };
        let rows = x.f_reshape([-1, inputs])?;
        let out = match &self.bias {
            Some(b) => b.f_addmm(&rows, &self.weight)?,
            None => rows.f_mm(&self.weight)?,
        };
        shape.push(self.outputs());
        out.f_view(shape.as_slice())
    }
}

/// A layer norm.
pub struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
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
            bias: Some(w.get(&format!("{name}.{b}"))?),
            eps,
        })
    }

    /// Reads `{name}.weight`, and `{name}.bias` when the checkpoint has one (ModernBERT's
    /// norms have none).
    pub fn load_bias_optional(w: &Weights, name: &str, eps: f64) -> Result<Norm, PluginError> {
        let bias = format!("{name}.bias");
        Ok(Norm {
            weight: w.get(&format!("{name}.weight"))?,
            bias: if w.has(&bias) {
                Some(w.get(&bias)?)
            } else {
                None
            },
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let h = self.weight.size()[0];
        x.f_layer_norm([h], Some(&self.weight), self.bias.as_ref(), self.eps, true)
    }
}

/// An activation as transformers names it in a config (`hidden_act` and its kin).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// Exact (erf) GELU: `gelu`.
    Gelu,
    /// tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// The activation `name` of config key `key`, among those `allowed`.
    pub fn parse(key: &str, name: &str, allowed: &[Activation]) -> Result<Activation, PluginError> {
        let act = match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        };
        match act {
            Some(a) if allowed.contains(&a) => Ok(a),
            _ => {
                let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
                Err(PluginError::unsupported(format!(
                    "{key} {name:?} is not supported here ({} are)",
                    names.join(", ")
                )))
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        }
    }

    /// Applies the activation in place on a tensor the caller owns (saves a buffer the size
    /// of the feed-forward layer's output per layer).
    pub fn apply_owned(self, mut x: Tensor) -> Result<Tensor, TchError> {
        let _ = match self {
            Activation::Gelu => x.f_gelu_("none")?,
            Activation::GeluTanh => x.f_gelu_("tanh")?,
            Activation::Relu => x.f_relu_()?,
            Activation::Silu => x.f_silu_()?,
        };
        Ok(x)
    }

    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Activation::Gelu => x.f_gelu("none"),
            Activation::GeluTanh => x.f_gelu("tanh"),
            Activation::Relu => x.f_relu(),
            Activation::Silu => x.f_silu(),
        }
    }
}

/// Attention of `q`, `k`, `v` (`[rows, heads, seq, head_dim]`) under a boolean or additive
/// `mask` broadcastable to `[rows, heads, seq, seq]`, scaled by `scale` (1/sqrt(head_dim)
/// when `None`), as `[rows, seq, heads * head_dim]`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: Option<f64>,
) -> Result<Tensor, TchError> {
    let (rows, heads, seq, head_dim) = q.size4()?;
    Tensor::f_scaled_dot_product_attention(q, k, v, Some(mask), 0.0, false, scale, false)?
        .f_transpose(1, 2)?
        .f_reshape([rows, seq, heads * head_dim])
}
