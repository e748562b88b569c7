//! The torch backend over HTTP: parity with sentence-transformers / transformers for every
//! fixture kind, the seed's default backend, start-up time, and clear errors for what it does
//! not run.

use ember_e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn serve(model: &str) -> Server {
    serve_fixtures("torch", &[model], &[])
}

#[test]
fn embeddings_match_sentence_transformers_in_fp32() {
    for model in ["all-MiniLM-L6-v2", "tiny-bert-cls", "tiny-bert-lasttoken"] {
        let reference = reference(model);
        let server = serve(model);
        assert_texts_match(&server, &reference, "embeddings", 0.9999, model);
        let (_, models) = server.get("/v1/models");
        assert_eq!(models["data"][0]["backend"], "torch");
    }
}

#[test]
fn rerank_scores_match_transformers() {
    for model in ["tiny-rerank-bert", "tiny-rerank-xlmr"] {
        assert_rerank_matches_reference(&serve(model), model, 1e-4);
    }
}

#[test]
fn clip_text_and_image_embeddings_match_transformers() {
    let reference = reference("tiny-clip");
    let server = serve("tiny-clip");
    assert_texts_match(&server, &reference, "text_embeddings", 0.999, "texts");
    let images: Vec<String> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| data_uri(n.as_str().unwrap()))
        .collect();
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"input": images, "modality": "image"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_parity(
        &vectors(&body),
        &matrix(&reference["image_embeddings"]),
        0.999,
        "images",
    );
}

#[test]
fn torch_is_the_default_backend_and_starts_fast() {
    let model = fixture("all-MiniLM-L6-v2").display().to_string();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        // No BACKEND: the seed's default, torch.
        let server = Server::start(&[("MODEL_NAMES", model.as_str())]);
        let (status, body) = server.post("/v1/embeddings", &json!({"input": "first"}));
        assert_eq!(status, 200, "{body}");
        times.push(t0.elapsed());
        let (_, models) = server.get("/v1/models");
        assert_eq!(models["data"][0]["backend"], "torch");
        let warm = server.log.iter().find(|l| l.contains("model warmed up"));
        assert!(
            warm.is_some_and(|l| l.contains("\"rows\":32")),
            "one batch of BATCH_SIZES (32) runs before ready: {:?}",
            server.log
        );
    }
    times.sort();
    eprintln!("torch: start to first embedding (all-MiniLM-L6-v2, CPU): {times:?}");
    // The target is 3 s on a quiet machine; the bound leaves room for a loaded CI machine.
    assert!(
        times[1] < Duration::from_secs(6),
        "median start-up {:?}",
        times[1]
    );
}

