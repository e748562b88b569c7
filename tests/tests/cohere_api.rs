//! Cohere's v2 API (`/v2/embed`, `/v2/rerank`) through the real `cohere` SDK's `ClientV2`,
//! unmodified, against the real binary; compact outputs (`int8`, `uint8`, `binary`,
//! `ubinary`) on the Cohere, OpenAI and RunPod routes, each against sentence-transformers'
//! `quantize_embeddings` (int8/uint8 with the ranges of ember's calibration corpus) and
//! transformers' scores.

use ember_e2e::*;
use serde_json::{json, Value};

const DENSE: &str = "tiny-bert-dense";
const RERANK: &str = "tiny-rerank-bert";

/// One server with the embedder and the reranker.
fn serve() -> Server {
    serve_fixtures("torch", &[DENSE, RERANK], &[])
}

fn codes(v: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// Codes equal to the reference's but for a bucket boundary crossed by float rounding: no
/// code more than 1 away, and at most 5% of them off at all.
fn assert_codes(got: &[Vec<i64>], want: &[Vec<i64>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let (mut off, mut all) = (0, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: text {i}: length");
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= 1, "{what}: text {i}: {g:?} vs {w:?}");
            off += usize::from(a != b);
            all += 1;
        }
    }
    assert!(off * 20 <= all, "{what}: {off} of {all} codes differ");
}

