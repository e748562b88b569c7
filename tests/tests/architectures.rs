//! The architectures beyond BERT and RoBERTa, each against its reference implementation
//! (sentence-transformers for embedders, transformers for cross-encoders), on single inputs
//! and on batches that mix short texts with one truncated at the model's maximum (padding
//! must not change a vector). Fixtures: scripts/make_fixtures.py.

use ember_e2e::*;
use serde_json::json;

/// Embedders served by the torch backend.
const TORCH_EMBEDDERS: &[&str] = &[
    "tiny-distilbert",
    "tiny-mpnet",
    "tiny-qwen3",
    "tiny-qwen2",
    "tiny-mistral",
    "tiny-llama",
    "tiny-modernbert",
    "tiny-gemma3",
    "tiny-deberta",
    "tiny-gte",
    "tiny-nomic",
];
/// Cross-encoders served by the torch backend.
const TORCH_RERANKERS: &[&str] = &[
    "tiny-rerank-distilbert",
    "tiny-rerank-mpnet",
    "tiny-rerank-qwen3",
    "tiny-rerank-modernbert",
    "tiny-rerank-deberta",
    "tiny-rerank-qwen3-lm",
    "tiny-rerank-qwen2",
    "tiny-rerank-mistral",
    "tiny-rerank-llama",
    "tiny-rerank-gemma3",
    "tiny-rerank-electra",
    "tiny-rerank-gte",
];

fn serve(backend: &str, fixture_name: &str) -> Server {
    Server::start(&env_refs(&env(backend, fixture_name)))
}

/// The environment of `backend` serving the fixture in fp32, with a fresh HF_HOME (where the
/// ctranslate2 backend caches its conversions).
fn env(backend: &str, fixture_name: &str) -> Vec<(String, String)> {
    let home = std::env::temp_dir().join(format!(
        "ember-arch-{backend}-{fixture_name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&home);
    let mut env = backend_env(backend, &fixture(fixture_name));
    env.push(("HF_HOME".into(), home.display().to_string()));
    // Parity is judged in fp32 (ctranslate2's `auto` is int8 on the CPU).
    env.push(("DTYPES".into(), "fp32".into()));
    env
}

/// The reference texts in one mixed-length request, then each alone.
fn assert_embeds_alone_and_batched(server: &Server, fixture_name: &str, min_cosine: f64) {
    server.assert_embeds_reference(fixture_name, min_cosine);
    let n = reference(fixture_name)["texts"].as_array().unwrap().len();
    for i in 0..n {
        server.assert_embeds_reference_of(fixture_name, &[i], min_cosine);
    }
}

/// The reference documents scored together, then each alone.
fn assert_scores_alone_and_batched(server: &Server, fixture_name: &str) {
    assert_rerank_matches_reference(server, fixture_name, 1e-4);
    let reference = reference(fixture_name);
    for case in ["short", "long_query"] {
        let c = &reference[case];
        for (i, document) in c["documents"].as_array().unwrap().iter().enumerate() {
            let (status, body) = server.post(
                "/v1/rerank",
                &json!({"query": c["query"], "documents": [document]}),
            );
            assert_eq!(status, 200, "{body}");
            let got = body["results"][0]["relevance_score"].as_f64().unwrap();
            let want = c["scores"][i].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{fixture_name} {case} document {i} alone: {got} vs {want}"
            );
        }
    }
}

#[test]
fn torch_embedders_match_sentence_transformers_alone_and_in_mixed_batches() {
    for name in TORCH_EMBEDDERS {
        let server = serve("torch", name);
        assert_embeds_alone_and_batched(&server, name, 0.9999);
    }
}

#[test]
fn torch_cross_encoders_match_transformers_alone_and_in_batches() {
    for name in TORCH_RERANKERS {
        let server = serve("torch", name);
        assert_scores_alone_and_batched(&server, name);
    }
}

/// Each of the fixture's prompts, chosen by `prompt_name`, against sentence-transformers.
fn assert_prompts_match(server: &Server, name: &str) {
    let reference = reference(name);
    for prompt in ["query", "document"] {
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"input": reference["texts"], "prompt_name": prompt}),
        );
        assert_eq!(status, 200, "{body}");
        let want: Vec<Vec<f32>> =
            serde_json::from_value(reference["prompts"][prompt].clone()).unwrap();
        for (i, (g, w)) in vectors(&body).iter().zip(&want).enumerate() {
            let c = cosine(g, w);
            assert!(c >= 0.9999, "{name} prompt {prompt} text {i}: cosine {c}");
        }
    }
}

