//! Loading fixture models through the SDK's guarded handle, as the host does, and making
//! token batches.

#![allow(dead_code)] // each test file uses part of it

use ember_plugin_api::sdk::into_model_box;
use ember_plugin_api::{
    Backend, DType, DeviceKind, DeviceRequest, LoadRequest, Model, ModelBox, ModelKind,
    ModelManifest, PluginError, Pooling, TokenBatch,
};
use ember_torch::Torch;
use std::path::{Path, PathBuf};

/// One fixture model directory (`EMBER_FIXTURES` or the repository's `fixtures/`).
pub fn fixture(name: &str) -> PathBuf {
    let root = std::env::var_os("EMBER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"));
    let dir = root.join(name);
    assert!(
        dir.join("config.json").is_file(),
        "fixture {} missing: run scripts/setup.sh first",
        dir.display()
    );
    dir
}

/// Loads fixture `name` on the CPU in fp32, wrapped as the host gets it.
pub fn load(name: &str, kind: ModelKind, pooling: Pooling) -> ModelBox {
    into_model_box(load_model(name, kind, pooling, "", 0))
}

/// Loads fixture `name` on the CPU in fp32 as the plugin makes it, declared as `architecture`
/// (`""`: none), with `threads` intra-op threads (0: libtorch's default).
pub fn load_model(
    name: &str,
    kind: ModelKind,
    pooling: Pooling,
    architecture: &str,
    threads: u32,
) -> Box<dyn Model> {
    try_load(&fixture(name), kind, pooling, architecture, threads)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Loads the model in `dir` as [`load_model`] does, or the plugin's error.
pub fn try_load(
    dir: &Path,
    kind: ModelKind,
    pooling: Pooling,
    architecture: &str,
    threads: u32,
) -> Result<Box<dyn Model>, PluginError> {
    let name = dir.file_name().unwrap().to_string_lossy();
    let listing: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let files = Torch::select_files(&listing, DType::Fp32).unwrap();
    let request = LoadRequest {
        model_dir: dir.to_string_lossy().as_ref().into(),
        files: files.iter().map(|f| f.as_str().into()).collect(),
        manifest: ModelManifest {
            name: name.as_ref().into(),
            kind,
            architecture: architecture.into(),
            model_type: "".into(),
            pooling,
            max_input_tokens: 0,
            hidden_size: 0,
            num_labels: 1,
            include_prompt: true,
            image: None.into(),
        },
        dtype: DType::Fp32,
        device: DeviceRequest {
            kind: DeviceKind::Cpu,
            ordinal: 0,
        },
        max_batch_size: 32,
        intra_op_threads: threads,
    };
    Torch::load(&request)
}

/// A right-padded batch: row `r` has `lengths[r]` tokens that look like a sentence ([CLS],
/// word ids that depend on the row, [SEP]), all in segment 0.
pub fn tokens(seq_len: u32, lengths: &[u32]) -> TokenBatch {
    let mut input_ids = Vec::new();
    let mut attention_mask = Vec::new();
    for (r, &len) in lengths.iter().enumerate() {
        for p in 0..seq_len {
            input_ids.push(match p {
                0 => 101,
                p if p + 1 == len => 102,
                p if p < len => 200 + (r as i64 * 37 + p as i64 * 101) % 1000,
                _ => 0,
            });
            attention_mask.push((p < len) as i64);
        }
    }
    TokenBatch {
        rows: lengths.len() as u32,
        seq_len,
        token_type_ids: vec![0; input_ids.len()].into(),
        input_ids: input_ids.into(),
        attention_mask: attention_mask.into(),
        pooling_mask: Default::default(),
    }
}
