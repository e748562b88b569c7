//! Reranking over HTTP with the optimum plugin, against transformers'
//! AutoModelForSequenceClassification scores recorded in the fixtures.

use ember_e2e::*;
use serde_json::{json, Value};

fn serve(models: &[&str]) -> Server {
    serve_fixtures("optimum", models, &[])
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn check_parity(model: &str) {
    let reference = reference(model);
    let server = serve(&[model]);
    for case in ["short", "long_query"] {
        let c = &reference[case];
        let expected = floats(&c["scores"]);
        let (status, body) = server.post(
            "/v1/rerank",
            &json!({"query": c["query"], "documents": c["documents"]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "rerank");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), expected.len());
        let mut seen = vec![false; expected.len()];
        let mut previous = f64::INFINITY;
        for r in results {
            let index = r["index"].as_u64().unwrap() as usize;
            let score = r["relevance_score"].as_f64().unwrap();
            assert!(
                (score - expected[index]).abs() < 1e-4,
                "{model} {case}: document {index}: score {score} vs transformers {}",
                expected[index]
            );
            assert!(
                score <= previous,
                "results are sorted, highest first: {body}"
            );
            assert!(r.get("document").is_none(), "documents only when asked");
            previous = score;
            seen[index] = true;
        }
        assert!(seen.iter().all(|s| *s), "every document is scored once");
        let tokens = reference_tokens(c);
        assert_eq!(
            body["usage"]["total_tokens"].as_u64(),
            Some(tokens),
            "{case}"
        );

        // Raw logits, on the other spellings of the route and fields.
        let logits = floats(&c["logits"]);
        let (status, body) = server.post(
            "/rerank",
            &json!({"query": c["query"], "docs": c["documents"], "raw_scores": true,
                    "return_docs": true, "top_n": 2}),
        );
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "top_n keeps the best two");
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
        for (r, want) in results.iter().zip(&order) {
            let index = r["index"].as_u64().unwrap() as usize;
            assert_eq!(index, *want, "{case}: top_n keeps the highest scores");
            let raw = r["relevance_score"].as_f64().unwrap();
            assert!(
                (raw - logits[index]).abs() < 1e-4,
                "raw score {raw} vs {}",
                logits[index]
            );
            assert_eq!(r["document"], c["documents"][index], "document echoed");
        }
    }
}

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_parity("tiny-rerank-bert");
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers() {
    check_parity("tiny-rerank-xlmr");
}

#[test]
fn electra_cross_encoder_matches_transformers() {
    check_parity("tiny-rerank-electra");
}

#[test]
fn capabilities_decide_what_a_model_answers() {
    let server = serve(&["tiny-rerank-bert", "tiny-bert-cls"]);
    let reranker = fixture("tiny-rerank-bert").display().to_string();
    let embedder = fixture("tiny-bert-cls").display().to_string();
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["capabilities"], json!(["rerank"]));
    assert_eq!(
        models["data"][1]["capabilities"],
        json!(["embed", "token_states"])
    );

    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"model": reranker, "input": "hello"}),
        ),
        400,
        &[
            "does not expose the 'embed' capability",
            "capabilities: rerank",
        ],
    );
    assert_error_contains(
        server.post(
            "/v1/rerank",
            &json!({"model": embedder, "query": "q", "documents": ["d"]}),
        ),
        400,
        &[
            "does not expose the 'rerank' capability",
            "capabilities: embed",
        ],
    );
    // Both models still answer what they can, under every prefix.
    for prefix in ["/v1", "/openai/v1", ""] {
        let (status, body) = server.post(
            &format!("{prefix}/rerank"),
            &json!({"model": reranker, "query": "q", "documents": ["a", "b"],
                    "return_documents": true}),
        );
        assert_eq!(status, 200, "{prefix}: {body}");
        assert_eq!(body["results"].as_array().unwrap().len(), 2);
        assert!(body["results"][0]["document"].is_string());
        let (status, body) = server.post(
            &format!("{prefix}/embeddings"),
            &json!({"model": embedder, "input": "hello"}),
        );
        assert_eq!(status, 200, "{prefix}: {body}");
    }
}

