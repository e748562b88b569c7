//! Several outputs of one text from one request (`outputs` on `/v1/embeddings`): bge-m3's
//! dense, sparse and ColBERT outputs equal FlagEmbedding's formulas on torch and optimum, over
//! HTTP, TEI's `/embed_sparse` and RunPod jobs, in float and base64; a SPLADE model answers
//! its sparse weights on `/v1/embeddings` too; what a model lacks is refused by name.

use base64::Engine as _;
use ember_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected numbers, got {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A sparse vector as id → weight.
fn entries(indices: &[u64], values: &[f64]) -> BTreeMap<u64, f64> {
    indices
        .iter()
        .copied()
        .zip(values.iter().copied())
        .collect()
}

/// Every entry of either side within 1e-4 of the other's (missing counts as 0: a weight
/// within rounding of 0 may land on either side).
fn assert_sparse(got: &BTreeMap<u64, f64>, want: &Value, label: &str) {
    let ids: Vec<u64> = want["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    let want = entries(&ids, &floats(&want["values"]));
    let worst = got
        .keys()
        .chain(want.keys())
        .map(|id| (got.get(id).unwrap_or(&0.0) - want.get(id).unwrap_or(&0.0)).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "{label}: a weight differs by {worst}");
    assert!(
        got.len().abs_diff(want.len()) <= 1,
        "{label}: {} entries against {}",
        got.len(),
        want.len()
    );
}

fn sparse_of(v: &Value) -> BTreeMap<u64, f64> {
    let ids: Vec<u64> = v["indices"]
        .as_array()
        .unwrap_or_else(|| panic!("no indices in {v}"))
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    entries(&ids, &floats(&v["values"]))
}

fn decode(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(
            s.as_str()
                .unwrap_or_else(|| panic!("expected base64, got {s}")),
        )
        .unwrap()
}

/// Checks every output of every text in an embeddings answer against the reference.
fn assert_all_outputs(data: &Value, reference: &Value, label: &str) {
    for (i, d) in data.as_array().unwrap().iter().enumerate() {
        let dense = max_diff(
            &floats(&d["embedding"]),
            &floats(&reference["embeddings"][i]),
        );
        assert!(dense < 1e-4, "{label}: text {i}: dense differs by {dense}");
        assert_sparse(
            &sparse_of(&d["sparse_embedding"]),
            &reference["sparse"][i],
            &format!("{label}: text {i}"),
        );
        let got: Vec<f64> = d["multi_vector_embedding"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        let want: Vec<f64> = reference["colbert"][i]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        let d = max_diff(&got, &want);
        assert!(
            d < 1e-4,
            "{label}: text {i}: a ColBERT value differs by {d}"
        );
    }
}

#[test]
fn bge_m3_answers_dense_sparse_and_colbert_from_one_request() {
    for backend in ["torch", "optimum"] {
        let server = serve_fixtures(backend, &["tiny-bge-m3"], &[]);
        let reference = reference("tiny-bge-m3");
        let texts = &reference["texts"];
        let (_, models) = server.get("/v1/models");
        assert_eq!(
            models["data"][0]["capabilities"],
            json!(["embed", "sparse", "multi_vector", "token_states"]),
            "{backend}: {models}"
        );
        // Without outputs: the dense embeddings, as before.
        let (status, body) = server.post("/v1/embeddings", &json!({"input": texts}));
        assert_eq!(status, 200, "{body}");
        for (i, d) in body["data"].as_array().unwrap().iter().enumerate() {
            assert!(d.get("sparse_embedding").is_none(), "{d}");
            let diff = max_diff(
                &floats(&d["embedding"]),
                &floats(&reference["embeddings"][i]),
            );
            assert!(diff < 1e-4, "{backend}: dense {i} differs by {diff}");
        }
        // All three at once.
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"input": texts, "outputs": ["dense", "sparse", "multi_vector"],
                    "return_tokens": true}),
        );
        assert_eq!(status, 200, "{body}");
        assert_all_outputs(&body["data"], &reference, backend);
        let tokens: usize = reference["token_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .sum();
        assert_eq!(body["usage"]["prompt_tokens"], tokens, "one pass's tokens");
        for (i, d) in body["data"].as_array().unwrap().iter().enumerate() {
            let want = &reference["sparse"][i];
            if sparse_of(&d["sparse_embedding"]).len() == want["indices"].as_array().unwrap().len()
            {
                assert_eq!(d["sparse_embedding"]["tokens"], want["tokens"], "text {i}");
            }
        }
        if backend == "optimum" {
            continue;
        }
        // Sparse alone, in base64: little-endian uint32 ids and float32 weights.
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"input": texts[1], "outputs": ["sparse"], "encoding_format": "base64"}),
        );
        assert_eq!(status, 200, "{body}");
        let d = &body["data"][0];
        assert!(d.get("embedding").is_none(), "{d}");
        let ids: Vec<u64> = decode(&d["sparse_embedding"]["indices"])
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as u64)
            .collect();
        let weights: Vec<f64> = decode(&d["sparse_embedding"]["values"])
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect();
        assert_sparse(&entries(&ids, &weights), &reference["sparse"][1], "base64");
        // TEI's /embed_sparse answers the lexical weights in its shape.
        let (status, body) = server.post("/embed_sparse", &json!({"inputs": texts}));
        assert_eq!(status, 200, "{body}");
        for (i, row) in body.as_array().unwrap().iter().enumerate() {
            let got: BTreeMap<u64, f64> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["index"].as_u64().unwrap(), e["value"].as_f64().unwrap()))
                .collect();
            assert_sparse(&got, &reference["sparse"][i], &format!("/embed_sparse {i}"));
        }
        // A RunPod job asks the same way.
        let (status, body) = server.post(
            "/runsync",
            &json!({"input": {"input": texts, "outputs": ["dense", "sparse", "colbert"]}}),
        );
        assert_eq!(status, 200, "{body}");
        assert_all_outputs(&body["output"]["data"], &reference, "RunPod");
        // What is not an output, or not this model's, is refused naming the field.
        for body in [
            json!({"input": "a", "outputs": ["dense", "logits"]}),
            json!({"input": "a", "outputs": []}),
            json!({"input": "a", "outputs": "sparse"}),
            json!({"input": "a", "outputs": ["sparse"], "encoding_format": "int8"}),
            json!({"input": "a", "outputs": ["sparse"], "dimensions": 8}),
        ] {
            let (status, got) = server.post("/v1/embeddings", &body);
            assert_eq!(status, 400, "{body}: {got}");
            let param = got["error"]["param"].as_str().unwrap();
            assert!(
                ["outputs", "encoding_format", "dimensions"].contains(&param),
                "{got}"
            );
        }
    }
}

