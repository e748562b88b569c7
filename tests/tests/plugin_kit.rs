//! The kit for third-party plugins: `ember plugin check` on broken plugins and on a plugin that
//! lies in one way at a time (each lie must fail the check it breaks, and its honest mode must
//! pass them all), and a plugin built from the guide's walk-through alone, outside the workspace.

use ember_e2e::liar::LiarModel;
use ember_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `ember plugin check`; returns the exit code and the report.
fn check(plugin: &Path, model: Option<&Path>, env: &[(&str, &str)]) -> (i32, String) {
    check_with(plugin, model, &[], env)
}

/// Runs `ember plugin check` with extra arguments; returns the exit code and the report.
fn check_with(
    plugin: &Path,
    model: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String) {
    let mut cmd = command(env);
    cmd.arg("plugin").arg("check").arg(plugin);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    cmd.args(args);
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
        report.contains(&format!("ABI {}.0", ember_plugin_api::ABI_MAJOR + 1))
            && report.contains(&format!("expects ABI {}", ember_plugin_api::ABI_VERSION)),
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

    // On a model without reference outputs (it is not a transformer), the checker passes it
    // only when parity is skipped explicitly.
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
    // The guide's plugin mean-pools, and refuses the CLS pooling of tiny-bert-cls at load.
    let (code, report) = check(&plugin, Some(&fixture("tiny-bert-cls")), &[]);
    assert_eq!(code, 1, "{report}");
    assert_outcome(&report, "load model", "FAIL", "guide plugin on a CLS model");
    assert!(report.contains("this model's pooling is cls"), "{report}");
    std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
    std::fs::write(
        model.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}).to_string(),
    )
    .unwrap();
    let (code, report) = check(&plugin, Some(&model), &[]);
    assert_eq!(code, 1, "no reference: parity fails\n{report}");
    assert_outcome(&report, "parity", "FAIL", "guide plugin without reference");
    let (code, report) = check_with(&plugin, Some(&model), &["--skip-parity"], &[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("parity was NOT checked"), "{report}");

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

/// The outcome tag (PASS, FAIL, SKIP) of the check `name` in a report, and its line.
fn outcome<'a>(report: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    report.lines().find_map(|l| {
        let (tag, rest) = l.trim_start().split_once("  ")?;
        let (check, _) = rest.split_once(": ")?;
        (check == name).then_some((tag, l))
    })
}

/// Asserts that the check `name` has the outcome `tag` in the report.
fn assert_outcome(report: &str, name: &str, tag: &str, what: &str) {
    let got = outcome(report, name).map(|(t, _)| t);
    assert_eq!(got, Some(tag), "{what}: check {name:?}:\n{report}");
}

/// Checks that always pass for the liar, whatever its lie (it loads, refuses bad input).
const LIAR_SOUND: [&str; 5] = [
    "ABI",
    "capabilities",
    "load model",
    "empty batch",
    "bad batch shape",
];

#[test]
fn the_honest_liar_passes_every_check_including_parity() {
    let liar = bin_dir().join("libember_liar.so");
    let liar_model = LiarModel::create("honest", true);
    let model = liar_model.dir.clone();
    let (code, report) = check(&liar, Some(&model), &[("EMBER_LIAR", "honest")]);
    assert_eq!(code, 0, "{report}");
    assert!(fail_lines(&report).is_empty(), "{report}");
    for name in LIAR_SOUND.iter().chain(&[
        "very long input",
        "output shape",
        "determinism",
        "distinct inputs",
        "padding",
        "pooling mask",
        "threads",
        "token states",
        "sparse weights",
        "parity",
    ]) {
        assert_outcome(&report, name, "PASS", "honest");
    }
    assert!(report.contains("3 texts (min cosine"), "{report}");
    assert!(
        report.trim_end().ends_with("the plugin conforms"),
        "{report}"
    );
}

