//! The device preflight of every GPU-capable backend as the server runs it: `DEVICE=auto`
//! names the device it chose and, on the CPU, why; `DEVICE=cuda` that cannot be honoured is a
//! start-up error that says why. On a GPU machine (`EMBER_TEST_DEVICE=cuda`) the same tests
//! check that `auto` chose the GPU.

use ember_e2e::*;

/// Backends whose plugin decides between CUDA and the CPU.
const BACKENDS: [&str; 3] = ["torch", "ctranslate2", "optimum"];

fn env(backend: &str, device: &str) -> Vec<(String, String)> {
    let mut env = backend_env(backend, &fixture("tiny-bert-cls"));
    env.push(("DEVICE".into(), device.into()));
    // ctranslate2 converts the checkpoint into HF_HOME.
    let home = std::env::temp_dir().join(format!("ember-devices-{backend}-{}", std::process::id()));
    env.push(("HF_HOME".into(), home.display().to_string()));
    env
}

/// Whether this machine has a working NVIDIA driver (as the tests are told).
fn gpu() -> bool {
    test_device() != "cpu"
}

#[test]
fn auto_says_where_it_runs_and_why() {
    for backend in BACKENDS {
        let server = Server::start(&env_refs(&env(backend, "auto")));
        let (status, models) = server.get("/v1/models");
        assert_eq!(status, 200, "{models}");
        let device = models["data"][0]["device"].as_str().unwrap().to_string();
        // The CPU variant of onnxruntime (CI's) has no CUDA provider: CPU without a warning.
        let ort_cpu = backend == "optimum"
            && server
                .log
                .iter()
                .any(|l| l.contains("CUDA execution provider not in this build"));
        assert!(gpu() || backend != "optimum" || ort_cpu, "{:?}", server.log);
        if gpu() && !ort_cpu {
            assert_eq!(device, "cuda:0", "{backend}: {:?}", server.log);
            assert!(
                server
                    .log
                    .iter()
                    .any(|l| l.contains("NVIDIA driver for CUDA")),
                "{backend}: the driver and its GPUs are logged: {:?}",
                server.log
            );
        } else {
            assert_eq!(device, "cpu", "{backend}");
            if !ort_cpu {
                let warning = server
                    .log
                    .iter()
                    .find(|l| l.contains("DEVICE=auto runs on the CPU"));
                let warning = warning.unwrap_or_else(|| {
                    panic!("{backend}: the fallback names its reason: {:?}", server.log)
                });
                assert!(warning.contains("\"WARN\""), "{warning}");
                assert!(warning.contains("no NVIDIA driver"), "{warning}");
            }
        }
    }
}

#[test]
fn cuda_that_cannot_be_used_is_a_start_up_error_with_the_reason() {
    // Without a GPU: cuda:0; with one, an ordinal past the last GPU.
    let device = if gpu() { "cuda:64" } else { "cuda:0" };
    for backend in BACKENDS {
        let failed = match Server::try_start(&env_refs(&env(backend, device))) {
            Ok(_) => panic!("{backend}: DEVICE={device} should not start"),
            Err(f) => f,
        };
        let says: &[&str] = match (backend, gpu()) {
            ("optimum", false) => &["no CUDA execution provider", "onnxruntime-gpu"],
            (_, false) => &["DEVICE=cuda:0 cannot be used: no NVIDIA driver (libcuda.so.1"],
            (_, true) => &["DEVICE=cuda:64 cannot be used: there is no cuda:64"],
        };
        for needle in says {
            assert!(
                failed.stderr.contains(needle),
                "{backend}: {needle:?} missing from:\n{}",
                failed.stderr
            );
        }
    }
}

/// Whether the process `pid` has mapped a library whose file name contains `name`.
fn maps(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .any(|l| l.rsplit('/').next().is_some_and(|file| file.contains(name)))
}

#[test]
fn torch_on_the_cpu_never_loads_its_cuda_libraries() {
    // DEVICE=cpu always; DEVICE=auto where the driver says there is no GPU to use.
    let devices: &[&str] = if gpu() { &["cpu"] } else { &["cpu", "auto"] };
    for device in devices {
        let server = Server::start(&env_refs(&env("torch", device)));
        let (status, _) = server.post("/v1/embeddings", &serde_json::json!({"input": "ember"}));
        assert_eq!(status, 200);
        assert!(
            maps(server.pid(), "libtorch_cpu"),
            "libtorch itself is loaded"
        );
        for cuda in ["libtorch_cuda", "libcudnn", "libcublas", "libnccl"] {
            assert!(!maps(server.pid(), cuda), "DEVICE={device} loaded {cuda}");
        }
    }
}
