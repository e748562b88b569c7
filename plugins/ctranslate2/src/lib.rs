//! ember's `ctranslate2` backend: encoder models on CTranslate2 (int8 kernels on the CPU,
//! CUDA when there is a GPU) through a small C++ bridge to `ctranslate2::Encoder`.
//! Hugging Face BERT and RoBERTa / XLM-RoBERTa checkpoints are converted to CTranslate2's
//! format at load time (once; cached next to the model in `HF_HOME`); repositories already in
//! that format are read as they are. Rerankers and classifiers get
//! their classification head applied here.

mod cache;
mod checkpoint;
mod compute;
mod convert;
mod ffi;
mod head;
mod model;
mod modelbin;

use ember_plugin_api::{
    Backend, DType, DeviceKind, LoadRequest, Model, ModelKind, PluginError, PluginInfo,
};

/// The CTranslate2 backend.
pub struct CTranslate2;

/// Vocabulary files of a repository in CTranslate2's format.
const VOCABULARIES: &[&str] = &[
    "vocabulary.json",
    "vocabulary.txt",
    "shared_vocabulary.json",
    "shared_vocabulary.txt",
];

impl Backend for CTranslate2 {
    fn info() -> Result<PluginInfo, PluginError> {
        // A CUDA build: whether this machine can run it is decided at load, so that `info`
        // does not start the driver.
        let devices = vec![DeviceKind::Cpu, DeviceKind::Cuda];
        Ok(PluginInfo {
            name: "ctranslate2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            runtime: "CTranslate2 4.8.4 (CUDA 12 build)".into(),
            kinds: vec![ModelKind::Embed, ModelKind::Rerank, ModelKind::Classify].into(),
            devices: devices.into(),
            dtypes: vec![
                DType::Auto,
                DType::Fp32,
                DType::Fp16,
                DType::Bf16,
                DType::Int8,
            ]
            .into(),
        })
    }

    fn select_files(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError> {
        compute::check_dtype(dtype)?;
        let has = |f: &str| listing.iter().any(|l| l == f);
        if has("model.bin") {
            let mut files = vec!["model.bin".to_string()];
            files.extend(
                VOCABULARIES
                    .iter()
                    .filter(|v| has(v))
                    .map(|v| v.to_string()),
            );
            return Ok(files);
        }
        ember_plugin_api::safetensors::weight_files(listing).ok_or_else(|| {
            PluginError::unsupported(
                "the ctranslate2 backend reads a CTranslate2 model (model.bin) or a checkpoint \
                 to convert (model.safetensors, or model-*.safetensors with \
                 model.safetensors.index.json); this model has none of them",
            )
        })
    }

    fn load(request: &LoadRequest) -> Result<Box<dyn Model>, PluginError> {
        Ok(Box::new(model::Ct2Model::load(request)?))
    }
}

ember_plugin_api::export_plugin!(CTranslate2);
