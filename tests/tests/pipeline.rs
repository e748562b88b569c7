//! The sentence-transformers pipeline after pooling: Dense modules applied by the host on
//! every backend (against sentence-transformers' own output), and modules ember does not
//! implement refused at start-up by name instead of skipped.

use ember_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const DENSE: &str = "tiny-bert-dense";

#[test]
fn dense_modules_match_sentence_transformers_on_every_backend() {
    // CTranslate2's BERT is itself about 1e-5 off transformers on these random tiny weights
    // (cosine 0.99999 on tiny-bert-cls, which has no head), and the two Dense modules widen
    // that to about 1e-3 (measured: worst 0.9976); the other backends agree to 1e-6.
    for (backend, min_cosine) in [
        ("optimum", 0.9999),
        ("torch", 0.9999),
        ("candle", 0.9999),
        ("ctranslate2", 0.995),
    ] {
        let home = std::env::temp_dir().join(format!("ember-pipeline-{}", std::process::id()));
        let home_s = home.display().to_string();
        let mut env = backend_env(backend, &fixture(DENSE));
        // ctranslate2 converts the checkpoint into HF_HOME.
        env.push(("HF_HOME".into(), home_s));
        let server = Server::start(&env_refs(&env));
        eprintln!("{backend}: {DENSE}, at cosine {min_cosine} or more");
        server.assert_embeds_reference(DENSE, min_cosine);
        let (_, models) = server.get("/v1/models");
        assert_eq!(
            models["data"][0]["dimensions"], 20,
            "{backend}: the width after the last Dense module: {models}"
        );
        drop(server);
        let _ = std::fs::remove_dir_all(&home);
    }
}

/// A copy of the Dense fixture with its files changed by `edit`.
fn edited_copy(name: &str, edit: impl Fn(&Path)) -> PathBuf {
    let src = fixture(DENSE);
    let dst = std::env::temp_dir().join(format!("ember-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&src, &dst);
    edit(&dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn edit_json(path: &Path, edit: impl Fn(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn refused(model: &Path, needles: &[&str]) {
    Server::assert_refused(&env_refs(&optimum_env(model)), 1, needles)
}

#[test]
fn modules_ember_does_not_implement_are_refused_by_name() {
    // A module type ember does not know.
    let unknown = edited_copy("unknown-module", |dir| {
        edit_json(&dir.join("modules.json"), |m| {
            m[2]["type"] = "sentence_transformers.models.LSTM".into();
        })
    });
    refused(
        &unknown,
        &[
            "modules.json",
            "sentence_transformers.models.LSTM",
            "2_Dense",
        ],
    );
    // An activation that is not a torch.nn class ember implements.
    let activation = edited_copy("dense-activation", |dir| {
        edit_json(&dir.join("3_Dense/config.json"), |c| {
            c["activation_function"] = "my_package.Swish".into();
        })
    });
    refused(&activation, &["3_Dense/config.json", "my_package.Swish"]);
    // Weights only as a PyTorch pickle.
    let pickle = edited_copy("dense-pickle", |dir| {
        std::fs::rename(
            dir.join("2_Dense/model.safetensors"),
            dir.join("2_Dense/pytorch_model.bin"),
        )
        .unwrap();
    });
    refused(&pickle, &["2_Dense/model.safetensors", "pytorch_model.bin"]);
    for dir in [unknown, activation, pickle] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The reference vectors of the fixture's texts under prompt `name`.
fn prompt_reference(name: &str) -> Vec<Vec<f32>> {
    serde_json::from_value(reference(DENSE)["prompts"][name].clone()).unwrap()
}

#[test]
fn prompts_are_applied_as_sentence_transformers_applies_them() {
    let texts = reference(DENSE)["texts"].clone();
    let server = Server::start(&env_refs(&optimum_env(&fixture(DENSE))));
    for name in ["query", "document"] {
        // On the OpenAI route and in a RunPod job alike.
        let (status, body) = server.post(
            "/v1/embeddings",
            &serde_json::json!({"input": texts, "prompt_name": name}),
        );
        assert_eq!(status, 200, "{body}");
        assert_close(&vectors(&body), &prompt_reference(name), name);
        let (status, body) = server.post(
            "/runsync",
            &serde_json::json!({"input": {"input": texts, "prompt_name": name}}),
        );
        assert_eq!(status, 200, "{body}");
        assert_close(&vectors(&body["output"]), &prompt_reference(name), name);
    }
    // Without a prompt name and no default, the texts are embedded bare.
    server.assert_embeds_reference(DENSE, 0.9999);
    // A name the model does not define is refused, listing the ones it does.
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &serde_json::json!({"input": "x", "prompt_name": "passage"}),
        ),
        400,
        &["prompt_name 'passage'", "document, query"],
    );
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &serde_json::json!({"input": "x", "prompt_name": 7}),
        ),
        400,
        &["prompt_name"],
    );
    drop(server);

    // default_prompt_name applies when a request names none; a request may name another.
    let with_default = edited_copy("default-prompt", |dir| {
        edit_json(&dir.join("config_sentence_transformers.json"), |c| {
            c["default_prompt_name"] = "query".into();
        })
    });
    let server = Server::start(&env_refs(&optimum_env(&with_default)));
    let (status, body) = server.post("/v1/embeddings", &serde_json::json!({"input": texts}));
    assert_eq!(status, 200, "{body}");
    assert_close(&vectors(&body), &prompt_reference("query"), "default query");
    let (status, body) = server.post(
        "/v1/embeddings",
        &serde_json::json!({"input": texts, "prompt_name": "document"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_close(
        &vectors(&body),
        &prompt_reference("document"),
        "named document",
    );
    drop(server);

    // A deployment may choose the default (PROMPT_NAMES), over the model's own.
    let dense = fixture(DENSE).display().to_string();
    let server = Server::start(&[
        ("MODEL_NAMES", dense.as_str()),
        ("BACKEND", "optimum"),
        ("PROMPT_NAMES", "document"),
    ]);
    let (status, body) = server.post("/v1/embeddings", &serde_json::json!({"input": texts}));
    assert_eq!(status, 200, "{body}");
    assert_close(
        &vectors(&body),
        &prompt_reference("document"),
        "PROMPT_NAMES",
    );
    drop(server);
    let unknown = [
        ("MODEL_NAMES", dense.as_str()),
        ("BACKEND", "optimum"),
        ("PROMPT_NAMES", "search"),
    ];
    match Server::try_start(&unknown) {
        Ok(_) => panic!("PROMPT_NAMES=search must be refused"),
        Err(f) => assert!(
            f.stderr.contains("PROMPT_NAMES") && f.stderr.contains("document, query"),
            "{}",
            f.stderr
        ),
    }

    // A default that names no prompt is a start-up error.
    let bad_default = edited_copy("bad-default-prompt", |dir| {
        edit_json(&dir.join("config_sentence_transformers.json"), |c| {
            c["default_prompt_name"] = "search".into();
        })
    });
    refused(
        &bad_default,
        &[
            "config_sentence_transformers.json",
            "default_prompt_name",
            "search",
        ],
    );
    for dir in [with_default, bad_default] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
