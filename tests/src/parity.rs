//! Comparing what ember answers with the reference outputs of the fixtures: vectors, cosines,
//! token counts and rerank scores.

use crate::{reference, Server};
use base64::Engine as _;
use serde_json::Value;

/// The float vectors of an embeddings response, in `index` order.
pub fn vectors(body: &Value) -> Vec<Vec<f32>> {
    let mut data: Vec<&Value> = body["data"].as_array().expect("data list").iter().collect();
    data.sort_by_key(|d| d["index"].as_u64().unwrap());
    data.iter()
        .map(|d| match &d["embedding"] {
            Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            Value::String(s) => decode_base64(s),
            other => panic!("unexpected embedding {other}"),
        })
        .collect()
}

/// Decodes a base64 little-endian float32 vector.
pub fn decode_base64(s: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Euclidean norm.
pub fn norm(a: &[f32]) -> f64 {
    a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// A JSON list of vectors (a reference output, or a TEI or Cohere answer) as floats.
pub fn matrix(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// Asserts that `got` has as many vectors as `want`, of the same lengths, each with a cosine
/// of at least `min_cosine` to its counterpart.
pub fn assert_parity(got: &[Vec<f32>], want: &[Vec<f32>], min_cosine: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of vectors");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: item {i}: length");
        let c = cosine(g, w);
        assert!(
            c >= min_cosine,
            "{what}: item {i}: cosine {c} < {min_cosine}"
        );
    }
}

/// The server's embeddings of the reference's `texts`, in order.
pub fn embed_texts(server: &Server, reference: &Value) -> Vec<Vec<f32>> {
    let body = serde_json::json!({"input": reference["texts"]});
    let (status, body) = server.post("/v1/embeddings", &body);
    assert_eq!(status, 200, "{body}");
    vectors(&body)
}

/// Embeds the reference's `texts` with `server` and asserts [`assert_parity`] with the
/// reference's `key` vectors.
pub fn assert_texts_match(
    server: &Server,
    reference: &Value,
    key: &str,
    min_cosine: f64,
    what: &str,
) {
    let got = embed_texts(server, reference);
    assert_parity(&got, &matrix(&reference[key]), min_cosine, what);
}

/// [`assert_parity`] at float32 precision: every cosine at least 0.9999.
pub fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_parity(got, want, 0.9999, what);
}

/// Asserts that every vector has unit length.
pub fn assert_unit(got: &[Vec<f32>], what: &str) {
    for (i, g) in got.iter().enumerate() {
        let n = norm(g);
        assert!(
            (n - 1.0).abs() < 1e-4,
            "{what}: item {i}: norm {n}, not unit length"
        );
    }
}

/// The reference's tokens over all its texts (`token_counts` summed).
pub fn reference_tokens(reference: &Value) -> u64 {
    reference["token_counts"]
        .as_array()
        .expect("token_counts list")
        .iter()
        .map(|t| t.as_u64().expect("a token count"))
        .sum()
}

/// Checks that `server` (serving the reranker fixture `model`) scores both reference cases
/// within `tolerance` of transformers.
pub fn assert_rerank_matches_reference(server: &Server, model: &str, tolerance: f64) {
    let reference = reference(model);
    for case in ["short", "long_query"] {
        let c = &reference[case];
        let (status, body) = server.post(
            "/v1/rerank",
            &serde_json::json!({"query": c["query"], "documents": c["documents"]}),
        );
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().unwrap();
        let documents = c["documents"].as_array().unwrap().len();
        // Every document exactly once, best first.
        let mut seen: Vec<usize> = results
            .iter()
            .map(|r| r["index"].as_u64().unwrap() as usize)
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..documents).collect::<Vec<_>>(),
            "{model} {case}: {body}"
        );
        let scores: Vec<f64> = results
            .iter()
            .map(|r| r["relevance_score"].as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{model} {case}: not sorted best first: {scores:?}"
        );
        for r in results {
            let i = r["index"].as_u64().unwrap() as usize;
            let want = c["scores"][i].as_f64().unwrap();
            let got = r["relevance_score"].as_f64().unwrap();
            assert!(
                (got - want).abs() < tolerance,
                "{model} {case} {i}: {got} vs {want}"
            );
        }
    }
}
