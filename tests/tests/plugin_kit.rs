//! The kit for third-party plugins: `ember plugin check` on broken plugins, and a plugin built
//! from the guide's walk-through alone, outside the workspace.

use ember_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `ember plugin check`; returns the exit code and the report.
fn check(plugin: &Path, model: Option<&Path>, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = command(env);
    cmd.arg("plugin").arg("check").arg(plugin);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let out = cmd.output().expect("run ember plugin check");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code().unwrap_or(-1), report)
}

fn fail_lines(report: &str) -> Vec<&str> {
    report.lines().filter(|l| l.contains("FAIL")).collect()
}

#[test]
fn the_repository_plugins_pass_the_checker() {
    let cases = [
        ("optimum", "all-MiniLM-L6-v2"),
        ("optimum", "tiny-rerank-xlmr"),
        ("optimum", "tiny-clip"),
        ("optimum", "tiny-clip-split"),
        ("candle", "all-MiniLM-L6-v2"),
        ("candle", "tiny-bert-lasttoken"),
    ];
    for (backend, model) in cases {
        let plugin = bin_dir().join(format!("libember_{backend}.so"));
        let (code, report) = check(&plugin, Some(&fixture(model)), &[]);
        assert_eq!(code, 0, "{backend} with {model}:\n{report}");
        assert!(
            report.contains("PASS  parity"),
            "{backend} {model}: parity ran:\n{report}"
        );
        assert!(fail_lines(&report).is_empty(), "{report}");
    }
}

#[test]
fn broken_plugins_fail_the_checker_with_messages_naming_the_problem() {
    let mismatch = bin_dir().join("libember_abimismatch.so");
    let (code, report) = check(&mismatch, None, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("ABI 2.0") && report.contains("expects ABI 1.0"),
        "{report}"
    );

    let broken = bin_dir().join("libember_broken.so");
    let model = fixture("tiny-bert-cls");
    let (code, report) = check(&broken, Some(&model), &[("EMBER_BROKEN", "panic")]);
    assert_eq!(code, 1, "{report}");
    let fails = fail_lines(&report);
    assert!(
        fails
            .iter()
            .any(|l| l.contains("output shape") && l.contains("panicked")),
        "{report}"
    );
    assert!(
        report.contains("index out of bounds"),
        "the panic message is shown:\n{report}"
    );

    let (code, report) = check(&broken, Some(&model), &[("EMBER_BROKEN", "shape")]);
    assert_eq!(code, 1, "{report}");
    assert!(
        fail_lines(&report)
            .iter()
            .any(|l| l.contains("wrong output shape: 4 rows of 4 values")),
        "{report}"
    );
}

/// The fenced block that follows `<!-- walkthrough: NAME -->` in the guide.
fn walkthrough(guide: &str, name: &str) -> String {
    let marker = format!("<!-- walkthrough: {name} -->");
    let after = guide.split(&marker).nth(1).expect("walk-through marker");
    let body = after.split_once('\n').unwrap().1;
    let body = body.split_once('\n').unwrap().1; // the opening fence
    body.split("\n```").next().unwrap().to_string() + "\n"
}

#[test]
fn a_plugin_written_from_the_guide_builds_loads_and_serves() {
    let guide = std::fs::read_to_string(repo_root().join("plugin-api/README.md")).unwrap();
    let dir = std::env::temp_dir().join(format!("ember-guide-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = walkthrough(&guide, "Cargo.toml").replace(
        "../ember/plugin-api",
        &repo_root().join("plugin-api").display().to_string(),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), walkthrough(&guide, "src/lib.rs")).unwrap();
    // The workspace's lock file pins the shared dependencies to the versions already built.
    std::fs::copy(repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target: PathBuf = bin_dir().parent().unwrap().join("guide-plugin");
    let build = Command::new("cargo")
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&dir)
        .output()
        .expect("run cargo");
    assert!(
        build.status.success(),
        "the guide's plugin does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let plugin_dir = target.join("release");
    let plugin = plugin_dir.join("libember_static.so");

    // The checker passes it on a model without reference outputs (it is not a transformer).
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in std::fs::read_dir(fixture("tiny-bert-cls"))
        .unwrap()
        .flatten()
    {
        let name = f.file_name();
        if f.path().is_file() && name != "reference.json" {
            std::fs::copy(f.path(), model.join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
    std::fs::copy(
        fixture("tiny-bert-cls").join("1_Pooling/config.json"),
        model.join("1_Pooling/config.json"),
    )
    .unwrap();
    let (code, report) = check(&plugin, Some(&model), &[]);
    assert_eq!(code, 0, "{report}");

    // And the host serves with it.
    let model_s = model.display().to_string();
    let plugin_dir_s = plugin_dir.display().to_string();
    let server = Server::start(&[
        ("MODEL_NAMES", model_s.as_str()),
        ("BACKEND", "static"),
        ("PLUGIN_DIR", plugin_dir_s.as_str()),
    ]);
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": ["a static embedding", "another text", "a static embedding"]}),
    );
    assert_eq!(status, 200, "{body}");
    let v = vectors(&body);
    assert_eq!(v[0].len(), 32);
    assert!((norm(&v[0]) - 1.0).abs() < 1e-4);
    assert_eq!(v[0], v[2], "same text, same vector");
    assert!(
        cosine(&v[0], &v[1]) < 0.9999,
        "different texts, different vectors"
    );
    let (_, models) = server.get("/v1/models");
    assert_eq!(models["data"][0]["backend"], "static");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