#[test]
fn torch_embedders_apply_their_prompts() {
    for name in ["tiny-qwen3", "tiny-modernbert", "tiny-gemma3"] {
        assert_prompts_match(&serve("torch", name), name);
    }
}

#[test]
fn pooling_leaves_the_prompt_out_on_every_backend_when_the_model_says_so() {
    // tiny-bert-instruct: mean pooling with include_prompt: false, an instruction query
    // prompt and an empty document prompt. Pooling the prompt's tokens too moves every query
    // vector below cosine 0.999 (most below 0.99), so each assertion here catches that.
    let name = "tiny-bert-instruct";
    let reference = reference(name);
    let texts = reference["texts"].as_array().unwrap().clone();
    let queries: Vec<Vec<f32>> =
        serde_json::from_value(reference["prompts"]["query"].clone()).unwrap();
    for backend in ["torch", "optimum", "ctranslate2", "candle"] {
        let server = serve(backend, name);
        assert_prompts_match(&server, name);
        // Each text alone (no padding) and in a RunPod job named by input_type.
        for (i, text) in texts.iter().enumerate() {
            let (status, body) = server.post(
                "/v1/embeddings",
                &json!({"input": [text], "prompt_name": "query"}),
            );
            assert_eq!(status, 200, "{body}");
            let c = cosine(&vectors(&body)[0], &queries[i]);
            assert!(c >= 0.9999, "{backend}: query {i} alone: cosine {c}");
        }
        let (status, body) = server.post(
            "/runsync",
            &json!({"input": {"input": texts, "input_type": "query"}}),
        );
        assert_eq!(status, 200, "{body}");
        for (i, (g, w)) in vectors(&body["output"]).iter().zip(&queries).enumerate() {
            let c = cosine(g, w);
            assert!(c >= 0.9999, "{backend}: RunPod query {i}: cosine {c}");
        }
    }
}

#[test]
fn ctranslate2_serves_distilbert_and_refuses_decoders_naming_who_serves_them() {
    let server = serve("ctranslate2", "tiny-distilbert");
    assert_embeds_alone_and_batched(&server, "tiny-distilbert", 0.9999);
    drop(server);
    let server = serve("ctranslate2", "tiny-rerank-distilbert");
    assert_scores_alone_and_batched(&server, "tiny-rerank-distilbert");
    drop(server);
    Server::assert_refused(
        &env_refs(&env("ctranslate2", "tiny-qwen3")),
        1,
        &["\"qwen3\" is a decoder", "BACKEND=torch", "BACKEND=optimum"],
    );
}

#[test]
fn optimum_serves_a_decoder_export_with_position_ids_and_an_empty_cache() {
    // tiny-qwen3's onnx/model.onnx takes position_ids and past_key_values.N.key/value.
    let server = serve("optimum", "tiny-qwen3");
    assert_embeds_alone_and_batched(&server, "tiny-qwen3", 0.9999);
    assert_prompts_match(&server, "tiny-qwen3");
}

#[test]
fn optimum_serves_encoder_exports_of_each_architecture() {
    for name in [
        "tiny-modernbert",
        "tiny-distilbert",
        "tiny-mpnet",
        "tiny-deberta",
        "tiny-gemma3",
    ] {
        let server = serve("optimum", name);
        assert_embeds_alone_and_batched(&server, name, 0.9999);
    }
    // EmbeddingGemma's export: bidirectional, sliding layers, its prompts and Dense modules
    // applied by the host.
    assert_prompts_match(&serve("optimum", "tiny-gemma3"), "tiny-gemma3");
}