#[test]
fn splade_answers_sparse_on_v1_embeddings_and_dense_models_refuse_what_they_lack() {
    let server = serve_fixtures("torch", &["tiny-splade", "all-MiniLM-L6-v2"], &[]);
    let splade = fixture_id("tiny-splade");
    let reference = reference("tiny-splade");
    let texts = &reference["texts"];
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"model": splade, "input": texts, "return_tokens": true}),
    );
    assert_eq!(status, 200, "{body}");
    for (i, d) in body["data"].as_array().unwrap().iter().enumerate() {
        assert!(d.get("embedding").is_none(), "{d}");
        assert_sparse(
            &sparse_of(&d["sparse_embedding"]),
            &reference["sparse"][i],
            &format!("SPLADE {i}"),
        );
        let n = d["sparse_embedding"]["indices"].as_array().unwrap().len();
        assert_eq!(
            d["sparse_embedding"]["tokens"].as_array().unwrap().len(),
            n,
            "one token text per entry"
        );
    }
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"model": splade, "input": "a", "outputs": ["dense"]}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "outputs", "{body}");
    let minilm = fixture_id("all-MiniLM-L6-v2");
    for output in ["sparse", "multi_vector"] {
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"model": minilm, "input": "a", "outputs": [output]}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("'{output}' capability")),
            "{body}"
        );
    }
}

/// The id a fixture is served under.
fn fixture_id(name: &str) -> String {
    fixture(name).display().to_string()
}