#[test]
fn bad_rerank_requests_name_the_field() {
    let server = serve(&["tiny-rerank-bert"]);
    assert_error_contains(
        server.post("/v1/rerank", &json!({"documents": ["a"]})),
        400,
        &["query is required"],
    );
    assert_error_contains(
        server.post("/v1/rerank", &json!({"query": "q", "documents": ["a", 5]})),
        400,
        &["documents[1]"],
    );
    assert_error_contains(
        server.post(
            "/v1/rerank",
            &json!({"query": "q", "documents": ["a"], "top_n": -1}),
        ),
        400,
        &["top_n must be a positive integer"],
    );
    assert_error_contains(
        server.post("/v1/rerank", &json!({"query": "q", "documents": []})),
        400,
        &["must not be empty"],
    );
    assert_error_contains(
        server.post(
            "/v1/rerank",
            &json!({"model": "nope", "query": "q", "documents": ["a"]}),
        ),
        404,
        &["'nope' is not deployed"],
    );
    // A document far past the maximum length is truncated, not refused.
    let long = "word ".repeat(5000);
    let (status, body) = server.post("/v1/rerank", &json!({"query": "q", "documents": [long]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 64);
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
}

/// `truncation_direction: "left"` cuts each over-long pair's document at its start, as
/// transformers' `truncation_side="left"` does (computed here with the fixture's own model);
/// the default cuts its end. TEI's `/rerank` and Infinity's `/v1/rerank` both take it.
#[test]
fn left_truncation_cuts_the_document_start_as_transformers_does() {
    let model = "tiny-rerank-bert";
    let reference = reference(model);
    let c = &reference["short"];
    let script = format!(
        r#"
import json, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path, query, docs, n = {path:?}, {query}, {docs}, {n}
model = AutoModelForSequenceClassification.from_pretrained(path).eval()
out = {{}}
for side in ("left", "right"):
    tok = AutoTokenizer.from_pretrained(path, truncation_side=side)
    enc = tok([query] * len(docs), docs, truncation="only_second", max_length=n, padding=True,
              return_tensors="pt")
    with torch.no_grad():
        out[side] = torch.sigmoid(model(**enc).logits[:, 0]).tolist()
print(json.dumps(out))
"#,
        path = fixture(model).display().to_string(),
        query = c["query"],
        docs = c["documents"],
        n = reference["max_length"],
    );
    let want = run_python(&script);
    let server = serve(&[model]);
    let by_index = |results: &Value, key: &str| -> Vec<f64> {
        let mut scores = vec![0.0; c["documents"].as_array().unwrap().len()];
        for r in results.as_array().unwrap() {
            scores[r["index"].as_u64().unwrap() as usize] = r[key].as_f64().unwrap();
        }
        scores
    };
    for side in ["left", "right"] {
        let (status, body) = server.post(
            "/v1/rerank",
            &json!({"query": c["query"], "documents": c["documents"],
                    "truncation_direction": side}),
        );
        assert_eq!(status, 200, "{body}");
        let got = by_index(&body["results"], "relevance_score");
        let (status, tei) = server.post(
            "/rerank",
            &json!({"query": c["query"], "texts": c["documents"], "truncation_direction": side}),
        );
        assert_eq!(status, 200, "{tei}");
        assert_eq!(
            by_index(&tei, "score"),
            got,
            "{side}: TEI and Infinity shapes agree"
        );
        for (i, (g, w)) in got.iter().zip(floats(&want[side])).enumerate() {
            assert!((g - w).abs() < 1e-4, "{side} {i}: {g} vs {w}");
        }
    }
    // The long document is where the two differ: the test can tell them apart.
    let gap = floats(&want["left"])
        .iter()
        .zip(floats(&want["right"]))
        .map(|(l, r)| (l - r).abs())
        .fold(0.0, f64::max);
    assert!(gap > 1e-3, "left and right truncation score alike ({gap})");
}
