//! Pooling of half-precision states: sums and lengths in float32, so long inputs neither
//! overflow (float16) nor miscount (bfloat16).

use ember_plugin_api::Pooling;
use ember_torch::pool::pool;
use tch::{Kind, Tensor};

/// One row of `seq` tokens whose states are all `value`, in `kind`, with `live` tokens unmasked.
fn states(kind: Kind, seq: i64, hidden: i64, value: f64, live: i64) -> (Tensor, Tensor) {
    let states = Tensor::full([1, seq, hidden], value, (kind, tch::Device::Cpu));
    let mask = Tensor::cat(
        &[
            Tensor::ones([1, live], (Kind::Int64, tch::Device::Cpu)),
            Tensor::zeros([1, seq - live], (Kind::Int64, tch::Device::Cpu)),
        ],
        1,
    );
    (states, mask)
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).view(-1)).unwrap()
}

#[test]
fn a_long_float16_input_is_mean_pooled_without_overflow() {
    // 4,096 tokens of 32.0: the float16 sum (131,072) is past float16's largest value, 65,504.
    let (s, mask) = states(Kind::Half, 4096, 4, 32.0, 4096);
    let overflowing = s.sum_dim_intlist(1, false, Kind::Half);
    assert!(
        values(&overflowing).iter().all(|v| v.is_infinite()),
        "the case overflows in fp16"
    );
    for (mode, expected) in [(Pooling::Mean, 32.0), (Pooling::MeanSqrtLen, 32.0 * 64.0)] {
        let pooled = values(&pool(mode, &s, &mask).unwrap());
        assert_eq!(pooled, vec![expected; 4], "{mode:?}");
    }
}

#[test]
fn bfloat16_lengths_past_256_count_exactly() {
    // 257 live tokens of 1.0 among 300: bfloat16 holds 256 and 258, not 257.
    let (s, mask) = states(Kind::BFloat16, 300, 2, 1.0, 257);
    let pooled = values(&pool(Pooling::Mean, &s, &mask).unwrap());
    assert_eq!(pooled, vec![1.0, 1.0]);
    let root = values(&pool(Pooling::MeanSqrtLen, &s, &mask).unwrap());
    let expected = 257f32 / 257f32.sqrt();
    assert!(root.iter().all(|v| (v - expected).abs() < 1e-4), "{root:?}");
}