#[test]
fn what_the_backend_does_not_run_is_a_clear_start_up_error() {
    let model = fixture("tiny-bert-cls").display().to_string();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    // A CUDA device that is not there: cuda:0 without a GPU, an ordinal past the last one
    // with GPUs (as on the GPU machine of scripts/gpu-test.sh).
    let missing_gpu: &[(&str, &str)] = if test_device() == "cpu" {
        &[("DEVICE", "cuda:0")]
    } else {
        &[("DEVICE", "cuda:64")]
    };
    let missing_gpu_says: &[&str] = if test_device() == "cpu" {
        &["DEVICE=cuda:0 cannot be used: no NVIDIA driver (libcuda.so.1"]
    } else {
        &[
            "DEVICE=cuda:64 cannot be used: there is no cuda:64",
            "CUDA device(s) are visible",
        ]
    };
    let cases: [Case; 3] = [
        (&[("DTYPES", "fp8")], &["DTYPES=fp8", "fp32, fp16 or bf16"]),
        (&[("DTYPES", "int8")], &["DTYPES=int8"]),
        (missing_gpu, missing_gpu_says),
    ];
    for (extra, needles) in cases {
        let mut env = vec![("MODEL_NAMES", model.as_str()), ("BACKEND", "torch")];
        env.extend_from_slice(extra);
        match Server::try_start(&env) {
            Ok(_) => panic!("{extra:?} should not start"),
            Err(f) => {
                for n in needles {
                    assert!(
                        f.stderr.contains(n),
                        "{extra:?}: {n:?} missing from:\n{}",
                        f.stderr
                    );
                }
            }
        }
    }
    // Weights only as a pickle, and an architecture it does not implement.
    let dir = std::env::temp_dir().join(format!("ember-torch-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("tiny-bert-cls").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
    let dir_s = dir.display().to_string();
    let env = [("MODEL_NAMES", dir_s.as_str()), ("BACKEND", "torch")];
    let f = Server::try_start(&env).err().expect("refused");
    assert!(
        f.stderr.contains("pytorch_model.bin is a Python pickle"),
        "{}",
        f.stderr
    );
    std::fs::copy(
        fixture("tiny-bert-cls").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"bert\"", "\"gpt2\"");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let f = Server::try_start(&env).err().expect("refused");
    assert!(
        f.stderr.contains("model_type \"gpt2\"") && f.stderr.contains("xlm-roberta"),
        "{}",
        f.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sharded_safetensors_are_read_as_they_are() {
    // Split tiny-bert-cls's weights into two shards with an index, as large checkpoints come.
    let dir = std::env::temp_dir().join(format!("ember-torch-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("tiny-bert-cls");
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let name = entry.file_name();
        if entry.path().is_dir() {
            let sub = dir.join(&name);
            std::fs::create_dir_all(&sub).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap().flatten() {
                std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
            }
        } else if name != "model.safetensors" {
            std::fs::copy(entry.path(), dir.join(&name)).unwrap();
        }
    }
    let script = r#"
import json, sys
from safetensors.torch import load_file, save_file
src, dst = sys.argv[1], sys.argv[2]
tensors = load_file(src + "/model.safetensors")
names = sorted(tensors)
half = len(names) // 2
weight_map = {}
for i, part in enumerate([names[:half], names[half:]]):
    shard = f"model-{i + 1:05d}-of-00002.safetensors"
    save_file({n: tensors[n] for n in part}, f"{dst}/{shard}", metadata={"format": "pt"})
    weight_map.update({n: shard for n in part})
json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{dst}/model.safetensors.index.json", "w"))
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&src)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&env_refs(&backend_env("torch", &dir)));
    let reference = reference("tiny-bert-cls");
    assert_texts_match(&server, &reference, "embeddings", 0.9999, "shards");
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("model-00001-of-00002.safetensors")),
        "the shards were selected"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Once the plugin is loaded, MKL (inside libtorch, running every linear layer on the CPU)
/// chooses its kernels by the CPU's instruction sets, whatever the vendor: on an AMD CPU it
/// would otherwise run its generic code path (0), at about two-thirds of the speed on an
/// AVX-512 EPYC. `mkl_serv_cpu_detect` is the code path MKL dispatches on. (On an Intel CPU
/// MKL chooses by instruction set anyway: there the test passes with or without the plugin's
/// answer.)
#[cfg(target_arch = "x86_64")]
#[test]
fn mkl_picks_its_kernels_by_instruction_set_on_any_cpu() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("skipped: this CPU has no AVX2, for which MKL has no faster path to choose");
        return;
    }
    let file = ember_host::plugin::find("torch", Some(&bin_dir())).expect("the torch plugin");
    let plugin = ember_host::plugin::Plugin::load(&file).expect("the torch plugin loads");
    // SAFETY: RTLD_NOLOAD only returns the handle of the libtorch_cpu the plugin loaded
    // (matched by its soname, wherever it was found), and `mkl_serv_cpu_detect` is MKL's
    // exported `int (void)` that reads the CPU's features.
    let path = unsafe {
        let handle = libc::dlopen(
            c"libtorch_cpu.so".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_NOLOAD,
        );
        assert!(!handle.is_null(), "loading the plugin loads libtorch_cpu");
        let detect = libc::dlsym(handle, c"mkl_serv_cpu_detect".as_ptr());
        assert!(
            !detect.is_null(),
            "libtorch_cpu exports mkl_serv_cpu_detect"
        );
        let detect: unsafe extern "C" fn() -> std::ffi::c_int = std::mem::transmute(detect);
        let path = detect();
        libc::dlclose(handle);
        path
    };
    assert_ne!(
        path, 0,
        "MKL runs its generic kernels on a CPU with AVX2: the plugin's vendor answer is not used"
    );
    drop(plugin);
}
