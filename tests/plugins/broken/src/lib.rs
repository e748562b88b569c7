//! A plugin that breaks the contract on purpose, so that tests can check that
//! `ember plugin check` names each problem. `EMBER_BROKEN` picks the fault:
//! `panic` (every forward call panics) or `shape` (one row too many comes back).

use ember_plugin_api::{
    Backend, DType, DeviceKind, EmbeddingBatch, LoadRequest, LoadedModel, Model, ModelKind,
    PluginError, PluginInfo, TokenBatch,
};

/// The broken backend.
pub struct Broken;

/// Its model: 4-dimensional vectors of token statistics, wrong in the chosen way.
pub struct BrokenModel {
    fault: String,
}

impl Model for BrokenModel {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: 4,
            device: "cpu".into(),
            dtype: DType::Fp32,
            concurrent_calls: true,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        if self.fault == "panic" {
            panic!("index out of bounds: the len is 3 but the index is 7");
        }
        let rows = batch.rows + u32::from(self.fault == "shape");
        Ok(EmbeddingBatch {
            rows,
            dim: 4,
            values: vec![0.5; rows as usize * 4].into(),
        })
    }
}

impl Backend for Broken {
    fn info() -> Result<PluginInfo, PluginError> {
        Ok(PluginInfo {
            name: "broken".into(),
            version: "0.0.0".into(),
            runtime: "none".into(),
            kinds: vec![ModelKind::Embed].into(),
            devices: vec![DeviceKind::Cpu].into(),
            dtypes: vec![DType::Auto].into(),
        })
    }

    fn select_files(_listing: &[String], _dtype: DType) -> Result<Vec<String>, PluginError> {
        Ok(vec!["config.json".into()])
    }

    fn load(_request: &LoadRequest) -> Result<Box<dyn Model>, PluginError> {
        Ok(Box::new(BrokenModel {
            fault: std::env::var("EMBER_BROKEN").unwrap_or_else(|_| "panic".into()),
        }))
    }
}

ember_plugin_api::export_plugin!(Broken);