#[test]
fn cohere_client_embeds_every_type_as_sentence_transformers_quantizes() {
    let server = serve();
    let texts = reference(DENSE)["texts"].clone();
    let corpus = repo_root().join("host/src/api/calibration.txt");
    let script = format!(
        r#"
import base64, json
import numpy as np
import cohere
from sentence_transformers import SentenceTransformer
from sentence_transformers.util.quantization import quantize_embeddings

url, model, texts = {url:?}, {model:?}, {texts}
client = cohere.ClientV2(api_key="unused", base_url=url)
types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
r = client.embed(texts=texts, model=model, input_type="search_query", embedding_types=types)
e = r.embeddings
got = {{"float": e.float_, "int8": e.int8, "uint8": e.uint8, "binary": e.binary,
        "ubinary": e.ubinary,
        "base64": [np.frombuffer(base64.b64decode(s), dtype="<f4").tolist() for s in e.base64],
        "texts": r.texts, "tokens": r.meta.billed_units.input_tokens}}
one = client.embed(texts=texts[:1], model=model, input_type="search_query",
                   embedding_types=["int8", "uint8"]).embeddings
got["one_int8"], got["one_uint8"] = one.int8, one.uint8
small = client.embed(texts=texts, model=model, input_type="search_document",
                     embedding_types=["float", "int8"], output_dimension=8).embeddings
got["small_float"], got["small_int8"] = small.float_, small.int8
got["head"] = client.embed(texts=texts, model=model, input_type="search_query",
                           embedding_types=["float"], max_tokens=3).embeddings.float_
got["tail"] = client.embed(texts=texts, model=model, input_type="search_query",
                           embedding_types=["float"], max_tokens=3, truncate="START").embeddings.float_

st = SentenceTransformer(model, device="cpu")
corpus = open({corpus:?}).read().splitlines()
calib = st.encode(corpus, normalize_embeddings=True)
query = st.encode(texts, prompt_name="query", normalize_embeddings=True)
doc = st.encode(texts, prompt_name="document", normalize_embeddings=True)
def cut(x, d):
    x = x[:, :d]
    return x / np.linalg.norm(x, axis=1, keepdims=True)
def ranges(c):
    return np.vstack([c.min(axis=0), c.max(axis=0)])
want = {{"float": query.tolist(), "small_float": cut(doc, 8).tolist(),
         "small_int8": quantize_embeddings(cut(doc, 8), "int8",
                                           ranges=ranges(cut(calib, 8))).tolist()}}
for p in ("int8", "uint8"):
    want[p] = quantize_embeddings(query, p, ranges=ranges(calib)).tolist()
for p in ("binary", "ubinary"):
    want[p] = quantize_embeddings(query, p).tolist()
# max_tokens: the text each one's first (last, with truncate START) 3 tokens cover, by the
# tokenizer's own offsets; the prompt is added after.
spans = [st.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
         for t in texts]
head = [t[:s[2][1]] if len(s) > 3 else t for t, s in zip(texts, spans)]
tail = [t[s[-3][0]:] if len(s) > 3 else t for t, s in zip(texts, spans)]
for key, cut in (("head", head), ("tail", tail)):
    want[key] = st.encode(cut, prompt_name="query", normalize_embeddings=True).tolist()
print(json.dumps({{"got": got, "want": want}}))
"#,
        url = server.url,
        model = fixture(DENSE).display().to_string(),
        texts = texts,
        corpus = corpus.display().to_string(),
    );
    let out = run_python(&script);
    let (got, want) = (&out["got"], &out["want"]);
    let float = matrix(&got["float"]);
    assert_close(&float, &matrix(&want["float"]), "float");
    assert_eq!(
        matrix(&got["base64"]),
        float,
        "base64 holds the float32 bytes of the float vectors"
    );
    assert_eq!(got["texts"], texts, "the texts are echoed");
    assert!(got["tokens"].as_f64().unwrap() > 0.0, "{}", got["tokens"]);
    for p in ["int8", "uint8"] {
        assert_codes(&codes(&got[p]), &codes(&want[p]), p);
    }
    for p in ["binary", "ubinary"] {
        let packed = codes(&got[p]);
        assert_eq!(packed, codes(&want[p]), "{p}");
        assert_eq!(packed[0].len(), float[0].len().div_ceil(8), "{p}: packed");
    }
    // The codes of a text do not depend on what it was sent with; a single query quantises.
    for p in ["int8", "uint8"] {
        let one = codes(&got[format!("one_{p}")]);
        assert_codes(&one, &codes(&got[p])[..1], &format!("{p} alone"));
    }
    // max_tokens keeps the first (or, truncating at the start, the last) tokens.
    assert_close(
        &matrix(&got["head"]),
        &matrix(&want["head"]),
        "max_tokens 3",
    );
    assert_close(
        &matrix(&got["tail"]),
        &matrix(&want["tail"]),
        "max_tokens 3, START",
    );
    assert!(
        matrix(&got["head"]) != matrix(&got["tail"]),
        "head and tail of the texts must differ"
    );
    // output_dimension: int8 ranges calibrated on vectors cut the same way.
    assert_close(
        &matrix(&got["small_float"]),
        &matrix(&want["small_float"]),
        "output_dimension 8",
    );
    assert_codes(
        &codes(&got["small_int8"]),
        &codes(&want["small_int8"]),
        "output_dimension 8 int8",
    );
}

