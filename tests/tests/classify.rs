//! Sequence classification: a `*ForSequenceClassification` with more than one label served as
//! a classifier on every backend that has the architecture, answering Infinity's `/classify`,
//! TEI's `/predict` and `POST /` (as `huggingface_hub`'s `text_classification` calls it,
//! unmodified), RunPod jobs and `openai_route`, each against transformers' text-classification
//! pipeline: softmax for single-label models, a sigmoid per label for multi-label ones.

use ember_e2e::*;
use serde_json::{json, Value};

/// Three labels, single-label (softmax), BERT with segment ids.
const SENTIMENT: &str = "tiny-classify-bert";
/// Four labels, `multi_label_classification` (sigmoid), DistilBERT.
const MULTI: &str = "tiny-classify-distilbert";
/// Probabilities against transformers'.
const TOLERANCE: f64 = 1e-4;

fn serve(backend: &str, models: &[&str]) -> Server {
    // fp32 everywhere (ctranslate2 would pick int8 on the CPU).
    let dtypes = vec!["fp32"; models.len()].join(";");
    serve_fixtures(backend, models, &[("DTYPES", dtypes.as_str())])
}

fn id(name: &str) -> String {
    fixture(name).display().to_string()
}

/// The reference scores of row `i` of `key` (`scores` or `pair_scores`) by label.
fn want(reference: &Value, key: &str, i: usize, label: &str) -> f64 {
    let labels = reference["labels"].as_array().unwrap();
    let at = labels.iter().position(|l| l == label).unwrap();
    reference[key][i][at].as_f64().unwrap()
}

/// One input's `[{label, score}]`: every label once, best first, each within `tolerance` of
/// the reference row.
fn assert_row(got: &Value, reference: &Value, key: &str, i: usize, tolerance: f64, what: &str) {
    let row = got.as_array().unwrap_or_else(|| panic!("{what}: {got}"));
    let mut labels: Vec<&str> = row.iter().map(|p| p["label"].as_str().unwrap()).collect();
    let scores: Vec<f64> = row.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "{what}: not best first: {got}"
    );
    for (label, score) in labels.iter().zip(&scores) {
        let w = want(reference, key, i, label);
        assert!(
            (score - w).abs() < tolerance,
            "{what} {i} {label}: {score} vs {w}"
        );
    }
    labels.sort();
    let mut all: Vec<&str> = reference["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    all.sort();
    assert_eq!(labels, all, "{what}: every label once");
}

#[test]
fn classify_matches_transformers_on_every_backend() {
    for backend in ["torch", "optimum", "ctranslate2"] {
        let server = serve(backend, &[SENTIMENT, MULTI]);
        for name in [SENTIMENT, MULTI] {
            let reference = reference(name);
            let what = format!("{backend} {name}");
            let (status, body) = server.post(
                "/classify",
                &json!({"model": id(name), "input": reference["texts"]}),
            );
            assert_eq!(status, 200, "{what}: {body}");
            assert_eq!(body["object"], "classify", "{body}");
            assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
            let data = body["data"].as_array().unwrap();
            assert_eq!(data.len(), reference["texts"].as_array().unwrap().len());
            for (i, row) in data.iter().enumerate() {
                assert_row(row, &reference, "scores", i, TOLERANCE, &what);
            }
            // raw_scores: the logits themselves.
            let (status, body) = server.post(
                "/v1/classify",
                &json!({"model": id(name), "input": reference["texts"], "raw_scores": true}),
            );
            assert_eq!(status, 200, "{what}: {body}");
            let labels = reference["labels"].as_array().unwrap();
            for (i, row) in body["data"].as_array().unwrap().iter().enumerate() {
                for p in row.as_array().unwrap() {
                    let at = labels.iter().position(|l| *l == p["label"]).unwrap();
                    let w = reference["logits"][i][at].as_f64().unwrap();
                    let g = p["score"].as_f64().unwrap();
                    assert!((g - w).abs() < 1e-3, "{what} raw {i}: {g} vs {w}");
                }
            }
            // Pairs through TEI's /predict batch: [[premise, hypothesis], ...].
            let (status, body) = server.post(
                "/predict",
                &json!({"model": id(name), "inputs": reference["pairs"]}),
            );
            assert_eq!(status, 200, "{what}: {body}");
            for (i, row) in body.as_array().unwrap().iter().enumerate() {
                assert_row(row, &reference, "pair_scores", i, TOLERANCE, &what);
            }
        }
    }
}

