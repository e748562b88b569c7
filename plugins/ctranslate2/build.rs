//! Builds the C++ bridge against the CTranslate2 4.8.4 headers in `vendor/` and links it to the
//! `libctranslate2` of the pinned `ctranslate2` wheel, whose library directory
//! (`ctranslate2.libs`) `CTRANSLATE2_LIBS` names (set by .cargo/config.toml to the
//! `./.ctranslate2` link that scripts/setup.sh makes). At run time the plugin finds the library
//! through its rpath `$ORIGIN/ctranslate2.libs`, where setup.sh (and the image) put it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/bridge.cc");
    println!("cargo:rerun-if-changed=src/bridge.h");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-env-changed=CTRANSLATE2_LIBS");

    let libs = PathBuf::from(
        std::env::var_os("CTRANSLATE2_LIBS")
            .expect("CTRANSLATE2_LIBS is not set: run scripts/setup.sh (it links ./.ctranslate2)"),
    );
    // auditwheel renames the library with a hash (libctranslate2-<hash>.so.<version>).
    let library = std::fs::read_dir(&libs)
        .unwrap_or_else(|e| panic!("CTRANSLATE2_LIBS={}: {e}", libs.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libctranslate2") && n.contains(".so"))
        .unwrap_or_else(|| panic!("no libctranslate2*.so* in {}", libs.display()));

    cxx_build::bridge("src/ffi.rs")
        .file("src/bridge.cc")
        .include("vendor/ctranslate2-4.8.4/include")
        .std("c++17")
        // The wheel's library is built with the C++11 ABI; the bridge must match it.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .compile("ember_ct2_bridge");

    println!("cargo:rustc-link-search=native={}", libs.display());
    println!("cargo:rustc-link-arg-cdylib=-l:{library}");
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/ctranslate2.libs");
}