#[test]
fn cohere_client_reranks_as_transformers_scores() {
    let server = serve();
    let case = &reference(RERANK)["short"];
    let script = format!(
        r#"
import json
import torch
import cohere
from transformers import AutoModelForSequenceClassification, AutoTokenizer

url, model, query, docs = {url:?}, {model:?}, {query}, {docs}
client = cohere.ClientV2(api_key="unused", base_url=url)
r = client.rerank(model=model, query=query, documents=docs, top_n=2)
cut = client.rerank(model=model, query=query, documents=docs, max_tokens_per_doc=3)
# The reference for max_tokens_per_doc: each document's first 3 tokens, scored alone.
tok = AutoTokenizer.from_pretrained(model)
net = AutoModelForSequenceClassification.from_pretrained(model).eval()
heads = [tok.decode(tok(d, add_special_tokens=False)["input_ids"][:3]) for d in docs]
with torch.no_grad():
    batch = tok([query] * len(heads), heads, padding=True, truncation=True, return_tensors="pt")
    scores = torch.sigmoid(net(**batch).logits[:, 0]).tolist()
print(json.dumps({{
    "top": [[x.index, x.relevance_score] for x in r.results],
    "cut": [[x.index, x.relevance_score] for x in cut.results],
    "cut_want": scores,
    "tokens": r.meta.billed_units.input_tokens,
}}))
"#,
        url = server.url,
        model = fixture(RERANK).display().to_string(),
        query = case["query"],
        docs = case["documents"],
    );
    let out = run_python(&script);
    let want: Vec<f64> = serde_json::from_value(case["scores"].clone()).unwrap();
    let top: Vec<(usize, f64)> = serde_json::from_value(out["top"].clone()).unwrap();
    let mut best: Vec<usize> = (0..want.len()).collect();
    best.sort_by(|a, b| want[*b].total_cmp(&want[*a]));
    assert_eq!(
        top.iter().map(|x| x.0).collect::<Vec<_>>(),
        best[..2].to_vec(),
        "top_n=2, best first"
    );
    for (index, score) in &top {
        assert!(
            (score - want[*index]).abs() < 1e-4,
            "document {index}: {score}"
        );
    }
    let cut: Vec<(usize, f64)> = serde_json::from_value(out["cut"].clone()).unwrap();
    let cut_want: Vec<f64> = serde_json::from_value(out["cut_want"].clone()).unwrap();
    assert_eq!(cut.len(), want.len());
    for (index, score) in &cut {
        assert!(
            (score - cut_want[*index]).abs() < 1e-4,
            "max_tokens_per_doc: document {index}: {score} vs {}",
            cut_want[*index]
        );
    }
    assert!(
        cut.iter().any(|(i, s)| (s - want[*i]).abs() > 1e-3),
        "cutting documents to 3 tokens must change some score"
    );
}

#[test]
fn compact_outputs_on_the_openai_and_runpod_routes_equal_cohere_ones() {
    let server = serve();
    let model = fixture(DENSE).display().to_string();
    let texts = reference(DENSE)["texts"].clone();
    let (status, cohere) = server.post(
        "/v2/embed",
        &json!({"model": model, "texts": texts,
                "embedding_types": ["int8", "uint8", "binary", "ubinary"]}),
    );
    assert_eq!(status, 200, "{cohere}");
    for p in ["int8", "uint8", "binary", "ubinary"] {
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"model": model, "input": texts, "encoding_format": p}),
        );
        assert_eq!(status, 200, "{body}");
        let codes: Vec<Value> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["embedding"].clone())
            .collect();
        assert_eq!(
            Value::Array(codes),
            cohere["embeddings"][p],
            "OpenAI route {p}"
        );
    }
    // A RunPod job under /v2/{endpoint_id}/, next to Cohere's /v2/embed.
    let (status, job) = server.post(
        "/v2/ep/runsync",
        &json!({"input": {"model": model, "input": texts, "encoding_format": "ubinary"}}),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let codes: Vec<Value> = job["output"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{job}"))
        .iter()
        .map(|d| d["embedding"].clone())
        .collect();
    assert_eq!(
        Value::Array(codes),
        cohere["embeddings"]["ubinary"],
        "RunPod job"
    );
}

/// Cohere's error shape: the status, and a message holding every needle.
fn assert_cohere_error(got: (u16, Value), status: u16, needles: &[&str]) {
    let (code, body) = got;
    assert_eq!(code, status, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(message.contains(n), "{message:?} lacks {n:?}");
    }
}

#[test]
fn cohere_routes_refuse_bad_input_naming_the_field_in_cohere_shape() {
    let server = serve();
    let model = fixture(DENSE).display().to_string();
    let reranker = fixture(RERANK).display().to_string();
    let cases: Vec<(&str, Value, u16, Vec<&str>)> = vec![
        (
            "/v2/embed",
            json!({"model": model, "texts": ["a", 3]}),
            400,
            vec!["texts[1]"],
        ),
        (
            "/v2/embed",
            json!({"model": model, "texts": ["a"], "embedding_types": ["float", "int4"]}),
            400,
            vec!["embedding_types[1]", "int4"],
        ),
        (
            "/v2/embed",
            json!({"model": model, "texts": ["a"], "images": ["data:image/png;base64,AA=="]}),
            400,
            vec!["texts or images"],
        ),
        ("/v2/embed", json!({"model": model}), 400, vec!["texts"]),
        (
            "/v2/embed",
            json!({"model": model, "texts": ["a"], "output_dimension": 4096}),
            400,
            vec!["output_dimension", "at most"],
        ),
        (
            "/v2/embed",
            json!({"model": model, "texts": ["a"], "input_type": "summary"}),
            400,
            vec!["input_type", "summary"],
        ),
        (
            "/v2/embed",
            json!({"model": model, "texts": ["a"], "truncate": "MIDDLE"}),
            400,
            vec!["truncate"],
        ),
        (
            "/v2/embed",
            json!({"model": "nope", "texts": ["a"]}),
            404,
            vec!["'nope' is not deployed"],
        ),
        (
            "/v2/embed",
            json!({"model": reranker, "texts": ["a"]}),
            400,
            vec!["embed"],
        ),
        (
            "/v2/embed",
            json!({"model": model, "texts": ["word ".repeat(500)], "truncate": "NONE"}),
            413,
            vec!["texts[0]"],
        ),
        (
            "/v2/rerank",
            json!({"model": reranker, "query": "q", "documents": ["a", 5]}),
            400,
            vec!["documents[1]"],
        ),
        (
            "/v2/rerank",
            json!({"model": reranker, "query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
            400,
            vec!["max_tokens_per_doc"],
        ),
        (
            "/v2/rerank",
            json!({"model": reranker, "documents": ["a"]}),
            400,
            vec!["query"],
        ),
    ];
    for (path, body, status, needles) in cases {
        let got = server.post(path, &body);
        assert_cohere_error(got, status, &needles);
    }
    // The OpenAI route names its field in its own shape.
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"model": model, "input": "a", "encoding_format": "int4"}),
        ),
        400,
        &["encoding_format", "int8", "ubinary"],
    );
}

