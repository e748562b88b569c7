//! ember's `torch` backend: Hugging Face checkpoints (safetensors, sharded or not) run on
//! libtorch through tch, on CUDA when there is a GPU and on the CPU otherwise, with no
//! conversion step. Encoders: BERT (bert, MiniLM, bge, e5, gte v1), RoBERTa / XLM-RoBERTa
//! (bge-m3, multilingual-e5, bge-reranker), DistilBERT, MPNet, ELECTRA, GTE (`new`), Nomic BERT,
//! ModernBERT and DeBERTa-v2/v3, with their sequence-classification heads; decoders used as embedders and rerankers: Qwen2,
//! Qwen3, Llama, Mistral, Gemma 3 (last-token or mean states, score and yes/no heads); CLIP
//! (text and vision towers with their projections).

pub mod aten;
mod clip;
mod deberta;
mod decoder;
mod device;
mod encoder;
pub mod error;
mod gte;
mod heap;
mod mkl;
mod model;
mod modernbert;
mod nn;
pub mod parts;
pub mod pool;
mod rotary;
mod splade;
mod weights;

use ember_plugin_api::{
    Backend, DType, DeviceKind, LoadRequest, Model, ModelKind, PluginError, PluginInfo,
};

/// The libtorch backend.
pub struct Torch;

impl Backend for Torch {
    fn info() -> Result<PluginInfo, PluginError> {
        let mut devices = vec![DeviceKind::Cpu];
        if device::cuda_built() {
            devices.push(DeviceKind::Cuda);
        }
        Ok(PluginInfo {
            name: "torch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            runtime: device::runtime().into(),
            kinds: ModelKind::ALL.to_vec().into(),
            devices: devices.into(),
            dtypes: vec![DType::Auto, DType::Fp32, DType::Fp16, DType::Bf16].into(),
        })
    }

    fn select_files(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError> {
        device::check_dtype(dtype)?;
        weights::select(listing)
    }

    fn load(request: &LoadRequest) -> Result<Box<dyn Model>, PluginError> {
        Ok(Box::new(model::TorchModel::load(request)?))
    }
}

ember_plugin_api::export_plugin!(Torch);
