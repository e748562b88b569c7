//! Finding and loading `libonnxruntime` once per process.

use ember_plugin_api::sdk::plugin_dir;
use ember_plugin_api::{plugin_info, PluginError};
use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The loaded ONNX Runtime: its environment and what it can do.
pub struct Runtime {
    /// The environment every session is created in.
    pub env: Environment,
    /// The library file that was loaded.
    pub library: PathBuf,
    /// Whether this build of ONNX Runtime has the CUDA execution provider.
    pub cuda_available: bool,
}

static RUNTIME: OnceLock<Result<Runtime, PluginError>> = OnceLock::new();

/// Places where `libonnxruntime` is looked for, in order.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = plugin_dir() {
        out.push(dir.join("libonnxruntime.so"));
        out.push(dir.join("onnxruntime").join("libonnxruntime.so"));
    }
    out.push(PathBuf::from("/usr/local/lib/ember/libonnxruntime.so"));
    out
}

fn load() -> Result<Runtime, PluginError> {
    let tried = candidates();
    let Some(library) = tried.iter().find(|p| p.is_file()).cloned() else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        return Err(PluginError::unsupported(format!(
            "libonnxruntime not found; looked at {} (run scripts/setup.sh, or set ORT_DYLIB_PATH \
             to the library of the onnxruntime wheel)",
            list.join(", ")
        )));
    };
    let env = ort::init_from(&library)
        .map_err(|e| PluginError::unsupported(format!("cannot load {}: {e}", library.display())))?
        .with_name("ember")
        .build()
        .map_err(|e| PluginError::internal(format!("onnxruntime environment: {e}")))?;
    let cuda_available = ort::ep::CUDA::is_available().unwrap_or(false);
    plugin_info!(
        "optimum",
        "onnxruntime loaded from {} (CUDA execution provider {})",
        library.display(),
        if cuda_available {
            "available"
        } else {
            "not in this build"
        }
    );
    Ok(Runtime {
        env,
        library,
        cuda_available,
    })
}

/// The process's ONNX Runtime, loaded on first use.
pub fn get() -> Result<&'static Runtime, PluginError> {
    RUNTIME.get_or_init(load).as_ref().map_err(Clone::clone)
}
