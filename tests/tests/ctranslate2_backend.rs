//! The ctranslate2 backend over HTTP: parity with sentence-transformers in fp32 and int8, the
//! conversion of Hugging Face checkpoints (cached in HF_HOME, next to hub snapshots),
//! repositories already in CTranslate2's format, rerankers with their head, and clear errors
//! for what it does not run.

use ember_e2e::hub::FakeHub;
use ember_e2e::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A fresh HF_HOME for one test.
fn hf_home(test: &str) -> PathBuf {
    let home = std::env::temp_dir().join(format!("ember-ct2-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    home
}

fn start(model: &Path, home: &Path, dtype: &str) -> Result<Server, Failed> {
    let mut env = backend_env("ctranslate2", model);
    env.push(("HF_HOME".into(), home.display().to_string()));
    env.push(("DTYPES".into(), dtype.into()));
    Server::try_start(&env_refs(&env))
}

fn serve(model: &str, home: &Path, dtype: &str) -> Server {
    serve_dir(&fixture(model), home, dtype)
}

/// Serves the model directory `dir` in `dtype` with `home` as HF_HOME.
fn serve_dir(dir: &Path, home: &Path, dtype: &str) -> Server {
    match start(dir, home, dtype) {
        Ok(s) => s,
        Err(f) => panic!("ember did not start (exit {:?}):\n{}", f.code, f.stderr),
    }
}

/// Cosines of the server's embeddings of the reference texts against sentence-transformers.
fn cosines(server: &Server, reference: &Value) -> Vec<f64> {
    let want = matrix(&reference["embeddings"]);
    let got = embed_texts(server, reference);
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(g, w)| cosine(g, w)).collect()
}

/// Directories under `dir` (recursively) that hold a `model.bin`.
fn model_bins(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(model_bins(&p));
        } else if p.file_name().is_some_and(|n| n == "model.bin") {
            out.push(dir.to_path_buf());
        }
    }
    out
}

#[test]
fn minilm_matches_sentence_transformers_in_fp32_and_int8() {
    let home = hf_home("parity");
    let reference = reference("all-MiniLM-L6-v2");

    let server = serve("all-MiniLM-L6-v2", &home, "fp32");
    let fp32 = cosines(&server, &reference);
    let worst = fp32.iter().copied().fold(1.0, f64::min);
    assert!(worst >= 0.9999, "fp32 cosines {fp32:?}");
    let (_, models) = server.get("/v1/models");
    assert_eq!(models["data"][0]["backend"], "ctranslate2");
    drop(server);

    let server = serve("all-MiniLM-L6-v2", &home, "int8");
    assert!(
        server.log.iter().any(|l| l.contains("as int8")),
        "the compute type is logged"
    );
    let int8 = cosines(&server, &reference);
    // Sentences (two words or more) hold to 0.99; a lone token or punctuation ("a", "?!") is
    // where int8 quantisation shows most (CTranslate2's own Python API gives the same values).
    for (i, text) in reference["texts"].as_array().unwrap().iter().enumerate() {
        let words = text.as_str().unwrap().split_whitespace().count();
        let min = if words >= 2 { 0.99 } else { 0.97 };
        assert!(
            int8[i] >= min,
            "int8 text {i} ({words} words): cosine {}",
            int8[i]
        );
    }
    eprintln!("fp32 worst cosine {worst:.6}; int8 cosines {int8:.4?}");
}

