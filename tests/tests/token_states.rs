//! Token states (plugin ABI 3.1) over TEI's `/embed_all`: the torch backend's states pool to the
//! reference embeddings of each architecture; the liar's are its table's rows; a plugin built
//! against ABI 3.0 still loads and serves embeddings, and refuses token states by name.

use ember_e2e::liar::LiarModel;
use ember_e2e::parity::{cosine, vectors};
use ember_e2e::*;
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

/// The pooling a fixture's `1_Pooling/config.json` names: `mean`, `cls` or `lasttoken`.
fn pooling_of(fixture_name: &str) -> String {
    let path = fixture(fixture_name).join("1_Pooling/config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    if let Some(mode) = cfg["pooling_mode"].as_str() {
        return mode.to_string();
    }
    for (key, mode) in [
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_lasttoken", "lasttoken"),
        ("pooling_mode_mean_tokens", "mean"),
    ] {
        if cfg[key] == json!(true) {
            return mode.into();
        }
    }
    panic!("{}: no pooling mode ember's test knows", path.display())
}

/// Pools one input's token states as sentence-transformers' `Pooling` does.
fn pool(mode: &str, tokens: &[Vec<f32>]) -> Vec<f32> {
    match mode {
        "cls" => tokens[0].clone(),
        "lasttoken" => tokens[tokens.len() - 1].clone(),
        "mean" => {
            let mut v = vec![0f32; tokens[0].len()];
            for t in tokens {
                v.iter_mut().zip(t).for_each(|(o, x)| *o += x);
            }
            v.iter().map(|x| x / tokens.len() as f32).collect()
        }
        other => panic!("pooling {other}"),
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
        let server = serve_fixtures("torch", &[name], &[]);
        let (status, models) = server.get("/v1/models");
        assert_eq!(status, 200);
        let caps = &models["data"][0]["capabilities"];
        assert_eq!(caps, &json!(["embed", "token_states"]), "{name}: {models}");
        let reference = reference(name);
        let texts: Vec<&Value> = reference["texts"]
            .as_array()
            .unwrap()
            .iter()
            .take(4)
            .collect();
        let (status, body) = server.post("/embed_all", &json!({"inputs": texts}));
        assert_eq!(status, 200, "{name}: {body}");
        let got = states(&body);
        assert_eq!(got.len(), texts.len(), "{name}");
        let mode = pooling_of(name);
        for (i, tokens) in got.iter().enumerate() {
            if let Some(count) = reference["token_counts"][i].as_u64() {
                assert_eq!(
                    tokens.len() as u64,
                    count,
                    "{name} text {i}: one state per token"
                );
            }
            let want: Vec<f32> = reference["embeddings"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let c = cosine(&pool(&mode, tokens), &want);
            assert!(
                c > 0.99999,
                "{name} text {i}: {mode} of the states at cosine {c}"
            );
        }
    }
}

#[test]
fn models_without_token_states_refuse_embed_all_naming_the_capability() {
    let server = serve_fixtures("torch", &["tiny-rerank-bert"], &[]);
    let (status, body) = server.post("/embed_all", &json!({"inputs": "hello"}));
    assert_eq!(status, 422, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("'token_states' capability"), "{message}");
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
    let old = old_abi_dir();
    assert!(
        old.join("libember_liar.so").exists(),
        "{}: build it with scripts/test.sh (the liar with the abi-3-0 feature)",
        old.display()
    );
    let model = LiarModel::create("abi-3-0", true);
    let dir = model.dir.display().to_string();
    let plugin_dir = old.display().to_string();
    let server = Server::start(&[
        ("BACKEND", "liar"),
        ("MODEL_NAMES", &dir),
        ("PLUGIN_DIR", &plugin_dir),
    ]);
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
    let plugin = old.join("libember_liar.so");
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
