//! Multi-vector (ColBERT) models, in PyLate's layout (on BERT and on ModernBERT) and in
//! sentence-transformers' MultiVectorEncoder one: each text's token vectors equal MultiVectorEncoder's as a query
//! (markers, unattended query expansion) and as a document (skiplist, length), over
//! `/v1/embeddings` and RunPod jobs, and `/v1/rerank` ranks documents by MaxSim as the
//! reference does, on every backend that computes the states they need.

use base64::Engine as _;
use ember_e2e::*;
use serde_json::{json, Value};

/// Rows of floats of a JSON list of lists.
fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list of vectors, got {v}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Largest absolute difference between two matrices of the same shape.
fn worst(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: vectors per text");
    got.iter()
        .zip(want)
        .flat_map(|(g, w)| {
            assert_eq!(g.len(), w.len(), "{what}: width");
            g.iter().zip(w).map(|(a, b)| (a - b).abs())
        })
        .fold(0.0, f64::max)
}

/// Each text's vectors in an embeddings answer.
fn answered(body: &Value) -> Vec<Vec<Vec<f64>>> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {body}"))
        .iter()
        .map(|d| matrix(&d["embedding"]))
        .collect()
}

fn assert_sides(server: &Server, fixture_name: &str, label: &str) {
    let reference = reference(fixture_name);
    let texts = &reference["texts"];
    for (side, body, key) in [
        (
            "query",
            json!({"input": texts, "input_type": "query"}),
            "queries",
        ),
        ("document", json!({"input": texts}), "documents"),
        (
            "document",
            json!({"input": texts, "prompt_name": "document"}),
            "documents",
        ),
    ] {
        let (status, got) = server.post("/v1/embeddings", &body);
        assert_eq!(status, 200, "{label} {side}: {got}");
        for (i, (g, w)) in answered(&got)
            .iter()
            .zip(reference[key].as_array().unwrap())
            .enumerate()
        {
            let d = worst(g, &matrix(w), &format!("{label} {side} {i}"));
            assert!(d < 1e-4, "{label}: {side} {i}: a value differs by {d}");
        }
    }
}

/// Checks the ranking of the reference's query against its texts, answered in `results`.
fn assert_ranked(results: &Value, reference: &Value, label: &str) {
    let want: Vec<f64> = reference["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
    let got: Vec<usize> = results
        .as_array()
        .unwrap_or_else(|| panic!("{label}: no results in {results}"))
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got, order, "{label}: documents ranked as MaxSim ranks them");
    for r in results.as_array().unwrap() {
        let i = r["index"].as_u64().unwrap() as usize;
        let score = r["relevance_score"].as_f64().unwrap();
        // A sum of one cosine per query vector (16), each within float32 rounding.
        assert!(
            (score - want[i]).abs() < 1e-4 * want[i].abs().max(1.0),
            "{label}: document {i} scored {score}, reference {}",
            want[i]
        );
    }
}