#[test]
fn runpod_jobs_reach_the_tei_and_cohere_routes_through_openai_route() {
    let server = serve();
    let model = fixture(DENSE).display().to_string();
    let reranker = fixture(RERANK).display().to_string();
    let job = |route: &str, body: Value| -> Value {
        let (status, job) = server.post(
            "/runsync",
            &json!({"input": {"openai_route": route, "openai_input": body}}),
        );
        assert_eq!(status, 200, "{job}");
        assert_eq!(job["status"], "COMPLETED", "{route}: {job}");
        job["output"].clone()
    };
    let texts = reference(DENSE)["texts"].clone();
    // Each route answers the job as it answers HTTP (Cohere's random id aside).
    let body = json!({"model": model, "texts": texts, "embedding_types": ["float", "binary"]});
    let mut http = server.post("/v2/embed", &body).1;
    let mut out = job("/v2/embed", body);
    for v in [&mut http, &mut out] {
        v.as_object_mut().unwrap().remove("id");
    }
    assert_eq!(out, http, "/v2/embed");
    let body = json!({"model": model, "inputs": texts});
    assert_close(
        &matrix(&job("/embed", body.clone())),
        &matrix(&server.post("/embed", &body).1),
        "/embed",
    );
    let case = &reference(RERANK)["short"];
    let body = json!({"model": reranker, "query": case["query"], "texts": case["documents"]});
    let out = job("/rerank", body.clone());
    assert_eq!(
        out.as_array().map(Vec::len),
        case["documents"].as_array().map(Vec::len)
    );
    assert_eq!(
        out[0]["index"],
        server.post("/rerank", &body).1[0]["index"],
        "TEI rerank"
    );
    let body = json!({"model": reranker, "query": case["query"], "documents": case["documents"]});
    let out = job("/v2/rerank", body);
    assert!(out["results"][0]["relevance_score"].is_number(), "{out}");
    let body = json!({"model": model, "inputs": "hello world"});
    assert_eq!(
        job("/tokenize", body.clone()),
        server.post("/tokenize", &body).1
    );
    assert_eq!(job("/info", json!({"x": 1}))["model_id"], json!(model));
    // /v1/models tells each model's kind, prompts and output types.
    let models = job("/v1/models", json!({"x": 1}));
    let dense = &models["data"][0];
    assert_eq!(dense["kind"], "embed", "{models}");
    assert_eq!(dense["prompts"]["query"], "query: ", "{models}");
    assert!(
        dense["encoding_formats"].to_string().contains("ubinary"),
        "{models}"
    );
    assert_eq!(models["data"][1]["kind"], "rerank", "{models}");
    // An unknown route names the supported ones.
    let (_, out) = server.post(
        "/runsync",
        &json!({"input": {"openai_route": "/v1/chat", "openai_input": {"x": 1}}}),
    );
    assert!(out.to_string().contains("/v2/embed"), "{out}");
}

