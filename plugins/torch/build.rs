//! Link settings of the plugin:
//! - an rpath of `$ORIGIN/torch/lib`, where scripts/setup.sh (and the container image) put the
//!   `torch` wheel's libraries next to the plugin, so no LD_LIBRARY_PATH is needed;
//! - libtorch_cuda kept as a dependency even though no symbol of it is referenced: loading it
//!   registers libtorch's CUDA backend, without which no GPU is seen.

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/torch/lib");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let lib = std::env::var_os("LIBTORCH").map(|d| PathBuf::from(d).join("lib"));
    if lib.is_some_and(|l| l.join("libtorch_cuda.so").exists()) {
        println!("cargo:rustc-link-arg-cdylib=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
