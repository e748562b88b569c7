//! Embeddings over HTTP from the real binary and the optimum plugin, compared with
//! sentence-transformers' outputs recorded in the fixtures.

use ember_e2e::*;
use serde_json::{json, Value};

fn serve(model: &str) -> Server {
    serve_fixtures("optimum", &[model], &[])
}

fn check_parity(model: &str, min_cosine: f64) {
    let reference = reference(model);
    let server = serve(model);
    let texts = reference["texts"].clone();
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": texts, "model": fixture(model).display().to_string()}),
    );
    assert_eq!(status, 200, "{body}");
    let got = vectors(&body);
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        let c = cosine(g, e);
        assert!(
            c >= min_cosine,
            "{model}: text {i} ({:?}): cosine {c} < {min_cosine}",
            reference["texts"][i]
        );
        assert!((norm(g) - 1.0).abs() < 1e-4, "embeddings are unit length");
    }
    let tokens = reference_tokens(&reference);
    assert_eq!(
        body["usage"]["prompt_tokens"].as_u64(),
        Some(tokens),
        "usage counts real tokens"
    );
    assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(tokens));
}

#[test]
fn minilm_matches_sentence_transformers_including_long_unicode_and_one_char_texts() {
    check_parity("all-MiniLM-L6-v2", 0.9999);
}

#[test]
fn cls_pooling_matches_sentence_transformers() {
    check_parity("tiny-bert-cls", 0.9999);
}

#[test]
fn lasttoken_pooling_matches_sentence_transformers() {
    check_parity("tiny-bert-lasttoken", 0.9999);
}

#[test]
fn response_shape_base64_dimensions_and_openai_prefix() {
    let server = serve("all-MiniLM-L6-v2");
    let texts = json!(["first text", "second, longer text about embeddings"]);

    let (status, float_body) = server.post("/v1/embeddings", &json!({"input": texts}));
    assert_eq!(status, 200, "{float_body}");
    assert_eq!(float_body["object"], "list");
    assert_eq!(float_body["data"][0]["object"], "embedding");
    assert_eq!(float_body["data"][1]["index"], 1);
    assert_eq!(
        float_body["model"],
        fixture("all-MiniLM-L6-v2").display().to_string()
    );
    let floats = vectors(&float_body);
    assert_eq!(floats[0].len(), 384);

    // base64 decodes to exactly the float32 values of the float response.
    let (status, b64) = server.post(
        "/openai/v1/embeddings",
        &json!({"input": texts, "encoding_format": "base64"}),
    );
    assert_eq!(status, 200, "{b64}");
    assert!(b64["data"][0]["embedding"].is_string());
    assert_eq!(
        vectors(&b64),
        floats,
        "base64 and float outputs are the same float32 values"
    );

    // dimensions: truncated, then re-normalised.
    let (status, small) = server.post("/v1/embeddings", &json!({"input": texts, "dimensions": 64}));
    assert_eq!(status, 200, "{small}");
    for (s, f) in vectors(&small).iter().zip(&floats) {
        assert_eq!(s.len(), 64);
        assert!((norm(s) - 1.0).abs() < 1e-5);
        let mut t = f[..64].to_vec();
        let n = norm(&t) as f32;
        t.iter_mut().for_each(|x| *x /= n);
        assert!(cosine(s, &t) > 0.99999);
    }

    // A single string input gives one embedding; the same text gives the same vector.
    let (_, single) = server.post("/v1/embeddings", &json!({"input": "first text"}));
    let one = vectors(&single);
    assert_eq!(one.len(), 1);
    assert!(cosine(&one[0], &floats[0]) > 0.999999);

    let (status, models) = server.get("/openai/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(
        models["data"][0]["id"],
        fixture("all-MiniLM-L6-v2").display().to_string()
    );
    assert_eq!(models["data"][0]["backend"], "optimum");
    assert_eq!(
        models["data"][0]["capabilities"],
        json!(["embed", "token_states"])
    );
    assert_eq!(models["data"][0]["dimensions"], 384);
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn batches_mixing_requests_return_each_request_its_own_vectors() {
    // Many concurrent requests with texts of different lengths are batched together and
    // sorted by length; every answer must still be the vector of its own text.
    let server = serve("tiny-bert-cls");
    let reference = reference("tiny-bert-cls");
    let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    std::thread::scope(|s| {
        for worker in 0..8 {
            let server = &server;
            let texts = &texts;
            let expected = &expected;
            s.spawn(move || {
                for round in 0..10 {
                    let i = (worker + round) % texts.len();
                    let j = (worker * 3 + round) % texts.len();
                    let (status, body): (u16, Value) =
                        server.post("/v1/embeddings", &json!({"input": [texts[i], texts[j]]}));
                    assert_eq!(status, 200, "{body}");
                    let got = vectors(&body);
                    assert!(cosine(&got[0], &expected[i]) > 0.9999);
                    assert!(cosine(&got[1], &expected[j]) > 0.9999);
                }
            });
        }
    });
}
