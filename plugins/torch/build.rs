//! Link settings of the plugin:
//! - an rpath of `$ORIGIN/torch/lib`, where scripts/setup.sh (and the container image) put the
//!   `torch` wheel's libraries next to the plugin, so no LD_LIBRARY_PATH is needed;
//! - no dependency on libtorch_cuda (the linker drops it: no symbol of it is referenced): the
//!   plugin opens it when a model is to run on a GPU (`device.rs`), so that the CPU does not
//!   read its gigabytes of CUDA libraries at start-up and a CPU image need not ship them;
//! - for the test binaries of `tests/` only, an rpath of `$LIBTORCH/lib`, so that `cargo test`
//!   runs them without LD_LIBRARY_PATH (the shipped plugin keeps its relative rpath alone), and
//!   libtorch_cuda linked, so that their CUDA cases run on a GPU machine;
//! - `EMBER_TORCH_CUDA`, the CUDA version the libtorch was built for (from the wheel's
//!   `version.py`; empty for a CPU build), which the device preflight checks the driver against.

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/torch/lib");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:rustc-env=EMBER_TORCH_CUDA=");
        return;
    };
    let version = root.join("version.py");
    println!("cargo:rerun-if-changed={}", version.display());
    let cuda = std::fs::read_to_string(&version)
        .ok()
        .and_then(|text| {
            // `cuda: Optional[str] = '13.0'` (or `cuda = '12.1'` in older wheels).
            text.lines()
                .filter(|l| l.starts_with("cuda:") || l.starts_with("cuda ="))
                .find_map(|l| l.split_once('=').map(|(_, v)| v.trim().to_owned()))
        })
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_owned())
        .filter(|v| v != "None")
        .unwrap_or_default();
    println!("cargo:rustc-env=EMBER_TORCH_CUDA={cuda}");
    let lib = root.join("lib");
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
