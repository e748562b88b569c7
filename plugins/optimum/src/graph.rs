//! One ONNX Runtime session per model: inputs from token batches, pooled outputs.

use crate::{pooling, runtime};
use ember_plugin_api::{
    plugin_info, plugin_warn, DType, DeviceKind, EmbeddingBatch, ErrorCode, LoadRequest,
    LoadedModel, Model, ModelKind, PluginError, Pooling, TokenBatch,
};
use ort::ep;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use std::path::Path;
use std::sync::Mutex;

/// A loaded ONNX model.
pub struct OnnxModel {
    // `Session::run` needs `&mut`; the host serialises calls, the mutex makes that sound.
    session: Mutex<Session>,
    takes_token_types: bool,
    output: String,
    pooling: Pooling,
    dim: usize,
    device: String,
    dtype: DType,
}

fn ort_err(what: &str) -> impl Fn(ort::Error) -> PluginError + '_ {
    move |e| {
        let msg = e.to_string();
        let code = if msg.contains("Failed to allocate memory") || msg.contains("out of memory") {
            ErrorCode::OutOfMemory
        } else {
            ErrorCode::Internal
        };
        PluginError::new(code, format!("{what}: {msg}"))
    }
}

impl OnnxModel {
    /// Creates the session for `request`, on CUDA when asked for and available.
    pub fn load(request: &LoadRequest) -> Result<Self, PluginError> {
        let rt = runtime::get()?;
        let manifest = &request.manifest;
        if manifest.kind != ModelKind::Embed {
            return Err(PluginError::unsupported(format!(
                "the optimum backend does not run {} models yet",
                manifest.kind.as_str()
            )));
        }
        let file = request
            .files
            .iter()
            .find(|f| f.ends_with(".onnx"))
            .ok_or_else(|| PluginError::unsupported("no .onnx file among the selected files"))?;
        let path = Path::new(request.model_dir.as_str()).join(file.as_str());

        let use_cuda = match request.device.kind {
            DeviceKind::Cpu => false,
            DeviceKind::Cuda if !rt.cuda_available => {
                return Err(PluginError::unsupported(
                    "DEVICE asks for CUDA but this onnxruntime has no CUDA execution provider \
                     (install the onnxruntime-gpu wheel)",
                ))
            }
            DeviceKind::Cuda => true,
            DeviceKind::Auto => rt.cuda_available,
        };
        let threads = match request.intra_op_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let mut builder = Session::builder(&rt.env)
            .map_err(ort_err("session builder"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| PluginError::internal(format!("optimization level: {e}")))?
            .with_intra_threads(threads)
            .map_err(|e| PluginError::internal(format!("intra-op threads: {e}")))?;
        let mut device = "cpu".to_string();
        if use_cuda {
            let cuda = ep::CUDA::default()
                .with_device_id(request.device.ordinal as i32)
                .build()
                .error_on_failure();
            match builder.with_execution_providers([cuda]) {
                Ok(b) => {
                    builder = b;
                    device = format!("cuda:{}", request.device.ordinal);
                }
                Err(e) if request.device.kind == DeviceKind::Auto => {
                    plugin_warn!(
                        "optimum",
                        "CUDA execution provider failed ({e}); using the CPU"
                    );
                    builder = e.recover();
                }
                Err(e) => {
                    return Err(PluginError::new(
                        ErrorCode::Device,
                        format!("CUDA execution provider: {e}"),
                    ))
                }
            }
        }
        let session = builder
            .commit_from_file(&path)
            .map_err(ort_err(&format!("loading {}", path.display())))?;

        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for needed in ["input_ids", "attention_mask"] {
            if !inputs.iter().any(|i| i == needed) {
                return Err(PluginError::unsupported(format!(
                    "{} has no `{needed}` input (inputs: {})",
                    path.display(),
                    inputs.join(", ")
                )));
            }
        }
        let takes_token_types = inputs.iter().any(|i| i == "token_type_ids");
        let outlet = session
            .outputs()
            .iter()
            .find(|o| o.name() == "last_hidden_state")
            .or_else(|| session.outputs().first())
            .ok_or_else(|| {
                PluginError::unsupported(format!("{} has no outputs", path.display()))
            })?;
        let output = outlet.name().to_string();
        let dim = match outlet.dtype() {
            ValueType::Tensor { shape, .. } => shape.last().copied().filter(|d| *d > 0),
            _ => None,
        }
        .map_or(manifest.hidden_size as usize, |d| d as usize);
        let dtype = match request.dtype {
            DType::Auto => DType::Fp32,
            d => d,
        };
        plugin_info!(
            "optimum",
            "loaded {} on {device} ({} threads, output `{output}`, dim {dim}, pooling {})",
            path.display(),
            threads,
            manifest.pooling.as_str()
        );
        Ok(OnnxModel {
            session: Mutex::new(session),
            takes_token_types,
            output,
            pooling: manifest.pooling,
            dim,
            device,
            dtype,
        })
    }
}

impl Model for OnnxModel {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: self.dim as u32,
            device: self.device.clone().into(),
            dtype: self.dtype,
            concurrent_calls: false,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let rows = batch.rows as usize;
        let seq = batch.seq_len as usize;
        if rows == 0 {
            return Ok(EmbeddingBatch {
                rows: 0,
                dim: self.dim as u32,
                values: Vec::new().into(),
            });
        }
        let shape = [rows as i64, seq as i64];
        let tensor =
            |v: &[i64]| Tensor::from_array((shape, v.to_vec())).map_err(ort_err("input tensor"));
        let mut inputs = vec![
            ("input_ids", tensor(&batch.input_ids)?),
            ("attention_mask", tensor(&batch.attention_mask)?),
        ];
        if self.takes_token_types {
            inputs.push(("token_type_ids", tensor(&batch.token_type_ids)?));
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| PluginError::internal("session mutex poisoned by an earlier panic"))?;
        let outputs = session.run(inputs).map_err(ort_err("forward"))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| PluginError::internal(format!("output `{}` missing", self.output)))?;
        let (out_shape, data): (Vec<i64>, Vec<f32>) = match value.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float16,
                ..
            } => {
                let (s, d) = value
                    .try_extract_tensor::<half::f16>()
                    .map_err(ort_err("output"))?;
                (s.to_vec(), d.iter().map(|x| x.to_f32()).collect())
            }
            _ => {
                let (s, d) = value
                    .try_extract_tensor::<f32>()
                    .map_err(ort_err("output"))?;
                (s.to_vec(), d.to_vec())
            }
        };
        let values = match out_shape.as_slice() {
            // Token states: pool them here.
            [r, s, h] if *r as usize == rows && *s as usize == seq => pooling::pool(
                self.pooling,
                &data,
                &batch.attention_mask,
                rows,
                seq,
                *h as usize,
            ),
            // Already pooled (exports with a sentence_embedding output).
            [r, _] if *r as usize == rows => data,
            other => {
                return Err(PluginError::internal(format!(
                    "unexpected output shape {other:?} for a batch of {rows}x{seq}"
                )))
            }
        };
        let dim = values.len() / rows;
        Ok(EmbeddingBatch {
            rows: rows as u32,
            dim: dim as u32,
            values: values.into(),
        })
    }
}
