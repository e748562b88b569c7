//! Rotary position embeddings as transformers computes them: inverse frequencies
//! `theta^(-2i/d)` in float32, angles duplicated over both halves of the head, applied with
//! `rotate_half`.

use ember_plugin_api::PluginError;
use tch::{Device, Kind, TchError, Tensor};

/// The rotary embedding of one head size and base.
pub struct Rotary {
    /// `[head_dim / 2]`, float32.
    inv_freq: Tensor,
    half: i64,
}

/// Cosine and sine tables for one sequence length, `[seq, head_dim]` in the model's kind.
pub struct Tables {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// The rotary embedding of heads of `head_dim` values with base `theta`, on `device`.
    pub fn new(head_dim: i64, theta: f64, device: Device) -> Result<Rotary, PluginError> {
        let inv_freq = tch::no_grad(|| -> Result<Tensor, TchError> {
            let exponents = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Float, device))?
                .f_div_scalar(head_dim as f64)?;
            Tensor::f_full([1], theta, (Kind::Float, device))?
                .f_pow(&exponents)?
                .f_reciprocal()
        })
        .map_err(|e| crate::error::from_tch("computing rotary frequencies", e))?;
        Ok(Rotary {
            inv_freq,
            half: head_dim / 2,
        })
    }

    /// The tables for positions `0..seq`, cast to `kind` as transformers does.
    pub fn tables(&self, seq: i64, kind: Kind) -> Result<Tables, TchError> {
        let positions = Tensor::f_arange(seq, (Kind::Float, self.inv_freq.device()))?;
        let freqs = positions
            .f_unsqueeze(1)?
            .f_mul(&self.inv_freq.f_unsqueeze(0)?)?;
        let angles = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        Ok(Tables {
            cos: angles.f_cos()?.f_to_kind(kind)?,
            sin: angles.f_sin()?.f_to_kind(kind)?,
        })
    }

    /// `x * cos + rotate_half(x) * sin` for `x` of `[rows, heads, seq, head_dim]`.
    pub fn apply(&self, x: &Tensor, t: &Tables) -> Result<Tensor, TchError> {
        let rotated = Tensor::f_cat(
            &[
                &x.f_narrow(-1, self.half, self.half)?.f_neg()?,
                &x.f_narrow(-1, 0, self.half)?,
            ],
            -1,
        )?;
        x.f_mul(&t.cos)?.f_add(&rotated.f_mul(&t.sin)?)
    }
}