#[test]
fn each_lie_fails_the_check_it_breaks() {
    let liar = bin_dir().join("libember_liar.so");
    let liar_model = LiarModel::create("lies", true);
    let model = liar_model.dir.clone();
    // (lie, the check it must fail, checks it must still pass: the failure is for this reason)
    let cases: [(&str, &str, &[&str]); 10] = [
        (
            "constant",
            "distinct inputs",
            &["output shape", "determinism", "padding", "threads"],
        ),
        (
            "unmasked",
            "padding",
            &["output shape", "determinism", "distinct inputs", "threads"],
        ),
        (
            "promptful",
            "pooling mask",
            &[
                "output shape",
                "determinism",
                "distinct inputs",
                "padding",
                "threads",
                "parity",
            ],
        ),
        ("nan", "output shape", &[]),
        (
            "int8",
            "parity",
            &[
                "output shape",
                "determinism",
                "distinct inputs",
                "padding",
                "threads",
            ],
        ),
        ("noisy", "determinism", &["output shape", "distinct inputs"]),
        (
            "racy",
            "threads",
            &[
                "output shape",
                "determinism",
                "distinct inputs",
                "padding",
                "parity",
            ],
        ),
        (
            "states",
            "token states",
            &[
                "output shape",
                "determinism",
                "distinct inputs",
                "padding",
                "pooling mask",
                "threads",
                "parity",
            ],
        ),
        (
            "sparse",
            "sparse weights",
            &[
                "output shape",
                "determinism",
                "token states",
                "padding",
                "threads",
                "parity",
            ],
        ),
        (
            "overrun",
            "very long input",
            &[
                "output shape",
                "determinism",
                "distinct inputs",
                "padding",
                "threads",
                "parity",
            ],
        ),
    ];
    for (lie, fails, passes) in cases {
        let (code, report) = check(&liar, Some(&model), &[("EMBER_LIAR", lie)]);
        assert_eq!(code, 1, "{lie}:\n{report}");
        assert!(report.contains("does NOT conform"), "{lie}:\n{report}");
        assert_outcome(&report, fails, "FAIL", lie);
        for name in LIAR_SOUND.iter().chain(passes) {
            assert_outcome(&report, name, "PASS", lie);
        }
    }
    // NaN is named with the check and the row; it never passes a comparison.
    let (_, report) = check(&liar, Some(&model), &[("EMBER_LIAR", "nan")]);
    let (_, line) = outcome(&report, "output shape").unwrap();
    assert!(
        line.contains("non-finite output: row 2, value 15 is NaN"),
        "{report}"
    );
    for name in [
        "determinism",
        "distinct inputs",
        "padding",
        "threads",
        "parity",
    ] {
        assert_outcome(&report, name, "FAIL", "nan");
    }
}

#[test]
fn tolerances_follow_the_dtype_asked_for_not_the_one_the_plugin_claims() {
    let liar = bin_dir().join("libember_liar.so");
    let liar_model = LiarModel::create("int8", true);
    let model = liar_model.dir.clone();
    let env = [("EMBER_LIAR", "int8")];
    // It claims int8, but auto was asked for: fp32 tolerance, and its error is too large.
    let (code, report) = check(&liar, Some(&model), &env);
    assert_eq!(code, 1, "{report}");
    let (_, line) = outcome(&report, "parity").unwrap();
    assert!(line.contains("< 0.9999 against the reference"), "{report}");
    // The same error is within int8's tolerance when int8 is asked for.
    let (code, report) = check_with(&liar, Some(&model), &["--dtype", "int8"], &env);
    assert_eq!(code, 0, "{report}");
    assert_outcome(&report, "parity", "PASS", "int8 asked");
}

#[test]
fn a_model_without_reference_fails_parity_unless_it_is_skipped_explicitly() {
    let liar = bin_dir().join("libember_liar.so");
    let liar_model = LiarModel::create("noref", false);
    let model = liar_model.dir.clone();
    let env = [("EMBER_LIAR", "honest")];
    let (code, report) = check(&liar, Some(&model), &env);
    assert_eq!(code, 1, "{report}");
    let (tag, line) = outcome(&report, "parity").unwrap();
    assert_eq!(tag, "FAIL", "{report}");
    assert!(
        line.contains("reference.json") && line.contains("--skip-parity"),
        "{report}"
    );

    let (code, report) = check_with(&liar, Some(&model), &["--skip-parity"], &env);
    assert_eq!(code, 0, "{report}");
    let (tag, line) = outcome(&report, "parity").unwrap();
    assert_eq!(tag, "SKIP", "{report}");
    assert!(line.contains("NOT CHECKED"), "{report}");
    assert!(
        report
            .trim_end()
            .ends_with("the plugin conforms, but parity was NOT checked (--skip-parity)"),
        "{report}"
    );
    // Skipping parity does not excuse the other checks.
    let env = [("EMBER_LIAR", "constant")];
    let (code, report) = check_with(&liar, Some(&model), &["--skip-parity"], &env);
    assert_eq!(code, 1, "{report}");
    assert_outcome(
        &report,
        "distinct inputs",
        "FAIL",
        "constant, parity skipped",
    );
}
