//! The forward calls the host makes: the liar test plugin in honest mode records the shape of
//! every call (`EMBER_LIAR_RECORD`), and these tests hold `BATCH_SIZES`, `MAX_BATCH_TOKENS`,
//! padding to the longest input and truncation against that record, and every answer against
//! the embedding computed independently from the same table.

use ember_e2e::liar::LiarModel;
use ember_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// One forward call as the plugin saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Call {
    rows: usize,
    seq: usize,
    /// Positions the attention mask keeps.
    kept: usize,
}

/// Reads the calls recorded since the last read (`seen` lines were read before).
fn calls_since(record: &Path, seen: &mut usize) -> Vec<Call> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let all: Vec<Call> = text
        .lines()
        .map(|l| {
            let n: Vec<usize> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            Call {
                rows: n[0],
                seq: n[1],
                kept: n[2],
            }
        })
        .collect();
    let new = all[*seen..].to_vec();
    *seen = all.len();
    new
}

/// `n` words from a fixed cycle, offset by `start` (`n + 2` tokens with [CLS] and [SEP]).
fn words(n: usize, start: usize) -> String {
    const W: [&str; 9] = [
        "the", "cat", "sat", "on", "a", "mat", "dog", "hello", "world",
    ];
    (0..n)
        .map(|i| W[(start + i * (start % 4 + 1)) % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Embeds `texts` in one request and checks each vector against its own text's expected
/// embedding (`expected` gives the words the model sees, after truncation).
fn embed_and_check(server: &Server, model: &LiarModel, texts: &[String], seen_as: &[String]) {
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": texts }));
    assert_eq!(status, 200, "{body}");
    let got = vectors(&body);
    assert_eq!(got.len(), texts.len());
    for (i, (v, words)) in got.iter().zip(seen_as).enumerate() {
        let c = cosine(v, &model.expected(words));
        assert!(
            c > 0.99999,
            "input {i} ({words:?}): cosine {c} to its own embedding"
        );
    }
}

fn record_path(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ember-record-{test}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn forward_calls_hold_batch_sizes_and_the_token_budget() {
    let model = LiarModel::create("batching", false);
    let record = record_path("batching");
    let dir = model.dir.display().to_string();
    let server = Server::start(&[
        ("BACKEND", "liar"),
        ("MODEL_NAMES", &dir),
        ("BATCH_SIZES", "4"),
        ("MAX_BATCH_TOKENS", "30"),
        ("EMBER_LIAR_RECORD", &record.display().to_string()),
    ]);
    let mut seen = 0;
    // The warm-up: one batch of BATCH_SIZES rows.
    let warm = calls_since(&record, &mut seen);
    assert_eq!(warm.len(), 1, "{warm:?}");
    assert_eq!(warm[0].rows, 4, "{warm:?}");

    // Ten texts of 4 tokens: calls of 4, 4 and 2 rows (16 tokens at most, within 30).
    let texts: Vec<String> = (0..10).map(|i| words(2, i)).collect();
    embed_and_check(&server, &model, &texts, &texts);
    let calls = calls_since(&record, &mut seen);
    let rows: Vec<usize> = calls.iter().map(|c| c.rows).collect();
    assert_eq!(rows, [4, 4, 2], "{calls:?}");
    assert!(calls.iter().all(|c| c.seq == 4 && c.kept == 4 * c.rows));

    // Seven texts of 12 tokens: two fit in 30 tokens, three do not.
    let texts: Vec<String> = (0..7).map(|i| words(10, i)).collect();
    embed_and_check(&server, &model, &texts, &texts);
    let calls = calls_since(&record, &mut seen);
    let rows: Vec<usize> = calls.iter().map(|c| c.rows).collect();
    assert_eq!(rows, [2, 2, 2, 1], "{calls:?}");
    assert!(calls.iter().all(|c| c.seq == 12), "{calls:?}");

    // Mixed lengths: batched shortest first, each call padded to its longest input only;
    // the 50-word text is cut at the model's 32 tokens and, over the budget alone, runs alone.
    let lengths = [2, 10, 2, 18, 2, 50];
    let texts: Vec<String> = lengths
        .iter()
        .enumerate()
        .map(|(i, n)| words(*n, i))
        .collect();
    let seen_as: Vec<String> = lengths
        .iter()
        .enumerate()
        .map(|(i, n)| words((*n).min(30), i))
        .collect();
    embed_and_check(&server, &model, &texts, &seen_as);
    let calls = calls_since(&record, &mut seen);
    let want = [(3, 4, 12), (1, 12, 12), (1, 20, 20), (1, 32, 32)];
    let got: Vec<(usize, usize, usize)> = calls.iter().map(|c| (c.rows, c.seq, c.kept)).collect();
    assert_eq!(got, want, "{calls:?}");
    drop(server);
    let _ = std::fs::remove_file(&record);
}