#[test]
fn input_type_maps_onto_the_models_prompts_on_both_routes() {
    let name = "tiny-modernbert";
    let reference = reference(name);
    let texts = &reference["texts"];
    let want = |key: &str| -> Vec<Vec<f32>> {
        let v = match key {
            "bare" => &reference["embeddings"],
            prompt => &reference["prompts"][prompt],
        };
        serde_json::from_value(v.clone()).unwrap()
    };
    let close = |got: &[Vec<f32>], key: &str, what: &str| {
        for (i, (g, w)) in got.iter().zip(want(key)).enumerate() {
            let c = cosine(g, &w);
            assert!(
                c >= 0.9999,
                "{what}: text {i}: cosine {c} with the {key} reference"
            );
        }
    };
    let server = serve("torch", name);
    for (input_type, key) in [
        ("query", "query"),
        ("search_query", "query"),
        ("document", "document"),
        ("search_document", "document"),
        // The model defines no clustering prompt: the texts are embedded bare.
        ("clustering", "bare"),
    ] {
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"input": texts, "input_type": input_type}),
        );
        assert_eq!(status, 200, "{body}");
        close(&vectors(&body), key, input_type);
        let (status, body) = server.post(
            "/runsync",
            &json!({"input": {"input": texts, "input_type": input_type}}),
        );
        assert_eq!(status, 200, "{body}");
        close(&vectors(&body["output"]), key, input_type);
    }
    // A prompt named outright wins over the input type.
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": texts, "input_type": "query", "prompt_name": "document"}),
    );
    assert_eq!(status, 200, "{body}");
    close(&vectors(&body), "document", "prompt_name over input_type");
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"input": "x", "input_type": "summary"}),
        ),
        400,
        &["input_type 'summary'", "search_query"],
    );
}

#[test]
fn torch_runs_every_embedder_in_fp16_and_bf16_close_to_fp32() {
    // Measured worst cosines: fp16 0.99997 (Mistral), bf16 0.9981 (Mistral: three layers of
    // wide random weights through bf16's 8-bit mantissa). The bars leave room and stay above
    // the 0.99 every fixture's bugs (ignored mask, truncation, window) are checked to fall to.
    for name in TORCH_EMBEDDERS {
        let reference = reference(name);
        let want: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
        for dtype in ["fp16", "bf16"] {
            let mut env = env("torch", name);
            env.retain(|(k, _)| k != "DTYPES");
            env.push(("DTYPES".into(), dtype.into()));
            let server = Server::start(&env_refs(&env));
            let ready = server.ready_line();
            assert_eq!(ready["dtype"], dtype, "{name}: {ready}");
            let (status, body) =
                server.post("/v1/embeddings", &json!({"input": reference["texts"]}));
            assert_eq!(status, 200, "{body}");
            let got = vectors(&body);
            let mut moved = 0f64;
            // tiny-gte pools one token (CLS), which averages nothing away: transformers' own
            // GteModel in bf16 is at cosine 0.9922 of its fp32 (measured), ember at 0.9927.
            let min = match (dtype, *name) {
                ("fp16", _) => 0.9995,
                (_, "tiny-gte") => 0.99,
                _ => 0.995,
            };
            let mut worst = 1f64;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let c = cosine(g, w);
                worst = worst.min(c);
                assert!(c >= min, "{name} in {dtype}: text {i}: cosine {c}");
                for (a, b) in g.iter().zip(w) {
                    moved = moved.max((*a as f64 - *b as f64).abs());
                }
            }
            eprintln!("{name} {dtype}: worst cosine {worst:.6}, largest difference {moved:.1e}");
            // The reduced precision really ran: fp32 reproduces the reference to ~1e-7.
            assert!(moved >= 1e-5, "{name} in {dtype}: within {moved:e} of fp32");
        }
    }
}
