//! ember's `candle` backend, the template plugin: BERT-family text embeddings on the CPU in
//! pure Rust, read straight from `model.safetensors`.
//!
//! It is the reference a third party copies (see `plugin-api/README.md`): a [`Backend`] that
//! says what it runs and which files it reads, a [`Model`] that embeds token batches, and one
//! `export_plugin!` line. Nothing here knows about abi_stable, HTTP or tokenizers.

mod bert;

use ember_plugin_api::{
    Backend, DType, DeviceKind, LoadRequest, Model, ModelKind, PluginError, PluginInfo,
};

/// The candle backend.
pub struct Candle;

impl Backend for Candle {
    fn info() -> Result<PluginInfo, PluginError> {
        Ok(PluginInfo {
            name: "candle".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            runtime: "candle 0.9 (pure Rust, CPU)".into(),
            kinds: vec![ModelKind::Embed].into(),
            devices: vec![DeviceKind::Cpu].into(),
            dtypes: vec![DType::Auto, DType::Fp32].into(),
        })
    }

    fn select_files(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError> {
        if !matches!(dtype, DType::Auto | DType::Fp32) {
            return Err(PluginError::unsupported(format!(
                "the candle backend computes in fp32 only; DTYPES={} is not available",
                dtype.as_str()
            )));
        }
        if listing.iter().any(|f| f == "model.safetensors") {
            Ok(vec!["model.safetensors".into()])
        } else {
            Err(PluginError::unsupported(
                "the candle backend reads model.safetensors, which this model does not have",
            ))
        }
    }

    fn load(request: &LoadRequest) -> Result<Box<dyn Model>, PluginError> {
        Ok(Box::new(bert::Bert::load(request)?))
    }
}

ember_plugin_api::export_plugin!(Candle);
