//! Link settings of the plugin:
//! - an rpath of `$ORIGIN/torch/lib`, where scripts/setup.sh (and the container image) put the
//!   `torch` wheel's libraries next to the plugin, so no LD_LIBRARY_PATH is needed;
//! - libtorch_cuda kept as a dependency even though no symbol of it is referenced: loading it
//!   registers libtorch's CUDA backend, without which no GPU is seen;
//! - for the test binaries of `tests/` only, an rpath of `$LIBTORCH/lib` and the same
//!   libtorch_cuda dependency, so that `cargo test` runs them without LD_LIBRARY_PATH (the
//!   shipped plugin keeps its relative rpath alone).

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/torch/lib");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(lib) = std::env::var_os("LIBTORCH").map(|d| PathBuf::from(d).join("lib")) else {
        return;
    };
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        let cuda = "-Wl,--no-as-needed,-ltorch_cuda,--as-needed";
        println!("cargo:rustc-link-arg-cdylib={cuda}");
        println!("cargo:rustc-link-arg-tests={cuda}");
    }
}
