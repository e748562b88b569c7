//! A Hugging Face checkpoint on disk: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`, memory-mapped, with tensors looked up by name.

use ember_plugin_api::PluginError;
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// One memory-mapped safetensors file and its parsed header.
struct Shard {
    map: Mmap,
    data_start: usize,
    metadata: Metadata,
}

/// A tensor of the checkpoint: its element type, shape and raw little-endian bytes.
pub struct Tensor<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: &'a [usize],
    /// Raw bytes.
    pub bytes: &'a [u8],
}

impl Tensor<'_> {
    /// The values as f32 (from f32, f16 or bf16).
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        ember_plugin_api::safetensors::floats(self.dtype, self.bytes)
    }
}

/// The weight files of a checkpoint.
pub struct Checkpoint {
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_input(format!("{}: {e}", path.display()))
}

impl Checkpoint {
    /// Maps the checkpoint's `files` in `dir` (as `safetensors::weight_files` chooses them).
    pub fn open(dir: &Path, files: &[String]) -> Result<Checkpoint, PluginError> {
        let names: Vec<String> = if files.iter().any(|f| f == "model.safetensors.index.json") {
            let path = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&path).map_err(|e| invalid(&path, e))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| invalid(&path, e))?;
            let map = v["weight_map"]
                .as_object()
                .ok_or_else(|| invalid(&path, "no weight_map"))?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            shards.sort();
            shards.dedup();
            shards
        } else {
            files.to_vec()
        };
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let file = std::fs::File::open(&path).map_err(|e| invalid(&path, e))?;
            // SAFETY: the file is only read; the hub cache never rewrites a blob in place.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| invalid(&path, e))?;
            let (header, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| invalid(&path, e))?;
            for tensor in metadata.tensors().keys() {
                index.insert(tensor.clone(), shards.len());
            }
            shards.push(Shard {
                map,
                data_start: 8 + header,
                metadata,
            });
        }
        Ok(Checkpoint { shards, index })
    }

    /// Whether the checkpoint has a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<Tensor<'_>, PluginError> {
        let shard = self
            .index
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| {
                PluginError::invalid_input(format!("the checkpoint has no tensor {name}"))
            })?;
        let info: &TensorInfo = shard
            .metadata
            .info(name)
            .ok_or_else(|| PluginError::internal(format!("tensor {name} vanished")))?;
        let (start, end) = info.data_offsets;
        let bytes = shard
            .map
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| {
                PluginError::invalid_input(format!("tensor {name} lies outside its file"))
            })?;
        Ok(Tensor {
            dtype: info.dtype,
            shape: &info.shape,
            bytes,
        })
    }
}
