//! The optimum backend's other precisions over HTTP: DTYPES=fp16 runs `onnx/model_fp16.onnx`
//! and DTYPES=int8 a quantized export, each close to sentence-transformers and measurably not
//! the fp32 `onnx/model.onnx` (the all-MiniLM-L6-v2 fixture has all three files; see
//! scripts/make_fixtures.py). ONNX Runtime runs float16 graphs on the CPU too (casting where
//! it has no float16 kernel), so both precisions are served on every test device.

use ember_e2e::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The smallest largest-component difference from the fp32 file's embeddings that shows another
/// file ran. Two runs of one file give identical vectors; the fixture's fp16 and int8 files are
/// checked when they are made to differ from the fp32 file by ten times this or more (measured:
/// fp16 2.9e-4, int8 3.7e-2).
const OTHER_FILE: f64 = 1e-5;

/// A server of all-MiniLM-L6-v2 on optimum in `dtype`, and the fields of its "model ready" log
/// line.
fn serve(dtype: &str) -> (Server, Value) {
    let mut env = optimum_env(&fixture("all-MiniLM-L6-v2"));
    env.push(("DTYPES".into(), dtype.into()));
    let server = Server::start(&env_refs(&env));
    let ready = server.ready_line();
    (server, ready)
}

/// The server's embeddings of the reference texts.
fn embed(server: &Server, reference: &Value) -> Vec<Vec<f32>> {
    let (status, body) = server.post("/v1/embeddings", &json!({"input": reference["texts"]}));
    assert_eq!(status, 200, "{body}");
    vectors(&body)
}

/// Asserts that `server` ran `file` of the fixture (the host's record of the files the plugin
/// chose, and the plugin's own line naming the graph it opened) in `dtype`.
fn assert_loaded(server: &Server, ready: &Value, file: &str, dtype: &str) {
    assert_eq!(ready["files"], file, "{ready}");
    assert_eq!(ready["dtype"], dtype, "{ready}");
    let opened = format!("all-MiniLM-L6-v2/{file} on ");
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("\"plugin\":\"optimum\"") && l.contains(&opened)),
        "the plugin says it opened {file}: {:#?}",
        server.log
    );
}

/// The fp32 file's embeddings of the reference texts, served once for all tests.
fn fp32() -> &'static Vec<Vec<f32>> {
    static FP32: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    FP32.get_or_init(|| {
        let reference = reference("all-MiniLM-L6-v2");
        let (server, ready) = serve("fp32");
        assert_loaded(&server, &ready, "onnx/model.onnx", "fp32");
        embed(&server, &reference)
    })
}

/// Cosines of `got` against the reference embeddings.
fn cosines(got: &[Vec<f32>], reference: &Value) -> Vec<f64> {
    let want: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(g, w)| cosine(g, w)).collect()
}

/// The largest difference of one component between `a` and `b`.
fn largest_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fp32_runs_model_onnx_even_beside_other_precisions() {
    let reference = reference("all-MiniLM-L6-v2");
    let worst = cosines(fp32(), &reference).into_iter().fold(1.0, f64::min);
    assert!(worst >= 0.9999, "fp32 worst cosine {worst}");
}

/// Serves the fixture in `dtype`, asserts that `file` ran and that its vectors measurably differ
/// from the fp32 file's, and returns the vectors' cosines against sentence-transformers.
fn cosines_of_other_file(dtype: &str, file: &str) -> Vec<f64> {
    let reference = reference("all-MiniLM-L6-v2");
    let (server, ready) = serve(dtype);
    assert_loaded(&server, &ready, file, dtype);
    let got = embed(&server, &reference);
    let moved = largest_difference(&got, fp32());
    assert!(
        moved >= OTHER_FILE,
        "{dtype} vectors within {moved:e} of fp32's: {file} did not run"
    );
    let c = cosines(&got, &reference);
    eprintln!("{dtype}: cosines {c:.4?}; largest difference to fp32 {moved:.2e}");
    c
}

#[test]
fn fp16_runs_model_fp16_onnx_within_fp16_tolerance() {
    let c = cosines_of_other_file("fp16", "onnx/model_fp16.onnx");
    let worst = c.iter().copied().fold(1.0, f64::min);
    assert!(worst >= 0.999, "fp16 cosines {c:?}");
}

#[test]
fn int8_runs_the_quantized_export_within_int8_tolerance() {
    let c = cosines_of_other_file("int8", "onnx/model_qint8_avx512_vnni.onnx");
    // Dynamic quantisation scales each batch's activations together, so a text's vector depends
    // a little on its batch; sentences hold to 0.98, a lone token or punctuation ("a", "?!")
    // drifts most (measured: sentences 0.985 to 0.993, "?!" 0.966).
    let reference = reference("all-MiniLM-L6-v2");
    for (i, text) in reference["texts"].as_array().unwrap().iter().enumerate() {
        let words = text.as_str().unwrap().split_whitespace().count();
        let min = if words >= 2 { 0.98 } else { 0.95 };
        assert!(c[i] >= min, "int8 text {i} ({words} words): cosines {c:?}");
    }
}
