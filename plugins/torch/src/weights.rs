//! Reading Hugging Face weights: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, into named tensors on the model's device and kind.

use ember_plugin_api::PluginError;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The weight files of a repository listing.
pub fn select(listing: &[String]) -> Result<Vec<String>, PluginError> {
    if let Some(files) = ember_plugin_api::safetensors::weight_files(listing) {
        return Ok(files);
    }
    let has = |f: &str| listing.iter().any(|l| l == f);
    let hint = if has("pytorch_model.bin") {
        " (pytorch_model.bin is a Python pickle, which libtorch's C++ API cannot read; convert \
         it to safetensors or use a repository revision that has one)"
    } else {
        ""
    };
    Err(PluginError::unsupported(format!(
        "the torch backend reads model.safetensors or sharded model-*.safetensors with \
         model.safetensors.index.json; this model has neither{hint}"
    )))
}

/// Named weights of a model.
pub struct Weights {
    /// In a cell: a layer that keeps its weight in a layout of its own takes the checkpoint's
    /// tensor out as it loads, so that a model never holds both copies of its weights at once.
    tensors: RefCell<HashMap<String, Tensor>>,
    /// Names taken out, for a clear error if one is asked for again.
    taken: RefCell<HashSet<String>>,
    prefix: String,
}

fn tch_err(what: String) -> impl Fn(tch::TchError) -> PluginError {
    move |e| PluginError::invalid_input(format!("{what}: {e}"))
}

impl Weights {
    /// Reads every weight file of `dir` onto `device`, floating-point tensors as `kind`.
    pub fn read(
        dir: &Path,
        files: &[String],
        device: Device,
        kind: Kind,
    ) -> Result<Weights, PluginError> {
        let shards: Vec<String> = if files.iter().any(|f| f == "model.safetensors.index.json") {
            let index = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&index)
                .map_err(|e| PluginError::invalid_input(format!("{}: {e}", index.display())))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| PluginError::invalid_input(format!("{}: {e}", index.display())))?;
            let mut shards: Vec<String> = v["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            shards
        } else {
            vec!["model.safetensors".into()]
        };
        let mut tensors = HashMap::new();
        for shard in shards {
            let path = dir.join(&shard);
            for (name, t) in
                Tensor::read_safetensors(&path).map_err(tch_err(path.display().to_string()))?
            {
                let placed = if t.is_floating_point() {
                    t.f_to_kind(kind)
                } else {
                    Ok(t)
                }
                .and_then(|t| t.f_to_device(device))
                .map_err(|e| crate::error::from_tch(&format!("placing weight {name}"), e))?;
                tensors.insert(name, placed);
            }
        }
        Ok(Weights {
            tensors: RefCell::new(tensors),
            taken: RefCell::default(),
            prefix: String::new(),
        })
    }

    /// Whether a tensor of this name (under the current prefix) exists.
    pub fn has(&self, name: &str) -> bool {
        let full = format!("{}{name}", self.prefix);
        self.tensors.borrow().contains_key(&full) || self.taken.borrow().contains(&full)
    }

    /// Uses `prefix` (for example `bert.`) for the following lookups.
    pub fn with_prefix(mut self, prefix: &str) -> Weights {
        self.prefix = prefix.to_string();
        self
    }

    /// A tensor by name, under the current prefix.
    pub fn get(&self, name: &str) -> Result<Tensor, PluginError> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self.tensors.borrow().get(&full).map(|t| t.shallow_clone());
        tensor.ok_or_else(|| self.missing(full))
    }

    /// A tensor by name, under the current prefix, taken out: its memory goes when the caller
    /// drops it, and it cannot be asked for again.
    pub fn take(&self, name: &str) -> Result<Tensor, PluginError> {
        let full = format!("{}{name}", self.prefix);
        let tensor = self.tensors.borrow_mut().remove(&full);
        match tensor {
            Some(t) => {
                self.taken.borrow_mut().insert(full);
                Ok(t)
            }
            None => Err(self.missing(full)),
        }
    }

    fn missing(&self, full: String) -> PluginError {
        if self.taken.borrow().contains(&full) {
            PluginError::internal(format!(
                "weight {full} was read twice by the model's layers"
            ))
        } else {
            PluginError::invalid_input(format!("the checkpoint has no tensor {full}"))
        }
    }
}
