//! SPLADE models (a masked-language model behind sentence-transformers' `SpladePooling`) over
//! TEI's `/embed_sparse`: the torch backend's weights equal `SparseEncoder.encode`'s, and what
//! cannot serve them says so.

use ember_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A sparse vector as id → weight.
fn entries(indices: &Value, values: &Value) -> BTreeMap<u64, f64> {
    let ids = indices
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap());
    let weights = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap());
    ids.zip(weights).collect()
}

/// Checks an `/embed_sparse` answer against the reference's vectors: ids ascending, every
/// entry of either side within 1e-4 of the other's (an entry missing on one side counts as 0
/// there: a logit within rounding of 0 may land on either side).
fn assert_sparse_rows(body: &Value, reference: &Value, label: &str) {
    let got = body.as_array().unwrap();
    assert_eq!(got.len(), reference["texts"].as_array().unwrap().len());
    for (i, (row, want)) in got
        .iter()
        .zip(reference["sparse"].as_array().unwrap())
        .enumerate()
    {
        let row = row.as_array().unwrap();
        let ids: Vec<Value> = row.iter().map(|e| e["index"].clone()).collect();
        let weights: Vec<Value> = row.iter().map(|e| e["value"].clone()).collect();
        assert!(
            ids.windows(2).all(|w| w[0].as_u64() < w[1].as_u64()),
            "{label} text {i}: ids ascend"
        );
        let got = entries(&json!(ids), &json!(weights));
        let want = entries(&want["indices"], &want["values"]);
        let worst = got
            .keys()
            .chain(want.keys())
            .map(|id| (got.get(id).unwrap_or(&0.0) - want.get(id).unwrap_or(&0.0)).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "{label} text {i}: an entry differs by {worst}"
        );
        assert!(
            got.len().abs_diff(want.len()) <= 1 && !want.is_empty(),
            "{label} text {i}: {} entries against {}",
            got.len(),
            want.len()
        );
    }
}

/// The SPLADE fixtures: BERT, DistilBERT, XLM-RoBERTa and MPNet masked-language heads (the
/// XLM-RoBERTa one summing over tokens rather than taking the max).
const SPLADE: [&str; 4] = [
    "tiny-splade",
    "tiny-splade-distilbert",
    "tiny-splade-xlmr",
    "tiny-splade-mpnet",
];

/// Asserts that `backend` serves each of `names` with the weights of its `SparseEncoder`
/// reference on TEI's `/embed_sparse`.
fn assert_serves(backend: &str, names: &[&str]) {
    for name in names {
        let server = serve_fixtures(backend, &[name], &[]);
        let reference = reference(name);
        let (status, body) = server.post("/embed_sparse", &json!({"inputs": reference["texts"]}));
        assert_eq!(status, 200, "{backend} {name}: {body}");
        assert_sparse_rows(&body, &reference, &format!("{backend} {name}"));
    }
}

#[test]
fn optimum_splade_weights_equal_sparse_encoders() {
    // A masked-language export's logits, reduced in the plugin.
    assert_serves("optimum", &SPLADE);
}

#[test]
fn torch_reads_the_masked_language_head_of_each_encoder_family() {
    // tiny-splade (BERT) has a test of its own below.
    assert_serves("torch", &SPLADE[1..]);
}

#[test]
fn torch_splade_weights_equal_sparse_encoders() {
    let server = serve_fixtures("torch", &["tiny-splade"], &[]);
    let (_, models) = server.get("/v1/models");
    assert_eq!(
        models["data"][0]["capabilities"],
        json!(["token_states", "sparse"]),
        "{models}"
    );
    let reference = reference("tiny-splade");
    let texts = reference["texts"].as_array().unwrap();
    let (status, body) = server.post("/embed_sparse", &json!({"inputs": texts}));
    assert_eq!(status, 200, "{body}");
    assert_sparse_rows(&body, &reference, "torch");
    // TEI's root route answers a SPLADE model as /embed_sparse; /info names its pooling.
    let (status, root) = server.post("/", &json!({"inputs": texts[0]}));
    assert_eq!(status, 200, "{root}");
    assert_eq!(root[0], body[0], "the root route answers as /embed_sparse");
    let (_, info) = server.get("/info");
    assert_eq!(
        info["model_type"]["embedding"]["pooling"], "splade",
        "{info}"
    );
    // TEI's dense /embed refuses a SPLADE model, naming the routes that answer it.
    let (status, body) = server.post("/embed", &json!({"inputs": "hello"}));
    assert!(status >= 400, "{body}");
    assert!(body.to_string().contains("/embed_sparse"), "{body}");
}

#[test]
fn dense_models_and_backends_without_splade_say_so() {
    let server = serve_fixtures("torch", &["all-MiniLM-L6-v2"], &[]);
    let (status, body) = server.post("/embed_sparse", &json!({"inputs": "hello"}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("'sparse' capability"),
        "{body}"
    );
    drop(server);
    let model = fixture("tiny-splade").display().to_string();
    Server::assert_refused(
        &[("BACKEND", "candle"), ("MODEL_NAMES", &model)],
        1,
        &["SPLADE model", "BACKEND=torch"],
    );
}
