//! A plugin that breaks the contract on purpose, so that tests can check that
//! `ember plugin check` names each problem and that the host survives it. `EMBER_BROKEN` picks
//! the fault: `panic` (every forward call panics), `shape` (one row too many comes back),
//! `panic-after:N` (each loaded model answers N calls, then panics on every call), or `none`.
//! `EMBER_BROKEN_LOAD_MS` makes loading a model take that long.

use ember_plugin_api::{
    Backend, DType, DeviceKind, EmbeddingBatch, LoadRequest, LoadedModel, Model, ModelKind,
    PluginError, PluginInfo, TokenBatch,
};

/// The broken backend.
pub struct Broken;

/// Its model: 4-dimensional vectors of token statistics, wrong in the chosen way.
pub struct BrokenModel {
    fault: String,
    calls: std::sync::atomic::AtomicUsize,
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
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let healthy_calls = self
            .fault
            .strip_prefix("panic-after:")
            .and_then(|n| n.parse::<usize>().ok());
        if self.fault == "panic" || healthy_calls.is_some_and(|n| call > n) {
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
        if let Some(ms) = std::env::var("EMBER_BROKEN_LOAD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Ok(Box::new(BrokenModel {
            fault: std::env::var("EMBER_BROKEN").unwrap_or_else(|_| "panic".into()),
            calls: Default::default(),
        }))
    }
}

ember_plugin_api::export_plugin!(Broken);