#[test]
fn huggingface_hub_text_classification_and_tei_shapes() {
    let server = serve("torch", &[SENTIMENT]);
    let reference = reference(SENTIMENT);
    let script = format!(
        r#"
import json
from huggingface_hub import InferenceClient
client = InferenceClient(base_url={url:?})
text = {text}
def rows(out):
    return [{{"label": e.label, "score": e.score}} for e in out]
print(json.dumps({{
    "default": rows(client.text_classification(text)),
    "top": rows(client.text_classification(text, top_k=2)),
    "sigmoid": rows(client.text_classification(text, function_to_apply="sigmoid")),
    "none": rows(client.text_classification(text, function_to_apply="none")),
}}))
"#,
        url = server.url,
        text = reference["texts"][0],
    );
    let out = run_python(&script);
    assert_row(&out["default"], &reference, "scores", 0, TOLERANCE, "hub");
    assert_eq!(out["top"].as_array().unwrap().len(), 2, "{}", out["top"]);
    assert_eq!(out["top"][0], out["default"][0]);
    let labels = reference["labels"].as_array().unwrap();
    for p in out["none"].as_array().unwrap() {
        let at = labels.iter().position(|l| *l == p["label"]).unwrap();
        let logit = reference["logits"][0][at].as_f64().unwrap();
        assert!((p["score"].as_f64().unwrap() - logit).abs() < 1e-3, "{p}");
        let sig = out["sigmoid"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["label"] == p["label"])
            .unwrap();
        let want = 1.0 / (1.0 + (-logit).exp());
        assert!(
            (sig["score"].as_f64().unwrap() - want).abs() < 1e-4,
            "{sig}"
        );
    }

    // TEI's /predict: a string and a pair answer one unnested list; a batch a list of lists.
    let (status, one) = server.post("/predict", &json!({"inputs": reference["texts"][0]}));
    assert_eq!(status, 200, "{one}");
    assert_row(&one, &reference, "scores", 0, TOLERANCE, "predict one");
    let (status, pair) = server.post("/predict", &json!({"inputs": reference["pairs"][1]}));
    assert_eq!(status, 200, "{pair}");
    assert_row(
        &pair,
        &reference,
        "pair_scores",
        1,
        TOLERANCE,
        "predict pair",
    );
    let batch: Vec<Value> = (0..3).map(|i| json!([reference["texts"][i]])).collect();
    let (status, many) = server.post("/predict", &json!({"inputs": batch, "raw_scores": false}));
    assert_eq!(status, 200, "{many}");
    for i in 0..3 {
        assert_row(
            &many[i],
            &reference,
            "scores",
            i,
            TOLERANCE,
            "predict batch",
        );
    }
    // POST / without `parameters` is TEI's /predict, as TEI's root route is for classifiers.
    let (status, root) = server.post("/", &json!({"inputs": reference["texts"][2]}));
    assert_eq!(status, 200, "{root}");
    assert_row(&root, &reference, "scores", 2, TOLERANCE, "root");

    // What the model is, on /info and /v1/models.
    let (_, info) = server.get("/info");
    assert_eq!(
        info["model_type"]["classifier"]["id2label"],
        json!({"0": "negative", "1": "neutral", "2": "positive"}),
        "{info}"
    );
    assert_eq!(info["model_type"]["classifier"]["label2id"]["positive"], 2);
    let (_, models) = server.get("/v1/models");
    let m = &models["data"][0];
    assert_eq!(m["kind"], "classify", "{m}");
    assert_eq!(m["capabilities"], json!(["classify"]));
    assert_eq!(m["labels"], json!(["negative", "neutral", "positive"]));
    assert_eq!(m["multi_label"], false);
    assert!(m.get("encoding_formats").is_none(), "{m}");
}

