//! Pooling of token states into one vector per row, as sentence-transformers' `Pooling` does:
//! a CPU reference for plugins whose runtime returns token states.

use crate::Pooling;

/// Pools `states` (`[rows, seq, hidden]`, row-major) under `mask` (`[rows, seq]`, the batch's
/// [`TokenBatch::pooling_mask`](crate::TokenBatch::pooling_mask)). A row with no pooled token
/// gives the state at position 0 (`Cls`) or zeros, as sentence-transformers does (its `max`
/// gives -inf there; zeros keep the vector finite).
pub fn pool(
    mode: Pooling,
    states: &[f32],
    mask: &[i64],
    rows: usize,
    seq: usize,
    hidden: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * hidden];
    for r in 0..rows {
        let dst = &mut out[r * hidden..(r + 1) * hidden];
        let token = |t: usize| &states[(r * seq + t) * hidden..(r * seq + t + 1) * hidden];
        let live: Vec<usize> = (0..seq).filter(|&t| mask[r * seq + t] != 0).collect();
        match mode {
            Pooling::Cls => dst.copy_from_slice(token(live.first().copied().unwrap_or(0))),
            Pooling::LastToken => {
                if let Some(&t) = live.last() {
                    dst.copy_from_slice(token(t))
                }
            }
            Pooling::Max => {
                dst.fill(f32::NEG_INFINITY);
                for &t in &live {
                    for (d, v) in dst.iter_mut().zip(token(t)) {
                        *d = d.max(*v);
                    }
                }
                if live.is_empty() {
                    dst.fill(0.0);
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                for &t in &live {
                    for (d, v) in dst.iter_mut().zip(token(t)) {
                        *d += *v;
                    }
                }
                // sentence-transformers clamps the token count to at least 1e-9.
                let n = (live.len() as f32).max(1e-9);
                let div = if mode == Pooling::Mean { n } else { n.sqrt() };
                dst.iter_mut().for_each(|d| *d /= div);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two rows, three positions, hidden 2; row 1 has one padding position.
    const STATES: [f32; 12] = [1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 99., 99.];
    const MASK: [i64; 6] = [1, 1, 1, 1, 1, 0];

    #[test]
    fn mean_ignores_padding() {
        let v = pool(Pooling::Mean, &STATES, &MASK, 2, 3, 2);
        assert_eq!(v, vec![3., 4., 20., 30.]);
    }

    #[test]
    fn cls_takes_first_and_lasttoken_takes_last_unpadded() {
        assert_eq!(
            pool(Pooling::Cls, &STATES, &MASK, 2, 3, 2),
            vec![1., 2., 10., 20.]
        );
        assert_eq!(
            pool(Pooling::LastToken, &STATES, &MASK, 2, 3, 2),
            vec![5., 6., 30., 40.]
        );
    }

    #[test]
    fn max_and_mean_sqrt_len() {
        assert_eq!(
            pool(Pooling::Max, &STATES, &MASK, 2, 3, 2),
            vec![5., 6., 30., 40.]
        );
        let v = pool(Pooling::MeanSqrtLen, &STATES, &MASK, 2, 3, 2);
        assert!((v[0] - 9.0 / 3f32.sqrt()).abs() < 1e-6);
        assert!((v[2] - 40.0 / 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn a_pooling_mask_without_the_prompt_moves_every_mode() {
        // Row 0 leaves its first token (a prompt) out; row 1 pools nothing.
        let mask = [0, 1, 1, 0, 0, 0];
        assert_eq!(
            pool(Pooling::Cls, &STATES, &mask, 2, 3, 2),
            vec![3., 4., 10., 20.]
        );
        assert_eq!(
            pool(Pooling::Mean, &STATES, &mask, 2, 3, 2),
            vec![4., 5., 0., 0.]
        );
        assert_eq!(
            pool(Pooling::Max, &STATES, &mask, 2, 3, 2),
            vec![5., 6., 0., 0.]
        );
        assert_eq!(
            pool(Pooling::LastToken, &STATES, &mask, 2, 3, 2),
            vec![5., 6., 0., 0.]
        );
    }
}