#[test]
fn colbert_vectors_and_maxsim_equal_the_reference_on_torch_and_optimum() {
    for backend in ["torch", "optimum"] {
        for name in [
            "tiny-colbert",
            "tiny-colbert-st",
            "tiny-colbert-stanford",
            "tiny-colbert-modernbert",
        ] {
            if backend == "optimum" && name == "tiny-colbert-modernbert" {
                continue;
            }
            let label = format!("{backend} {name}");
            let server = serve_fixtures(backend, &[name], &[]);
            let (_, models) = server.get("/v1/models");
            let entry = &models["data"][0];
            assert_eq!(
                entry["capabilities"],
                json!(["multi_vector", "rerank", "token_states"]),
                "{label}: {models}"
            );
            assert_eq!(entry["dimensions"], 16, "{label}: the projection's width");
            // colbert-ai's marker is prompted with a space after it, as sentence-transformers
            // reads it.
            let marker = match name {
                "tiny-colbert-stanford" => "[unused0] ",
                _ => "[unused0]",
            };
            assert_eq!(entry["prompts"]["query"], marker, "{label}: {models}");
            assert_sides(&server, name, &label);

            let reference = reference(name);
            let texts = &reference["texts"];
            let (status, body) = server.post(
                "/v1/rerank",
                &json!({"query": reference["query"], "documents": texts, "return_documents": true}),
            );
            assert_eq!(status, 200, "{label}: {body}");
            assert_ranked(&body["results"], &reference, &label);
            assert_eq!(
                body["results"][0]["document"],
                texts[body["results"][0]["index"].as_u64().unwrap() as usize]
            );
            if backend == "optimum" || name != "tiny-colbert" {
                continue;
            }
            // RunPod: a rerank job ranks by MaxSim; an embedding job answers vectors.
            let (status, body) = server.post(
                "/runsync",
                &json!({"input": {"query": reference["query"], "docs": texts}}),
            );
            assert_eq!(status, 200, "{body}");
            assert_ranked(&body["output"]["results"], &reference, "RunPod rerank");
            let (status, body) = server.post(
                "/runsync",
                &json!({"input": {"input": [texts[1]], "input_type": "query"}}),
            );
            assert_eq!(status, 200, "{body}");
            let got = &answered(&body["output"])[0];
            let d = worst(got, &matrix(&reference["queries"][1]), "RunPod query");
            assert!(d < 1e-4, "RunPod query: a value differs by {d}");

            // base64: the float32 values, token after token.
            let (status, body) = server.post(
                "/v1/embeddings",
                &json!({"input": [texts[1]], "encoding_format": "base64"}),
            );
            assert_eq!(status, 200, "{body}");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(body["data"][0]["embedding"].as_str().unwrap())
                .unwrap();
            let floats: Vec<f64> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect();
            let want: Vec<f64> = matrix(&reference["documents"][1]).concat();
            assert_eq!(floats.len(), want.len(), "base64: tokens x 16 floats");
            let d = floats
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-4, "base64: a value differs by {d}");

            // What a multi-vector model cannot answer says so, naming the field.
            for (body, param) in [
                (json!({"input": "a", "dimensions": 8}), "dimensions"),
                (
                    json!({"input": "a", "encoding_format": "int8"}),
                    "encoding_format",
                ),
                (
                    json!({"input": "a", "input_type": "clustering"}),
                    "input_type",
                ),
                (
                    json!({"input": "a", "prompt_name": "passage"}),
                    "prompt_name",
                ),
                (
                    json!({"input": "a", "truncation_direction": "left"}),
                    "truncation_direction",
                ),
            ] {
                let (status, got) = server.post("/v1/embeddings", &body);
                assert_eq!(status, 400, "{body}: {got}");
                assert_eq!(got["error"]["param"], param, "{got}");
            }
            // usage counts the query's own tokens ([CLS] [unused0] a [SEP]), not its filler.
            let (status, got) = server.post(
                "/v1/embeddings",
                &json!({"input": "a", "input_type": "query"}),
            );
            assert_eq!(status, 200, "{got}");
            assert_eq!(got["usage"]["prompt_tokens"], 4, "{got}");
            assert_eq!(
                got["data"][0]["embedding"].as_array().unwrap().len(),
                16,
                "a vector for each of the query's 16 positions"
            );
            // /embed_all's raw states read the query marker as one token too.
            let (status, got) = server.post(
                "/embed_all",
                &json!({"inputs": "a", "prompt_name": "query"}),
            );
            assert_eq!(status, 200, "{got}");
            assert_eq!(
                got[0].as_array().unwrap().len(),
                4,
                "[CLS] [unused0] a [SEP], the marker whole"
            );
            let (status, got) = server.post("/embed", &json!({"inputs": "a"}));
            assert!(status >= 400, "{got}");
            assert!(got.to_string().contains("/v1/embeddings"), "{got}");
        }
    }
}

#[test]
fn backends_without_the_states_a_colbert_model_needs_refuse_it() {
    let model = fixture("tiny-colbert").display().to_string();
    Server::assert_refused(
        &[("BACKEND", "candle"), ("MODEL_NAMES", &model)],
        1,
        &["multi-vector (ColBERT) model", "token states"],
    );
    // optimum offers the unattended expansion's states for BERT-family exports only.
    let modern = fixture("tiny-colbert-modernbert").display().to_string();
    Server::assert_refused(
        &[("BACKEND", "optimum"), ("MODEL_NAMES", &modern)],
        1,
        &["query expansion", "attention skips"],
    );
}