#[test]
fn max_tokens_cuts_byte_level_texts_between_characters() {
    // A byte-level BPE splits multi-byte characters across tokens; every cut must still land
    // on a character boundary, from either end.
    let model = fixture("tiny-qwen3").display().to_string();
    let server = Server::start(&[("MODEL_NAMES", model.as_str())]);
    let texts = json!([
        "東京は日本の首都です🙂🙂 and then some words",
        "ñandú 🦩🦩🦩 ok"
    ]);
    for n in 1..=8 {
        for truncate in ["END", "START"] {
            let (status, body) = server.post(
                "/v2/embed",
                &json!({"texts": texts, "max_tokens": n, "truncate": truncate}),
            );
            assert_eq!(status, 200, "max_tokens {n} {truncate}: {body}");
            assert_eq!(
                body["embeddings"]["float"].as_array().map(Vec::len),
                Some(2)
            );
        }
    }
}

#[test]
fn int8_and_uint8_are_refused_for_images_binary_is_served() {
    let model = fixture("tiny-clip").display().to_string();
    let server = Server::start(&[("MODEL_NAMES", model.as_str())]);
    let image = data_uri("photo.png");
    for p in ["int8", "uint8"] {
        assert_error_contains(
            server.post(
                "/v1/embeddings",
                &json!({"input": [image], "modality": "image", "encoding_format": p}),
            ),
            400,
            &["encoding_format", p, "images"],
        );
        assert_cohere_error(
            server.post(
                "/v2/embed",
                &json!({"images": [image], "embedding_types": ["float", p]}),
            ),
            400,
            &["embedding_types", p],
        );
    }
    let (status, body) = server.post(
        "/v2/embed",
        &json!({"images": [image], "embedding_types": ["float", "ubinary"]}),
    );
    assert_eq!(status, 200, "{body}");
    let float = matrix(&body["embeddings"]["float"]);
    let packed = codes(&body["embeddings"]["ubinary"]);
    // ubinary is the signs of the float vector, packed.
    let bits: Vec<i64> = float[0]
        .chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0, |acc, (i, x)| acc | (i64::from(*x > 0.0) << (7 - i)))
        })
        .collect();
    assert_eq!(packed[0], bits);
    // Texts on the same CLIP model take int8.
    let (status, body) = server.post(
        "/v2/embed",
        &json!({"texts": ["a photo"], "embedding_types": ["int8"]}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn calibration_fits_a_queue_smaller_than_its_chunks() {
    let model = fixture(DENSE).display().to_string();
    let server = Server::start(&[
        ("MODEL_NAMES", model.as_str()),
        ("INFINITY_QUEUE_SIZE", "2"),
    ]);
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": ["one query"], "encoding_format": "int8"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"][0]["embedding"].as_array().map(Vec::len),
        Some(reference(DENSE)["embeddings"][0].as_array().unwrap().len())
    );
}