#[test]
fn runpod_jobs_classify_by_the_model_they_address() {
    let server = serve("torch", &[MULTI, "tiny-bert-dense"]);
    let reference = reference(MULTI);
    // A plain job whose model is a classifier is classified.
    let (status, body) = server.post(
        "/runsync",
        &json!({"input": {"model": id(MULTI), "input": reference["texts"]}}),
    );
    assert_eq!(status, 200, "{body}");
    let out = &body["output"];
    assert_eq!(out["object"], "classify", "{body}");
    for (i, row) in out["data"].as_array().unwrap().iter().enumerate() {
        assert_row(row, &reference, "scores", i, TOLERANCE, "job");
    }
    // The same job to the embedder embeds.
    let (_, body) = server.post(
        "/runsync",
        &json!({"input": {"model": id("tiny-bert-dense"), "input": ["a"]}}),
    );
    assert_eq!(body["output"]["object"], "list", "{body}");
    // openai_route reaches /classify and /predict.
    for (route, input) in [
        (
            "/classify",
            json!({"model": id(MULTI), "input": [reference["texts"][1]]}),
        ),
        (
            "/predict",
            json!({"model": id(MULTI), "inputs": [[reference["texts"][1]]]}),
        ),
    ] {
        let (status, body) = server.post(
            "/runsync",
            &json!({"input": {"openai_route": route, "openai_input": input}}),
        );
        assert_eq!(status, 200, "{body}");
        let row = if route == "/classify" {
            &body["output"]["data"][0]
        } else {
            &body["output"][0]
        };
        assert_row(row, &reference, "scores", 1, TOLERANCE, route);
    }
}

#[test]
fn bad_classification_requests_name_the_field_and_item() {
    let server = serve("torch", &[SENTIMENT, "tiny-bert-dense"]);
    let clf = id(SENTIMENT);
    let embedder = id("tiny-bert-dense");
    // A classifier does not embed, and an embedder does not classify.
    assert_error_contains(
        server.post("/v1/embeddings", &json!({"model": clf, "input": ["a"]})),
        400,
        &["does not expose the 'embed' capability", "classify"],
    );
    assert_error_contains(
        server.post("/classify", &json!({"model": embedder, "input": ["a"]})),
        400,
        &["does not expose the 'classify' capability"],
    );
    assert_error_contains(
        server.post("/classify", &json!({"model": clf, "input": ["a", 3]})),
        400,
        &["input[1]", "must be a string"],
    );
    assert_error_contains(
        server.post("/classify", &json!({"model": clf, "input": []})),
        400,
        &["input", "empty"],
    );
    // Truncation turned off: an over-long input is refused, named, with the model's limit.
    let long = "word ".repeat(200);
    assert_error_contains(
        server.post(
            "/classify",
            &json!({"model": clf, "input": ["short", long], "truncate": false}),
        ),
        413,
        // 200 words and [CLS] [SEP]: the message says how long the input is.
        &[
            "input[1]",
            "longer than the model's maximum of 64",
            "(202 tokens",
        ],
    );
    // TEI's shapes and errors.
    let tei = |body: Value| server.post("/predict", &body);
    for (body, needles) in [
        (
            json!({"model": clf, "inputs": ["a", "b", "c"]}),
            vec!["3 strings", "one string or a pair"],
        ),
        (
            json!({"model": clf, "inputs": [["a"], [1]]}),
            vec!["inputs[1]"],
        ),
        (json!({"model": clf}), vec!["inputs is required"]),
        (
            json!({"model": clf, "inputs": "a", "raw_scores": "yes"}),
            vec!["raw_scores"],
        ),
        (
            json!({"model": clf, "inputs": [["a"], ["b", long]], "truncate": false}),
            vec!["inputs[1]", "longer than", "(204 tokens"],
        ),
    ] {
        let (status, got) = tei(body.clone());
        assert!(status == 422 || status == 413, "{body}: {status} {got}");
        let message = got["error"].as_str().unwrap_or_default();
        for n in needles {
            assert!(message.contains(n), "{body}: {message:?} lacks {n:?}");
        }
    }
    for function in [json!("relu"), json!(3)] {
        let (status, got) = server.post(
            "/",
            &json!({"model": clf, "inputs": "a", "parameters": {"function_to_apply": function}}),
        );
        assert_eq!(status, 422, "{got}");
        assert!(
            got["error"]
                .as_str()
                .unwrap()
                .starts_with("parameters.function_to_apply"),
            "{got}"
        );
    }
    // The server still answers.
    let (status, _) = server.post("/classify", &json!({"model": clf, "input": "fine"}));
    assert_eq!(status, 200);
}

