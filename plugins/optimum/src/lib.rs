//! ember's `optimum` backend: ONNX Runtime through the `ort` crate.
//!
//! `libonnxruntime` is loaded at run time (from `ORT_DYLIB_PATH`, or beside this plugin where
//! `scripts/setup.sh` links it from the pinned `onnxruntime` / `onnxruntime-gpu` wheel), so
//! one build of the plugin serves CPU and CUDA machines.

mod files;
mod graph;
mod model;
mod runtime;

use ember_plugin_api::{
    Backend, DType, DeviceKind, LoadRequest, Model, ModelKind, PluginError, PluginInfo,
};

/// The ONNX Runtime backend.
pub struct Optimum;

impl Backend for Optimum {
    fn info() -> Result<PluginInfo, PluginError> {
        let rt = runtime::get()?;
        let mut devices = vec![DeviceKind::Cpu];
        if rt.cuda_available {
            devices.push(DeviceKind::Cuda);
        }
        Ok(PluginInfo {
            name: "optimum".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            runtime: format!("onnxruntime ({})", rt.library.display()).into(),
            kinds: ModelKind::ALL.to_vec().into(),
            devices: devices.into(),
            dtypes: vec![DType::Auto, DType::Fp32, DType::Fp16, DType::Int8].into(),
        })
    }

    fn select_files(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError> {
        files::select(listing, dtype, graph::gpu_likely())
    }

    fn load(request: &LoadRequest) -> Result<Box<dyn Model>, PluginError> {
        Ok(Box::new(model::OnnxModel::load(request)?))
    }
}

ember_plugin_api::export_plugin!(Optimum);
