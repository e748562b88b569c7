//! Hugging Face text-embeddings-inference (TEI) compatibility: `huggingface_hub`'s
//! `InferenceClient` and LlamaIndex's `TextEmbeddingsInference`, unmodified, against the real
//! binary, and TEI's routes (`/embed`,
//! `/rerank` with `texts`, `/tokenize`, `/decode`, `/info`, `POST /`) in TEI's shapes, each
//! against sentence-transformers / transformers references.

use ember_e2e::*;
use serde_json::{json, Value};

const DENSE: &str = "tiny-bert-dense";
const RERANK: &str = "tiny-rerank-bert";

fn serve(name: &str) -> Server {
    serve_fixtures("torch", &[name], &[])
}

/// TEI's error shape: a status, `error_type`, and a message holding every needle.
fn assert_tei_error(got: (u16, Value), status: u16, kind: &str, needles: &[&str]) {
    let (code, body) = got;
    assert_eq!(code, status, "{body}");
    assert_eq!(body["error_type"], kind, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    for n in needles {
        assert!(message.contains(n), "{message:?} lacks {n:?}");
    }
}

#[test]
fn huggingface_hub_inference_client_embeds_through_the_root_route() {
    let server = serve(DENSE);
    let reference = reference(DENSE);
    let script = format!(
        r#"
import json
from huggingface_hub import InferenceClient
client = InferenceClient(base_url={url:?})
texts = {texts}
out = {{
    "bare": client.feature_extraction(texts).tolist(),
    "query": client.feature_extraction(texts, prompt_name="query").tolist(),
    "one": client.feature_extraction(texts[0]).tolist(),
    "raw": client.feature_extraction(texts, normalize=False).tolist(),
}}
print(json.dumps(out))
"#,
        url = server.url,
        texts = reference["texts"],
    );
    let got = run_python(&script);
    let want = matrix(&reference["embeddings"]);
    assert_close(&matrix(&got["bare"]), &want, "bare");
    assert_close(
        &matrix(&got["query"]),
        &matrix(&reference["prompts"]["query"]),
        "prompt query",
    );
    assert_close(&matrix(&got["one"]), &want[..1], "one text");
    // normalize=False: the pipeline's output before ember's normalisation, same direction.
    let raw = matrix(&got["raw"]);
    assert_close(&raw, &want, "normalize=False");
    assert!(
        raw.iter().any(|v| (norm(v) - 1.0).abs() > 1e-3),
        "normalize=False gave unit vectors"
    );
}

#[test]
fn llamaindex_text_embeddings_inference_embeds_through_embed() {
    let server = serve(DENSE);
    let reference = reference(DENSE);
    // LlamaIndex's TEI integration posts batches to /embed; its query_instruction is a
    // prefix joined with a space, here the model's own query prompt ("query: ").
    let query = reference["prompts"]["query"].clone();
    let script = format!(
        r#"
import json
from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference
texts = {texts}
plain = TextEmbeddingsInference(model_name="ember", base_url={url:?}, embed_batch_size=2)
prompted = TextEmbeddingsInference(model_name="ember", base_url={url:?}, embed_batch_size=3,
                                   query_instruction="query:")
print(json.dumps({{
    "batch": plain.get_text_embedding_batch(texts),
    "one": plain.get_text_embedding(texts[0]),
    "query": [prompted.get_query_embedding(t) for t in texts],
}}))
"#,
        url = server.url,
        texts = reference["texts"],
    );
    let got = run_python(&script);
    let want = matrix(&reference["embeddings"]);
    assert_close(&matrix(&got["batch"]), &want, "batches of 2");
    assert_close(&matrix(&json!([got["one"]])), &want[..1], "one text");
    assert_close(&matrix(&got["query"]), &matrix(&query), "query instruction");
}

#[test]
fn tei_routes_answer_in_teis_shapes() {
    let server = serve(DENSE);
    let reference = reference(DENSE);
    let texts = reference["texts"].clone();
    let want = matrix(&reference["embeddings"]);

    // /embed: a list of vectors, a string gives one; dimensions and prompt_name apply.
    let (status, body) = server.post("/embed", &json!({"inputs": texts}));
    assert_eq!(status, 200, "{body}");
    assert_close(&matrix(&body), &want, "/embed");
    let (status, body) = server.post("/embed", &json!({"inputs": texts[1]}));
    assert_eq!(status, 200, "{body}");
    assert_close(&matrix(&body), &want[1..2], "/embed one");
    let (_, body) = server.post(
        "/embed",
        &json!({"inputs": texts, "prompt_name": "document"}),
    );
    assert_close(
        &matrix(&body),
        &matrix(&reference["prompts"]["document"]),
        "/embed document",
    );
    let (_, body) = server.post("/embed", &json!({"inputs": "x", "dimensions": 8}));
    assert_eq!(matrix(&body)[0].len(), 8);

    // Truncation: the texts the model truncates (3 and 4 reach its 32 tokens) are refused
    // with truncate false, cut at their start with truncation_direction left (another
    // vector), the short ones unchanged.
    let max = reference["max_seq_length"].as_u64().unwrap();
    let long: Vec<usize> = (0..want.len())
        .filter(|&i| reference["token_counts"][i].as_u64() == Some(max))
        .collect();
    assert_eq!(long, [3, 4]);
    assert_tei_error(
        server.post("/embed", &json!({"inputs": texts, "truncate": false})),
        413,
        "Validation",
        &["inputs[3]", "32 tokens"],
    );
    let (status, body) = server.post(
        "/embed",
        &json!({"inputs": texts, "truncate": true, "truncation_direction": "left"}),
    );
    assert_eq!(status, 200, "{body}");
    // As sentence-transformers with the tokenizer's truncation_side = "left".
    assert_close(
        &matrix(&body),
        &matrix(&reference["left_truncated"]),
        "truncation_direction left",
    );
    let (_, start) = server.post(
        "/v1/embeddings",
        &json!({"input": texts, "truncate": "START"}),
    );
    assert_close(
        &vectors(&start),
        &matrix(&reference["left_truncated"]),
        "Cohere's truncate START on the OpenAI route",
    );
    let (status, _) = server.post("/embed", &json!({"inputs": texts[0], "truncate": false}));
    assert_eq!(status, 200, "a short text passes with truncate false");

    // Errors in TEI's shape, naming the field and item.
    assert_tei_error(
        server.post("/embed", &json!({"text": "x"})),
        422,
        "Validation",
        &["inputs is required"],
    );
    assert_tei_error(
        server.post("/embed", &json!({"inputs": ["a", 3]})),
        422,
        "Validation",
        &["inputs[1]"],
    );
    assert_tei_error(
        server.post(
            "/embed",
            &json!({"inputs": "a", "truncation_direction": "up"}),
        ),
        422,
        "Validation",
        &["truncation_direction"],
    );
    assert_tei_error(
        server.post("/embed", &json!({"inputs": "a", "prompt_name": "nope"})),
        422,
        "Validation",
        &["prompt_name 'nope'"],
    );

    // /tokenize: ids as the tokenizer makes them, specials flagged, byte offsets.
    let (status, body) = server.post("/tokenize", &json!({"inputs": "Hello, world!"}));
    assert_eq!(status, 200, "{body}");
    let tokens = body[0].as_array().unwrap();
    assert_eq!(
        tokens.len(),
        reference["token_counts"][0].as_u64().unwrap() as usize
    );
    assert_eq!(tokens[0]["text"], "[CLS]");
    assert_eq!(tokens[0]["special"], true);
    assert!(tokens[0]["start"].is_null());
    assert_eq!(tokens[1]["text"], "Hello");
    assert_eq!(
        (tokens[1]["start"].as_u64(), tokens[1]["stop"].as_u64()),
        (Some(0), Some(5))
    );
    let (_, bare) = server.post(
        "/tokenize",
        &json!({"inputs": ["Hello, world!"], "add_special_tokens": false}),
    );
    assert_eq!(bare[0].as_array().unwrap().len(), tokens.len() - 2);
    let (_, prompted) = server.post(
        "/tokenize",
        &json!({"inputs": "Hello, world!", "prompt_name": "query"}),
    );
    assert_eq!(prompted[0][1]["text"], "query");

    // /decode: the ids back to text, specials skipped by default.
    let ids: Vec<u64> = tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let (status, body) = server.post("/decode", &json!({"ids": ids}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!(["hello, world!"]));
    let (_, body) = server.post(
        "/decode",
        &json!({"ids": [ids.clone(), ids], "skip_special_tokens": false}),
    );
    assert_eq!(body[1], "[CLS] hello, world! [SEP]");
    assert_tei_error(
        server.post("/decode", &json!({"ids": [1, -2]})),
        422,
        "Validation",
        &["ids[1]"],
    );

    // /info: TEI's model information.
    let (status, info) = server.get("/info");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["model_type"]["embedding"]["pooling"], "mean");
    assert_eq!(info["max_input_length"], 32);
    assert_eq!(info["prompts"]["query"], "query: ");
}

#[test]
fn tei_rerank_scores_as_transformers_and_the_root_route_follows_the_model() {
    let server = serve(RERANK);
    let reference = reference(RERANK);
    let case = &reference["short"];
    let docs = case["documents"].as_array().unwrap();
    let scores: Vec<f64> = serde_json::from_value(case["scores"].clone()).unwrap();
    let logits: Vec<f64> = serde_json::from_value(case["logits"].clone()).unwrap();
    for (path, raw) in [("/rerank", false), ("/", true)] {
        let (status, body) = server.post(
            path,
            &json!({"query": case["query"], "texts": docs, "raw_scores": raw,
                    "return_text": true}),
        );
        assert_eq!(status, 200, "{path}: {body}");
        let ranks = body.as_array().unwrap();
        assert_eq!(ranks.len(), docs.len());
        let mut last = f64::INFINITY;
        for r in ranks {
            let i = r["index"].as_u64().unwrap() as usize;
            let score = r["score"].as_f64().unwrap();
            let want = if raw { logits[i] } else { scores[i] };
            assert!(
                (score - want).abs() < 1e-4,
                "{path} doc {i}: {score} vs {want}"
            );
            assert!(score <= last, "best first");
            last = score;
            assert_eq!(r["text"], docs[i]);
        }
    }
    // The long document is refused untruncated, naming its index.
    let long = docs
        .iter()
        .position(|d| d.as_str().unwrap().len() > 300)
        .unwrap();
    let (status, body) = server.post(
        "/rerank",
        &json!({"query": case["query"], "texts": docs, "truncate": false}),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("texts[{long}]")),
        "{body}"
    );
    assert_tei_error(
        server.post("/rerank", &json!({"query": "q", "texts": []})),
        422,
        "Validation",
        &["texts must not be an empty list"],
    );
    let (_, info) = server.get("/info");
    assert!(info["model_type"]["reranker"].is_object(), "{info}");
    // The Cohere / Infinity shape still answers on the same route.
    let (status, body) = server.post(
        "/rerank",
        &json!({"query": case["query"], "documents": docs}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "rerank");
}
