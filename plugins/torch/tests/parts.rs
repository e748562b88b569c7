//! Calls on the CPU cut into parts that run at once (src/parts.rs): how a call is cut, and that
//! a call cut into parts answers every row as that row's call alone does, for every kind of
//! call.

mod common;

use common::{load_model, tokens};
use ember_plugin_api::parts::rows;
use ember_plugin_api::{ModelKind, PairBatch, PixelBatch, Pooling, SparseReduction, TokenBatch};
use ember_torch::parts::plan;

#[test]
fn a_call_is_cut_into_parts_of_even_tokens_or_kept_whole() {
    assert_eq!(plan(&[10, 10, 10, 10], 2), vec![0..2, 2..4]);
    assert_eq!(plan(&[10, 12], 2), vec![0..1, 1..2]);
    assert_eq!(plan(&[1; 6], 3), vec![0..2, 2..4, 4..6]);
    // Three threads, but two rows: two parts.
    assert_eq!(plan(&[8, 9], 3), vec![0..1, 1..2]);
    // Too uneven for two parts (the largest would hold 2/3 of the tokens): whole.
    assert_eq!(plan(&[5, 5, 5, 5, 40], 2), vec![0..5]);
    assert_eq!(plan(&[10, 20], 2), vec![0..2]);
    // Too uneven for three, even enough for two.
    assert_eq!(plan(&[10, 10, 20], 3), vec![0..2, 2..3]);
    assert_eq!(plan(&[30], 2), vec![0..1]);
    assert_eq!(plan(&[10, 10, 10], 1), vec![0..3]);
}

#[test]
fn a_part_keeps_the_positions_its_rows_attend_or_pool() {
    let batch = tokens(12, &[12, 5, 9]);
    let part = rows(&batch, 1..3);
    assert_eq!((part.rows, part.seq_len), (2, 9));
    for (r, row) in [1usize, 2].into_iter().enumerate() {
        let (from, to) = (row * 12, r * 9);
        assert_eq!(part.input_ids[to..to + 9], batch.input_ids[from..from + 9]);
        assert_eq!(
            part.attention_mask[to..to + 9],
            batch.attention_mask[from..from + 9]
        );
    }
    assert!(part.pooling_mask.is_empty());
    // The whole call is the batch itself.
    assert_eq!(*rows(&batch, 0..3), batch);
    // A pooling mask that keeps a position past the attended ones keeps it in the part.
    let mut pooled = batch.clone();
    pooled.pooling_mask = batch.attention_mask.clone();
    pooled.pooling_mask[12 + 10] = 1;
    let part = rows(&pooled, 1..2);
    assert_eq!((part.rows, part.seq_len), (1, 11));
    assert_eq!(part.pooling_mask[10], 1);
}

/// A batch of rows of several lengths that two threads cut into two parts.
fn mixed() -> TokenBatch {
    let batch = tokens(16, &[4, 6, 9, 11, 14, 16]);
    assert_eq!(plan(&batch.row_lengths(), 2).len(), 2, "the batch is cut");
    batch
}

/// Asserts the values of a whole call equal those of its rows' calls alone, one after another.
fn assert_rows(what: &str, whole: &[f32], alone: &[Vec<f32>]) {
    let joined: Vec<f32> = alone.concat();
    assert_eq!(whole.len(), joined.len(), "{what}: values");
    for (i, (a, b)) in whole.iter().zip(&joined).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4,
            "{what}: value {i}: {a} in parts, {b} alone"
        );
    }
}

/// The names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn embeddings_and_token_states_in_parts_equal_each_row_alone() {
    let model = load_model("tiny-bert-cls", ModelKind::Embed, Pooling::Mean, "", 2);
    let batch = mixed();
    let one = |r: usize| rows(&batch, r..r + 1).into_owned();
    let whole = model.embed_tokens(&batch).unwrap();
    let alone: Vec<Vec<f32>> = (0..6)
        .map(|r| model.embed_tokens(&one(r)).unwrap().values.to_vec())
        .collect();
    assert_rows("embeddings", &whole.values, &alone);
    let parts = threads()
        .iter()
        .filter(|t| t.starts_with("ember-torch-par"))
        .count();
    // One pool of two for every model of the process.
    assert_eq!(parts, 2, "two part threads: {:?}", threads());

    let whole = model.token_states(&batch).unwrap();
    assert_eq!(whole.offsets.to_vec(), vec![0, 4, 10, 19, 30, 44, 60]);
    let alone: Vec<Vec<f32>> = (0..6)
        .map(|r| model.token_states(&one(r)).unwrap().values.to_vec())
        .collect();
    assert_rows("token states", &whole.values, &alone);
}

#[test]
fn scores_and_sparse_weights_in_parts_equal_each_row_alone() {
    let batch = mixed();
    let one = |r: usize| rows(&batch, r..r + 1).into_owned();
    let reranker = load_model(
        "tiny-rerank-bert",
        ModelKind::Rerank,
        Pooling::Cls,
        "BertForSequenceClassification",
        2,
    );
    let pairs = |tokens: TokenBatch| PairBatch { tokens };
    let whole = reranker.score_pairs(&pairs(batch.clone())).unwrap();
    let alone: Vec<Vec<f32>> = (0..6)
        .map(|r| {
            reranker
                .score_pairs(&pairs(one(r)))
                .unwrap()
                .scores
                .to_vec()
        })
        .collect();
    assert_rows("scores", &whole.scores, &alone);

    let splade = load_model(
        "tiny-splade",
        ModelKind::Embed,
        Pooling::Cls,
        "BertForMaskedLM",
        2,
    );
    let max = SparseReduction {
        sum: false,
        log1p_twice: false,
    };
    let whole = splade.sparse(&batch, max).unwrap();
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for r in 0..6 {
        let row = splade.sparse(&one(r), max).unwrap();
        indices.extend(row.indices.to_vec());
        values.push(row.values.to_vec());
    }
    assert_eq!(whole.indices.to_vec(), indices, "sparse ids");
    assert_rows("sparse weights", &whole.values, &values);
}

#[test]
fn images_in_parts_equal_each_image_alone() {
    let clip = load_model("tiny-clip", ModelKind::Clip, Pooling::Cls, "", 2);
    let size = 3 * 32 * 32;
    let values: Vec<f32> = (0..4 * size)
        .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
        .collect();
    let batch = |from: usize, to: usize| PixelBatch {
        rows: (to - from) as u32,
        channels: 3,
        height: 32,
        width: 32,
        values: values[from * size..to * size].to_vec().into(),
    };
    let whole = clip.embed_pixels(&batch(0, 4)).unwrap();
    let alone: Vec<Vec<f32>> = (0..4)
        .map(|r| clip.embed_pixels(&batch(r, r + 1)).unwrap().values.to_vec())
        .collect();
    assert_rows("image embeddings", &whole.values, &alone);
}
