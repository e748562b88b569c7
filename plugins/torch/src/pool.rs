//! Pooling of token states into one vector per row, on the model's device.

use ember_plugin_api::Pooling;
use tch::{Kind, TchError, Tensor};

/// Pools token states `[rows, seq, hidden]` under `mask` on their device. Sums and lengths
/// are float32 whatever the states' precision: a float16 sum over a long input overflows
/// to infinity, and bfloat16 counts no further than 256 exactly.
pub fn pool(mode: Pooling, states: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
    let kind = states.kind();
    let live = mask.f_ne(0)?;
    // 0 or 1: exact in every precision.
    let m = live.f_unsqueeze(-1)?.f_to_kind(kind)?;
    let lengths = || m.f_sum_dim_intlist(1, false, Kind::Float)?.f_clamp_min(1.0);
    let sum = || states.f_mul(&m)?.f_sum_dim_intlist(1, false, Kind::Float);
    // Rows that pool no token (possible only under a pooling mask) give zeros.
    let any = || live.f_any_dim(1, true);
    let rows = || Tensor::f_arange(states.size()[0], (Kind::Int64, states.device()));
    match mode {
        Pooling::Cls => {
            // The first pooled position (argmax returns the first of equal maxima).
            let first = live.f_to_kind(Kind::Int64)?.f_argmax(1, false)?;
            states.f_index(&[Some(rows()?), Some(first)])
        }
        Pooling::Mean => sum()?.f_div(&lengths()?),
        Pooling::MeanSqrtLen => sum()?.f_div(&lengths()?.f_sqrt()?),
        Pooling::Max => states
            .f_masked_fill(&m.f_eq(0.0)?, f64::NEG_INFINITY)?
            .f_amax(1, false)?
            .f_where_self(&any()?, &states.f_zeros_like()?.f_select(1, 0)?),
        Pooling::LastToken => {
            // The last pooled position: the largest (position + 1) among pooled ones, less 1.
            let seq = states.size()[1];
            let positions = Tensor::f_arange_start(1, seq + 1, (Kind::Int64, states.device()))?;
            let last = live
                .f_to_kind(Kind::Int64)?
                .f_mul(&positions)?
                .f_amax(1, false)?
                .f_sub_scalar(1)?
                .f_clamp_min(0)?;
            states
                .f_index(&[Some(rows()?), Some(last)])?
                .f_mul(&any()?.f_to_kind(kind)?)
        }
    }
}