/// On a CPU the encoder is one replica per thread, and a call of several rows runs as parts
/// on the replicas at once: every row comes out as it does in a call of its own.
#[test]
fn a_call_in_parts_on_the_replicas_answers_each_row_as_alone() {
    let home = hf_home("replicas");
    let mut env = backend_env("ctranslate2", &fixture("all-MiniLM-L6-v2"));
    env.push(("HF_HOME".into(), home.display().to_string()));
    env.push(("DTYPES".into(), "fp32".into()));
    env.push(("INTRA_OP_THREADS".into(), "3".into()));
    let server = Server::start(&env_refs(&env));
    if test_device() == "cpu" {
        assert!(
            server
                .log
                .iter()
                .any(|l| l.contains("3 replica(s) of one thread")),
            "the replicas are logged: {:?}",
            server.log
        );
    }
    // Texts of about one length, which batching keeps in one call (cut into three parts of
    // two rows, each part padded to its own longest row).
    let texts: Vec<String> = (0..6)
        .map(|i| {
            let words = [
                "the", "server", "answers", "every", "caller", "in", "turn", "today",
            ];
            (0..8 + i % 3)
                .map(|j| words[(i + j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    // Calls of more rows than `le` so far.
    let calls_over = |le: &str| -> f64 {
        let (_, metrics) = server.get("/metrics");
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        let bucket = |le: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with("ember_batch_size_bucket") && l.contains(le))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no batch size bucket {le}: {metrics}"))
        };
        bucket("le=\"+Inf\"") - bucket(&format!("le=\"{le}\""))
    };
    let before = calls_over("4");
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": texts }));
    assert_eq!(status, 200, "{body}");
    let together = vectors(&body);
    assert!(
        calls_over("4") > before,
        "the six texts ran in one call of more than four rows"
    );
    for (i, text) in texts.iter().enumerate() {
        let (status, body) = server.post("/v1/embeddings", &json!({ "input": [text] }));
        assert_eq!(status, 200, "{body}");
        let c = cosine(&together[i], &vectors(&body)[0]);
        assert!(
            c >= 0.99999,
            "text {i}: cosine {c} between its call alone and in parts"
        );
    }
    // A lone row of 256 tokens (the model's limit) runs on the replica of every thread, and
    // comes out as it does in a call of two rows, one per single-threaded replica.
    let long = |first: &str| -> String {
        (0..400)
            .map(|i| [first, "server", "answers", "slowly"][i % 4])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let before = calls_over("1");
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({ "input": [long("every"), long("each")] }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        calls_over("1") > before,
        "the two long texts ran in one call"
    );
    let pair = vectors(&body);
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": [long("every")] }));
    assert_eq!(status, 200, "{body}");
    let c = cosine(&pair[0], &vectors(&body)[0]);
    assert!(
        c >= 0.99999,
        "a lone long row on every thread: cosine {c} to it in parts"
    );
    if test_device() == "cpu" {
        assert!(
            server.log.iter().any(|l| l.contains("one of 3 threads")),
            "the replica of every thread is logged: {:?}",
            server.log
        );
    }
    // The reference texts (3 to 256 tokens) in parts too, against sentence-transformers.
    let reference = reference("all-MiniLM-L6-v2");
    assert_parity(
        &embed_texts(&server, &reference),
        &matrix(&reference["embeddings"]),
        0.9999,
        "in parts",
    );
}

#[test]
fn conversion_is_cached_in_hf_home_and_reused() {
    let home = hf_home("cache");
    let server = serve("all-MiniLM-L6-v2", &home, "fp32");
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("converted") && l.contains("to CTranslate2")),
        "the first start converts"
    );
    drop(server);
    let converted = model_bins(&home.join("ctranslate2"));
    assert_eq!(converted.len(), 1, "one conversion in {}", home.display());
    for f in ["model.bin", "config.json", "vocabulary.json"] {
        assert!(converted[0].join(f).is_file(), "{f} written");
    }
    // No temporary directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(home.join("ctranslate2"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());

    let server = serve("all-MiniLM-L6-v2", &home, "fp32");
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("conversion cached in")),
        "the second start reuses the conversion"
    );
    assert!(!server.log.iter().any(|l| l.contains("to CTranslate2 in")));
    let worst = cosines(&server, &reference("all-MiniLM-L6-v2"))
        .into_iter()
        .fold(1.0, f64::min);
    assert!(worst >= 0.9999);
}

