//! Forward calls on fixture models through the SDK's guarded handle (as the host calls them):
//! a failing call answers an error of the right class, and leaves the model working.

mod common;

use common::{load, tokens};
use ember_plugin_api::{ErrorCode, ModelKind, PairBatch, PixelBatch, Pooling};

/// A CLIP pixel batch of `rows` images of `size`×`size`, values depending on the image.
fn pixels(rows: u32, size: u32) -> PixelBatch {
    let n = (rows * 3 * size * size) as usize;
    PixelBatch {
        rows,
        channels: 3,
        height: size,
        width: size,
        values: (0..n)
            .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
            .collect::<Vec<_>>()
            .into(),
    }
}

#[test]
fn a_libtorch_error_in_a_forward_call_leaves_the_model_usable() {
    let clip = load("tiny-clip", ModelKind::Clip, Pooling::Cls);
    // tiny-clip takes 32x32 images in 8x8 patches (16 patches and a class token).
    let dim = clip.describe().embedding_dim;
    let before = clip.embed_pixels(&pixels(2, 32)).into_result().unwrap();
    assert_eq!((before.rows, before.dim), (2, dim));
    assert!(before.values.iter().all(|v| v.is_finite()));
    // 40x40 images make 25 patches, which libtorch refuses to add to 17 positions: an error
    // inside the forward call, while the model is locked.
    let e = clip.embed_pixels(&pixels(2, 40)).into_result().unwrap_err();
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.message);
    assert!(e.message.starts_with("embedding images: "), "{}", e.message);
    assert!(e.message.contains("must match"), "{}", e.message);
    assert!(!e.message.contains("panicked"), "{}", e.message);
    let after = clip.embed_pixels(&pixels(2, 32)).into_result().unwrap();
    assert_eq!(after, before);
    let text = clip
        .embed_tokens(&tokens(8, &[8, 5]))
        .into_result()
        .unwrap();
    assert_eq!((text.rows, text.dim), (2, dim));
    assert!(text.values.iter().all(|v| v.is_finite()));
}

#[test]
fn ids_outside_the_tables_are_invalid_input() {
    let model = load("tiny-bert-cls", ModelKind::Embed, Pooling::Cls);
    let good = tokens(8, &[8, 4]);
    let before = model.embed_tokens(&good).into_result().unwrap();
    for (id, ty) in [(30522, 0), (-1, 0), (1000, 2), (1000, -1)] {
        let mut bad = good.clone();
        bad.input_ids[9] = id;
        bad.token_type_ids[9] = ty;
        let e = model.embed_tokens(&bad).into_result().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput, "{}", e.message);
        let what = if ty == 0 { "token id" } else { "segment id" };
        assert!(e.message.contains(what), "{}", e.message);
    }
    let too_long = tokens(65, &[65]);
    let e = model.embed_tokens(&too_long).into_result().unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidInput, "{}", e.message);
    assert_eq!(model.embed_tokens(&good).into_result().unwrap(), before);
}

#[test]
fn every_pooling_ignores_padding() {
    for pooling in [
        Pooling::Cls,
        Pooling::Mean,
        Pooling::Max,
        Pooling::MeanSqrtLen,
        Pooling::LastToken,
    ] {
        let model = load("tiny-bert-cls", ModelKind::Embed, pooling);
        let padded = model
            .embed_tokens(&tokens(12, &[12, 5, 9]))
            .into_result()
            .unwrap();
        assert_eq!((padded.rows, padded.dim), (3, 32), "{pooling:?}");
        for (row, len) in [(1, 5), (2, 9)] {
            let mut alone = tokens(len, &[len]);
            // The same ids as row `row` of the padded batch.
            let padded_ids = tokens(12, &[12, 5, 9]).input_ids;
            for p in 0..len as usize {
                alone.input_ids[p] = padded_ids[row * 12 + p];
            }
            let alone = model.embed_tokens(&alone).into_result().unwrap();
            let got = &padded.values[row * 32..(row + 1) * 32];
            for (a, b) in got.iter().zip(alone.values.iter()) {
                assert!((a - b).abs() < 1e-4, "{pooling:?}, row {row}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn rerankers_score_every_pair() {
    for name in ["tiny-rerank-bert", "tiny-rerank-xlmr"] {
        let model = load(name, ModelKind::Rerank, Pooling::Cls);
        let mut pairs = PairBatch {
            tokens: tokens(10, &[10, 6, 8]),
        };
        if name == "tiny-rerank-bert" {
            for r in 0..3 {
                for p in 5..10 {
                    pairs.tokens.token_type_ids[r * 10 + p] = 1;
                }
            }
        }
        let scores = model.score_pairs(&pairs).into_result().unwrap().scores;
        assert_eq!(scores.len(), 3, "{name}");
        assert!(scores.iter().all(|s| s.is_finite()), "{name}: {scores:?}");
        let e = model.embed_tokens(&pairs.tokens).into_result().unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported, "{name}");
        let again = model.score_pairs(&pairs).into_result().unwrap().scores;
        assert_eq!(again, scores, "{name}");
    }
}
