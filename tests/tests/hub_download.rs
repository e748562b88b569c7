//! The hf-hub download path, against a local server that serves a fixture model in the
//! Hugging Face hub's URL layout (repository info, `resolve` with ranges, etag and commit
//! headers).

use ember_e2e::hub::FakeHub;
use ember_e2e::*;
use serde_json::json;

#[test]
fn downloads_only_needed_files_through_hf_endpoint_then_serves_from_cache_without_the_hub() {
    let mut hub = FakeHub::start(&[("test-org/tiny-bert-cls", fixture("tiny-bert-cls"))]);
    let endpoint = hub.endpoint.clone();
    let home = std::env::temp_dir().join(format!("ember-hf-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let home_s = home.display().to_string();
    let base = [
        ("MODEL_NAMES", "test-org/tiny-bert-cls"),
        ("BACKEND", "optimum"),
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    let mut online = base.to_vec();
    online.push(("HF_HUB_OFFLINE", "0"));
    let server = Server::start(&online);
    assert!(
        server.log.iter().any(|l| l.contains("downloading")),
        "download progress is logged"
    );
    // Every reference text, the long one included: a download that missed the model's settings
    // (max_seq_length, pooling) would give other vectors.
    let reference = reference("tiny-bert-cls");
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let matches_reference = |server: &Server, what: &str| {
        let (status, body) = server.post("/v1/embeddings", &json!({"input": reference["texts"]}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "test-org/tiny-bert-cls");
        for (i, (got, want)) in vectors(&body).iter().zip(&expected).enumerate() {
            let c = cosine(got, want);
            assert!(
                c >= 0.9999,
                "{what}: text {i}: cosine {c} with the reference"
            );
        }
    };
    matches_reference(&server, "downloaded");
    drop(server);

    let fetched = hub.fetched("test-org/tiny-bert-cls");
    for needed in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "onnx/model.onnx",
    ] {
        assert!(
            fetched.iter().any(|f| f == needed),
            "{needed} not fetched: {fetched:?}"
        );
    }
    for unwanted in [
        "model.safetensors",
        "reference.json",
        "vocab.txt",
        "README.md",
    ] {
        assert!(
            !fetched.iter().any(|f| f == unwanted),
            "{unwanted} fetched needlessly: {fetched:?}"
        );
    }

    // The hub goes away; with HF_HUB_OFFLINE=1 the cache alone serves the model.
    hub.stop();
    // Online but the hub is unreachable: the cached copy serves, with a warning.
    let server = Server::start(&online);
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("using the cached copy")),
        "falling back to the cache is logged"
    );
    matches_reference(&server, "cached, hub unreachable");
    drop(server);

    let mut offline = base.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    let server = Server::start(&offline);
    matches_reference(&server, "offline");
    drop(server);

    // Offline with a model that is not cached: a clear start-up error.
    let missing = [
        ("MODEL_NAMES", "test-org/not-cached"),
        ("BACKEND", "optimum"),
        ("HF_HOME", home_s.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    match Server::try_start(&missing) {
        Ok(_) => panic!("should fail"),
        Err(f) => assert!(
            f.stderr.contains("test-org/not-cached is not in the cache"),
            "{}",
            f.stderr
        ),
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_stanford_colbert_checkpoint_downloads_its_settings_and_projection_with_any_backend() {
    // optimum runs onnx/model.onnx; the host still needs artifact.metadata and the
    // projection (`linear.weight`) that colbert-ai keeps in model.safetensors.
    let name = "colbert-ir/tiny-colbert-stanford";
    let mut hub = FakeHub::start(&[(name, fixture("tiny-colbert-stanford"))]);
    let endpoint = hub.endpoint.clone();
    let home = std::env::temp_dir().join(format!("ember-hf-stanford-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let home_s = home.display().to_string();
    let server = Server::start(&[
        ("MODEL_NAMES", name),
        ("BACKEND", "optimum"),
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_OFFLINE", "0"),
    ]);
    let reference = reference("tiny-colbert-stanford");
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": reference["texts"][1], "input_type": "query"}),
    );
    assert_eq!(status, 200, "{body}");
    let got = body["data"][0]["embedding"].as_array().unwrap();
    let want = reference["queries"][1].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "one vector per query position");
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
            let d = (a.as_f64().unwrap() - b.as_f64().unwrap()).abs();
            assert!(d < 1e-4, "a query value differs by {d}");
        }
    }
    drop(server);
    let fetched = hub.fetched(name);
    for needed in ["artifact.metadata", "model.safetensors", "onnx/model.onnx"] {
        assert!(
            fetched.iter().any(|f| f == needed),
            "{needed} not fetched: {fetched:?}"
        );
    }
    hub.stop();
    let _ = std::fs::remove_dir_all(&home);
}