#[test]
fn hub_checkpoint_is_converted_next_to_its_snapshot() {
    let hub = FakeHub::start(&[(
        "sentence-transformers/all-MiniLM-L6-v2",
        fixture("all-MiniLM-L6-v2"),
    )]);
    let home = hf_home("hub");
    let home_s = home.display().to_string();
    let server = Server::start(&[
        ("MODEL_NAMES", "sentence-transformers/all-MiniLM-L6-v2"),
        ("BACKEND", "ctranslate2"),
        ("DTYPES", "fp32"),
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_HUB_OFFLINE", "0"),
    ]);
    let repo = home
        .join("hub")
        .join("models--sentence-transformers--all-MiniLM-L6-v2");
    let converted = model_bins(&repo.join("ctranslate2"));
    assert_eq!(
        converted.len(),
        1,
        "conversion next to the snapshot in {}",
        repo.display()
    );
    assert!(!home.join("ctranslate2").exists());
    let worst = cosines(&server, &reference("all-MiniLM-L6-v2"))
        .into_iter()
        .fold(1.0, f64::min);
    assert!(worst >= 0.9999);
}

#[test]
fn repository_already_in_ctranslate2_format_is_read_as_is() {
    let home = hf_home("native");
    let server = serve("ct2-all-MiniLM-L6-v2", &home, "fp32");
    assert!(!server.log.iter().any(|l| l.contains("to CTranslate2 in")));
    let worst = cosines(&server, &reference("all-MiniLM-L6-v2"))
        .into_iter()
        .fold(1.0, f64::min);
    assert!(worst >= 0.9999, "official converter's model: {worst}");
    assert!(model_bins(&home).is_empty(), "nothing converted");
}

#[test]
fn rerank_scores_match_transformers() {
    let home = hf_home("rerank");
    for model in ["tiny-rerank-bert", "tiny-rerank-xlmr"] {
        assert_rerank_matches_reference(&serve(model, &home, "fp32"), model, 1e-4);
    }
}

#[test]
fn images_and_unsupported_models_get_clear_errors() {
    let home = hf_home("refusals");
    // A text model asked for image embeddings.
    let server = serve("all-MiniLM-L6-v2", &home, "fp32");
    let got = server.post(
        "/v1/embeddings",
        &json!({"input": [data_uri("photo.png")], "modality": "image"}),
    );
    assert_error_contains(got, 400, &["image"]);
    drop(server);

    // A CLIP model: the backend does not run it, and start-up says so.
    let failed = start(&fixture("tiny-clip"), &home, "auto")
        .err()
        .expect("a CLIP model must not start on ctranslate2");
    assert!(
        failed
            .stderr
            .contains("is a clip model, which backend ctranslate2 does not run"),
        "{}",
        failed.stderr
    );

    // fp16 on a CPU: CTranslate2 has no fp16 kernels there.
    if test_device() == "cpu" {
        let failed = start(&fixture("all-MiniLM-L6-v2"), &home, "fp16")
            .err()
            .expect("fp16 on the CPU must be refused");
        assert!(
            failed
                .stderr
                .contains("DTYPES=fp16: CTranslate2 has no float16 kernels on"),
            "{}",
            failed.stderr
        );
    }

    // An architecture the conversion does not know.
    let odd = home.join("odd-model");
    for dir in ["", "1_Pooling"] {
        std::fs::create_dir_all(odd.join(dir)).unwrap();
        for f in std::fs::read_dir(fixture("tiny-bert-cls").join(dir))
            .unwrap()
            .flatten()
        {
            if f.path().is_file() {
                std::fs::copy(f.path(), odd.join(dir).join(f.file_name())).unwrap();
            }
        }
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(odd.join("config.json")).unwrap()).unwrap();
    config["model_type"] = json!("funnel");
    std::fs::write(odd.join("config.json"), config.to_string()).unwrap();
    let failed = start(&odd, &home, "fp32")
        .err()
        .expect("an unknown architecture must be refused");
    assert!(
        failed.stderr.contains("funnel")
            && failed
                .stderr
                .contains("is not one of them (use the torch or optimum backend"),
        "{}",
        failed.stderr
    );
}

