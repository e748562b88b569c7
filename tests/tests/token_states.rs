//! Token states (plugin ABI 3.1) over TEI's `/embed_all`: each backend's states pool to the
//! reference embeddings of each architecture; the liar's are its table's rows; a plugin built
//! against ABI 3.0 still loads and serves embeddings, and refuses token states by name.

use ember_e2e::liar::LiarModel;
use ember_e2e::parity::{cosine, vectors};
use ember_e2e::*;
use ember_host::models::manifest;
use ember_plugin_api::{pooling, Pooling};
use serde_json::{json, Value};

/// `[inputs][tokens][dim]` of an `/embed_all` answer.
fn states(body: &Value) -> Vec<Vec<Vec<f32>>> {
    body.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|input| {
            input
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The pooling of a fixture's `1_Pooling/config.json`, as the host reads it.
fn pooling_of(fixture_name: &str) -> Pooling {
    let path = fixture(fixture_name).join("1_Pooling/config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest::pooling_of(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Pools one input's token states as sentence-transformers' `Pooling` does.
fn pool(mode: Pooling, tokens: &[Vec<f32>]) -> Vec<f32> {
    let flat: Vec<f32> = tokens.concat();
    pooling::pool(
        mode,
        &flat,
        &vec![1; tokens.len()],
        1,
        tokens.len(),
        tokens[0].len(),
    )
}

/// Serves fixture `name` with `backend` (and `env`), and checks that its token states over
/// `/embed_all` are one per token and pool, as the fixture pools, to the reference embeddings.
fn assert_states_pool_to_reference(backend: &str, name: &str, env: &[(&str, &str)]) {
    let server = serve_fixtures(backend, &[name], env);
    let what = format!("{backend} {name}");
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    let caps = &models["data"][0]["capabilities"];
    assert_eq!(caps, &json!(["embed", "token_states"]), "{what}: {models}");
    let reference = reference(name);
    let texts: Vec<&Value> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .take(4)
        .collect();
    let (status, body) = server.post("/embed_all", &json!({"inputs": texts}));
    assert_eq!(status, 200, "{what}: {body}");
    let got = states(&body);
    assert_eq!(got.len(), texts.len(), "{what}");
    let mode = pooling_of(name);
    for (i, tokens) in got.iter().enumerate() {
        if let Some(count) = reference["token_counts"][i].as_u64() {
            assert_eq!(
                tokens.len() as u64,
                count,
                "{what} text {i}: one state per token"
            );
        }
        let want: Vec<f32> = reference["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&pool(mode, tokens), &want);
        assert!(
            c > 0.99999,
            "{what} text {i}: {mode:?} pooling of the states at cosine {c}"
        );
    }
}

#[test]
fn torch_token_states_pool_to_the_reference_embeddings_of_each_architecture() {
    for name in [
        "all-MiniLM-L6-v2",
        "tiny-bert-cls",
        "tiny-mpnet",
        "tiny-deberta",
        "tiny-modernbert",
        "tiny-qwen3",
    ] {
        assert_states_pool_to_reference("torch", name, &[]);
    }
}

#[test]
fn optimum_and_ctranslate2_token_states_pool_to_the_reference_embeddings() {
    for name in ["all-MiniLM-L6-v2", "tiny-modernbert", "tiny-qwen3"] {
        assert_states_pool_to_reference("optimum", name, &[]);
    }
    let home = std::env::temp_dir().join(format!("ember-states-ct2-{}", std::process::id()));
    let home_str = home.display().to_string();
    for name in ["all-MiniLM-L6-v2", "tiny-bert-lasttoken"] {
        assert_states_pool_to_reference(
            "ctranslate2",
            name,
            &[("DTYPES", "fp32"), ("HF_HOME", &home_str)],
        );
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn embed_all_finds_the_model_with_states_refuses_others_and_bounds_its_answer() {
    let server = serve_fixtures(
        "torch",
        &["tiny-rerank-bert", "tiny-clip", "all-MiniLM-L6-v2"],
        &[],
    );
    // Without `model`: the first model that offers token states, not the first embedder.
    let (status, body) = server.post("/embed_all", &json!({"inputs": "Hello, world!"}));
    assert_eq!(status, 200, "{body}");
    let got = states(&body);
    assert_eq!(
        (got[0].len(), got[0][0].len()),
        (6, 384),
        "MiniLM's 6 tokens"
    );
    for refused in ["tiny-rerank-bert", "tiny-clip"] {
        let model = fixture(refused).display().to_string();
        let (status, body) = server.post("/embed_all", &json!({"inputs": "hello", "model": model}));
        assert_eq!(status, 422, "{refused}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("'token_states' capability"), "{message}");
    }
    // 50 texts of 256 tokens of 384 values: 4.9 Mi values, over the bound, refused unrun.
    let long = reference("all-MiniLM-L6-v2")["texts"][4].clone();
    let (status, body) = server.post("/embed_all", &json!({"inputs": vec![long; 50]}));
    assert_eq!(status, 413, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("12800 tokens of 384") && message.contains("fewer or shorter inputs"),
        "{message}"
    );
}

#[test]
fn the_liars_token_states_are_its_table_rows_and_bad_input_is_named() {
    let model = LiarModel::create("states", false);
    let dir = model.dir.display().to_string();
    let server = Server::start(&[("BACKEND", "liar"), ("MODEL_NAMES", &dir)]);
    let texts = ["hello world", "the quick brown fox jumps"];
    let (status, body) = server.post("/embed_all", &json!({"inputs": texts}));
    assert_eq!(status, 200, "{body}");
    let got = states(&body);
    for (text, tokens) in texts.iter().zip(&got) {
        let want = model.expected_states(text);
        assert_eq!(tokens.len(), want.len(), "{text}");
        for (g, w) in tokens.iter().zip(&want) {
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-6, "{text}: {g:?} against {w:?}");
        }
    }
    // One text is a list of one.
    let (status, one) = server.post("/embed_all", &json!({"inputs": "hello world"}));
    assert_eq!(status, 200, "{one}");
    assert_eq!(states(&one)[0], got[0]);
    let (status, body) = server.post("/embed_all", &json!({"inputs": ["fine", 7]}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("inputs[1]"),
        "{body}"
    );
    // Through a RunPod job's openai_route too.
    let (status, job) = server.post(
        "/runsync",
        &json!({"input": {"openai_route": "/embed_all", "openai_input": {"inputs": texts}}}),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "COMPLETED", "{job}");
}

#[test]
fn a_plugin_of_abi_3_0_loads_serves_embeddings_and_has_no_token_states() {
    let model = LiarModel::create("abi-3-0", true);
    let dir = model.dir.display().to_string();
    let server = Server::start(&[("BACKEND", "liar30"), ("MODEL_NAMES", &dir)]);
    let texts = ["hello world", "a cat sat on the mat"];
    let (status, body) = server.post("/v1/embeddings", &json!({"input": texts}));
    assert_eq!(status, 200, "{body}");
    for (text, got) in texts.iter().zip(vectors(&body)) {
        let c = cosine(&got, &model.expected(text));
        assert!(c > 0.99999, "{text}: cosine {c}");
    }
    let (_, models) = server.get("/v1/models");
    assert_eq!(
        models["data"][0]["capabilities"],
        json!(["embed"]),
        "{models}"
    );
    let (status, body) = server.post("/embed_all", &json!({"inputs": texts}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("'token_states' capability"),
        "{body}"
    );
    // The checker reads its version and skips what 3.0 lacks.
    let plugin = bin_dir().join("libember_liar30.so");
    let out = command(&[])
        .args(["plugin", "check"])
        .arg(&plugin)
        .arg("--model")
        .arg(&model.dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("built for plugin ABI 3.0"), "{report}");
    assert!(report.contains("SKIP  token states"), "{report}");
}