/// A classifier's pair loses tokens from its longer text first, as transformers'
/// `truncation=True` (and TEI) cut it, at the end or, with `truncation_direction: "left"`, at
/// the start; computed here with the fixture's own model.
#[test]
fn pairs_truncate_the_longer_text_first_as_transformers_does() {
    let reference = reference(SENTIMENT);
    let long = "the premise goes on and on about guitars and music ".repeat(12);
    let pair = json!([long, "Someone is performing music."]);
    let script = format!(
        r#"
import json, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path, pair = {path:?}, {pair}
model = AutoModelForSequenceClassification.from_pretrained(path).eval()
out = {{}}
for side in ("left", "right"):
    tok = AutoTokenizer.from_pretrained(path, truncation_side=side)
    enc = tok(pair[0], pair[1], truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out[side] = torch.softmax(model(**enc).logits[0], dim=-1).tolist()
print(json.dumps(out))
"#,
        path = id(SENTIMENT),
        pair = pair,
    );
    let want = run_python(&script);
    let server = serve("torch", &[SENTIMENT]);
    let labels = reference["labels"].as_array().unwrap();
    for side in ["left", "right"] {
        let (status, got) = server.post(
            "/predict",
            &json!({"inputs": pair, "truncation_direction": side}),
        );
        assert_eq!(status, 200, "{got}");
        for p in got.as_array().unwrap() {
            let at = labels.iter().position(|l| *l == p["label"]).unwrap();
            let w = want[side][at].as_f64().unwrap();
            let g = p["score"].as_f64().unwrap();
            assert!(
                (g - w).abs() < TOLERANCE,
                "{side} {}: {g} vs {w}",
                p["label"]
            );
        }
    }
    let gap = (0..labels.len())
        .map(|i| (want["left"][i].as_f64().unwrap() - want["right"][i].as_f64().unwrap()).abs())
        .fold(0.0, f64::max);
    assert!(gap > 1e-3, "left and right truncation score alike ({gap})");
}

/// TEI's `/predict` also answers a reranker: its one label `LABEL_0`, scored by the sigmoid
/// of its logit, as transformers computes it for the pair.
#[test]
fn predict_on_a_reranker_answers_its_one_label() {
    let model = "tiny-rerank-bert";
    let reference = reference(model);
    let c = &reference["short"];
    let server = serve("torch", &[model]);
    let pairs: Vec<Value> = (0..2)
        .map(|i| json!([c["query"], c["documents"][i]]))
        .collect();
    let (status, got) = server.post("/predict", &json!({"inputs": pairs}));
    assert_eq!(status, 200, "{got}");
    for i in 0..2 {
        let row = got[i].as_array().unwrap();
        assert_eq!(row.len(), 1, "{got}");
        assert_eq!(row[0]["label"], "LABEL_0");
        let (g, w) = (
            row[0]["score"].as_f64().unwrap(),
            c["scores"][i].as_f64().unwrap(),
        );
        assert!((g - w).abs() < TOLERANCE, "{i}: {g} vs {w}");
    }
    // Infinity's /classify stays for classifiers, as its capabilities say.
    assert_error_contains(
        server.post("/classify", &json!({"input": ["a"]})),
        400,
        &["does not expose the 'classify' capability"],
    );
}