/// Copies the files of `src` and of its subdirectories into `dst` (created).
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if from.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// Whether the start that wrote `log` converted the checkpoint (else it reused a conversion).
fn converted_at_start(log: &[String]) -> bool {
    let fresh = log.iter().any(|l| l.contains("to CTranslate2 in"));
    let cached = log.iter().any(|l| l.contains("conversion cached in"));
    assert!(
        fresh != cached,
        "one of converted / cached is logged: {log:#?}"
    );
    fresh
}

#[test]
fn conversion_follows_changes_to_the_checkpoint() {
    // tiny-bert-cls and tiny-bert-lasttoken have the same config.json and weight files of the
    // same size (same architecture, other random weights). The model directory starts as
    // tiny-bert-lasttoken with tiny-bert-cls's weights; swapping in tiny-bert-lasttoken's own
    // weights must give tiny-bert-lasttoken's reference, which only a new conversion can.
    let home = hf_home("changes");
    let reference = reference("tiny-bert-lasttoken");
    let want: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let model = home.join("tiny-bert");
    copy_tree(&fixture("tiny-bert-lasttoken"), &model);
    let weights = model.join("model.safetensors");
    std::fs::copy(fixture("tiny-bert-cls").join("model.safetensors"), &weights).unwrap();
    let worst_and_best = |got: &[Vec<f32>], want: &[Vec<f32>]| {
        let c: Vec<f64> = got.iter().zip(want).map(|(g, w)| cosine(g, w)).collect();
        let worst = c.iter().copied().fold(1.0, f64::min);
        let best = c.iter().copied().fold(-1.0, f64::max);
        (worst, best)
    };

    let server = serve_dir(&model, &home, "fp32");
    assert!(converted_at_start(&server.log), "the first start converts");
    let other_weights = embed_texts(&server, &reference);
    let (_, other_best) = worst_and_best(&other_weights, &want);
    assert!(
        other_best < 0.99,
        "with tiny-bert-cls's weights no vector may be near tiny-bert-lasttoken's reference \
         (best cosine {other_best})"
    );
    drop(server);

    // New weights, same size: converted again, and served.
    std::fs::copy(
        fixture("tiny-bert-lasttoken").join("model.safetensors"),
        &weights,
    )
    .unwrap();
    let server = serve_dir(&model, &home, "fp32");
    assert!(
        converted_at_start(&server.log),
        "changed weights must be converted again, not served from the old conversion"
    );
    let own_weights = embed_texts(&server, &reference);
    let (worst, _) = worst_and_best(&own_weights, &want);
    assert!(
        worst >= 0.9999,
        "the new weights are served: worst cosine {worst}"
    );
    drop(server);
    assert_eq!(model_bins(&home.join("ctranslate2")).len(), 2);

    // A changed config.json (the activation the conversion writes into model.bin): converted
    // again, and the vectors move with it.
    let config_path = model.join("config.json");
    let config = std::fs::read(&config_path).unwrap();
    let mut relu: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(relu["hidden_act"], "gelu");
    relu["hidden_act"] = json!("relu");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&relu).unwrap()).unwrap();
    let server = serve_dir(&model, &home, "fp32");
    assert!(
        converted_at_start(&server.log),
        "a changed config.json must be converted again"
    );
    let (_, relu_best) = worst_and_best(&embed_texts(&server, &reference), &own_weights);
    assert!(
        relu_best < 0.999,
        "hidden_act relu must move every vector away from gelu's (best cosine {relu_best})"
    );
    drop(server);

    // The original config.json back (rewritten: a new modification time, the old content):
    // the conversion of that content is reused. config.json is keyed by content.
    std::fs::write(&config_path, &config).unwrap();
    let server = serve_dir(&model, &home, "fp32");
    assert!(
        !converted_at_start(&server.log),
        "the same config.json content reuses its conversion"
    );
    let (worst, _) = worst_and_best(&embed_texts(&server, &reference), &want);
    assert!(
        worst >= 0.9999,
        "back to the reference: worst cosine {worst}"
    );
    assert_eq!(model_bins(&home.join("ctranslate2")).len(), 3);
    eprintln!(
        "other weights: best cosine {other_best:.4}; relu: best cosine {relu_best:.4} to gelu's"
    );
}
