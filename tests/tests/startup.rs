//! Start-up: configuration errors, plugin discovery, ABI checks, time to first embedding,
//! and graceful shutdown.

use ember_e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn fails_with(env: &[(&str, &str)], code: i32, contains: &[&str]) {
    Server::assert_refused(env, code, contains)
}

#[test]
fn bad_settings_stop_startup_with_one_line_naming_the_variable() {
    let model = fixture("tiny-bert-cls").display().to_string();
    fails_with(&[], 2, &["missing MODEL_NAMES"]);
    fails_with(
        &[("MODEL_NAMES", &model), ("DTYPES", "fp64")],
        2,
        &["DTYPES=\"fp64\"", "fp16"],
    );
    fails_with(
        &[("MODEL_NAMES", &model), ("BATCH_SIZES", "8;8")],
        2,
        &["BATCH_SIZES", "MODEL_NAMES (1)"],
    );
    fails_with(
        &[("MODEL_NAMES", &model), ("DEVICE", "tpu")],
        2,
        &["DEVICE=\"tpu\"", "cuda:N"],
    );
    fails_with(&[("MODEL_NAMES", &model), ("PORT", "http")], 2, &["PORT"]);
    fails_with(
        &[("MODEL_NAMES", &model), ("HOST", "0.0.0.0:8000")],
        2,
        &["HOST=\"0.0.0.0:8000\"", "IP address"],
    );
}

#[test]
fn a_settings_file_with_an_unknown_key_stops_startup_naming_it() {
    let dir = std::env::temp_dir().join(format!("ember-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ember.toml");
    std::fs::write(&file, "batch_size = 8\n").unwrap();
    let model = fixture("tiny-bert-cls").display().to_string();
    let path = file.display().to_string();
    fails_with(
        &[("MODEL_NAMES", &model), ("EMBER_CONFIG", &path)],
        2,
        &[
            "unknown setting \"batch_size\"",
            "did you mean \"batch_sizes\"",
            &path,
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_backend_is_refused_listing_the_plugins_found() {
    let model = fixture("tiny-bert-cls").display().to_string();
    fails_with(
        &[("MODEL_NAMES", &model), ("BACKEND", "tensorrt")],
        1,
        &[
            "BACKEND=tensorrt",
            "libember_tensorrt.so",
            "plugins found: ",
            "optimum",
            "torch",
        ],
    );
}

#[test]
fn a_plugin_built_for_another_abi_major_is_refused_naming_file_and_versions() {
    let built = bin_dir().join("libember_abimismatch.so");
    assert!(
        built.is_file(),
        "{} missing: build ember-abi-mismatch",
        built.display()
    );
    let dir = std::env::temp_dir().join(format!("ember-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&built, dir.join("libember_old.so")).unwrap();
    let model = fixture("tiny-bert-cls").display().to_string();
    let dir_s = dir.display().to_string();
    let major = ember_plugin_api::ABI_MAJOR;
    let expected = format!("this ember expects ABI {}", ember_plugin_api::ABI_VERSION);
    let built_for = format!("plugin ABI {}.0", major + 1);
    fails_with(
        &[
            ("MODEL_NAMES", &model),
            ("BACKEND", "old"),
            ("PLUGIN_DIR", &dir_s),
        ],
        1,
        &["libember_old.so", &built_for, &expected],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_without_onnx_weights_is_refused_naming_what_was_looked_for() {
    let dir = std::env::temp_dir().join(format!("ember-noonnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tiny-bert-cls");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let d = dir.display().to_string();
    fails_with(
        &[
            ("MODEL_NAMES", &d),
            ("BACKEND", "optimum"),
            ("DTYPES", "fp16"),
        ],
        1,
        &["onnx/model_fp16.onnx", "model_fp16.onnx"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn start_to_first_embedding_is_fast_and_sigterm_exits_cleanly() {
    let env = optimum_env(&fixture("all-MiniLM-L6-v2"));
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let server = Server::start(&env_refs(&env));
        let (status, body) = server.post("/v1/embeddings", &json!({"input": "first"}));
        assert_eq!(status, 200, "{body}");
        times.push(t0.elapsed());
        assert_eq!(server.terminate(), Some(0), "SIGTERM exits 0");
    }
    times.sort();
    let median = times[1];
    eprintln!("start to first embedding (all-MiniLM-L6-v2, CPU): median {median:?} of {times:?}");
    // The product target is 2 s on a quiet machine; the bound here leaves room for a loaded CI.
    assert!(
        median < Duration::from_secs(6),
        "median start-up {median:?}"
    );
}

/// A port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn rp_api_flags_choose_the_address_over_host_and_port() {
    let model = fixture("tiny-bert-cls").display().to_string();
    let (flag_port, env_port) = (free_port(), free_port());
    let env_port_s = env_port.to_string();
    let flag_port_s = flag_port.to_string();
    // The worker's own command line: `--rp_api_host=...` and `--rp_api_port N`.
    let server = Server::start_with_args(
        &[
            ("MODEL_NAMES", &model),
            ("HOST", "0.0.0.0"),
            ("PORT", &env_port_s),
        ],
        &[
            "--rp_serve_api",
            "--rp_api_host=127.0.0.1",
            "--rp_api_port",
            &flag_port_s,
        ],
    );
    assert_eq!(server.url, format!("http://127.0.0.1:{flag_port}"));
    let (status, body) = server.post("/v1/embeddings", &json!({"input": "hello world"}));
    assert_eq!(status, 200, "{body}");
    // Nothing listens on the port the environment named.
    let refused = client()
        .get(format!("http://127.0.0.1:{env_port}/health"))
        .send();
    assert!(refused.is_err(), "PORT={env_port} was bound too");
}
