//! One ONNX Runtime session: opened on the requested device, fed named tensors, read back as
//! float32 whatever precision the graph computes in.

use crate::runtime;
use ember_plugin_api::cuda::{self, Placement};
use ember_plugin_api::{plugin_info, DeviceKind, ErrorCode, LoadRequest, PluginError};
use ort::ep;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use std::path::Path;
use std::sync::Mutex;

/// Maps an ONNX Runtime error to a plugin error, recognising out-of-memory.
pub fn ort_err(what: &str) -> impl Fn(ort::Error) -> PluginError + '_ {
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

/// A float32 tensor read back from a graph.
pub struct Output {
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// An input tensor before it is typed for the graph.
pub enum Feed<'a> {
    /// Integer ids or masks.
    Int(Vec<i64>, &'a [i64]),
    /// Floating-point values (converted to float16 where the graph wants that).
    Float(Vec<i64>, &'a [f32]),
}

/// What the CUDA execution provider of the GPU variant's `onnxruntime-gpu` 1.31.1 needs: a
/// CUDA 13 build (libcudart.so.13, cuBLAS 13) with kernels for sm_75, 80, 86, 89, 90 and 120
/// and no PTX (read with scripts/cuda-kernels.py).
const NEEDS: cuda::Needs = cuda::Needs {
    runtime: "onnxruntime-gpu 1.31",
    cuda: cuda::CudaVersion::new(13, 0),
    min_driver: "580",
    kernels: &[75, 80, 86, 89, 90, 120],
    ptx: None,
    ptx_cuda: None,
    libraries: &[],
};

/// Where the request's model is to run: the driver preflight's decision for this runtime (the
/// CPU when this onnxruntime has no CUDA provider and `DEVICE` is `auto`, with a warning where
/// the machine has an NVIDIA driver).
pub fn placement(request: &LoadRequest) -> Result<Placement, PluginError> {
    let rt = runtime::get()?;
    Ok(match request.device.kind {
        DeviceKind::Cpu => Placement::Cpu,
        DeviceKind::Cuda if !rt.cuda_available => {
            return Err(PluginError::unsupported(
                "DEVICE asks for CUDA but this onnxruntime has no CUDA execution provider \
                 (install the onnxruntime-gpu wheel)",
            ))
        }
        // A machine with an NVIDIA driver that this onnxruntime cannot use is worth a warning;
        // one without a driver is not.
        DeviceKind::Auto if !rt.cuda_available => match cuda::driver_present() {
            true => cuda::fall_back(
                "optimum",
                request.device,
                "this onnxruntime has no CUDA execution provider (the GPU image ships \
                 onnxruntime-gpu)",
            )?,
            false => Placement::Cpu,
        },
        _ => cuda::preflight("optimum", request.device, &NEEDS)?,
    })
}

/// Whether a model may run on a GPU here (the files to fetch depend on it, before the device
/// is decided): this onnxruntime has the CUDA provider and the container has an NVIDIA driver.
/// The driver is not started for this.
pub fn gpu_likely() -> bool {
    runtime::get().is_ok_and(|rt| rt.cuda_available) && cuda::driver_present()
}

/// A session for the graph at `path` on `on`. On CUDA: convolution algorithms chosen by
/// heuristics (an exhaustive search per new input shape stalls the first requests of every
/// batch size), the memory arena grown by what is asked (not in powers of two), and no TF32,
/// so that fp32 graphs compute in fp32 as sentence-transformers does.
fn session(
    env: &ort::environment::Environment,
    path: &Path,
    threads: usize,
    on: Placement,
) -> Result<Session, PluginError> {
    let mut builder = Session::builder(env)
        .map_err(ort_err("session builder"))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| PluginError::internal(format!("optimization level: {e}")))?
        .with_intra_threads(threads)
        .map_err(|e| PluginError::internal(format!("intra-op threads: {e}")))?;
    if let Placement::Cuda(ordinal) = on {
        let provider = ep::CUDA::default()
            .with_device_id(ordinal as i32)
            .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Heuristic)
            .with_arena_extend_strategy(ep::ArenaExtendStrategy::SameAsRequested)
            .with_tf32(false)
            .build()
            .error_on_failure();
        builder = builder
            .with_execution_providers([provider])
            .map_err(|e| PluginError::new(ErrorCode::Device, format!("CUDA provider: {e}")))?;
    }
    builder
        .commit_from_file(path)
        .map_err(ort_err(&format!("loading {}", path.display())))
}

/// An opened ONNX graph.
pub struct Graph {
    // `Session::run` needs `&mut`; the host serialises calls, the mutex makes that sound.
    session: Mutex<Session>,
    inputs: Vec<(String, Option<TensorElementType>)>,
    /// The key/value cache inputs of a decoder export (`past_key_values.N.key` / `.value`)
    /// with their declared dimensions (negative where symbolic).
    cache_inputs: Vec<(String, Vec<i64>)>,
    outputs: Vec<(String, Option<i64>)>,
    /// Where the graph was read from (for messages).
    pub path: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

impl Graph {
    /// Opens `file` of the request's model directory on `placement` (from [`placement`]).
    pub fn open(
        request: &LoadRequest,
        file: &str,
        placement: Placement,
    ) -> Result<Graph, PluginError> {
        let rt = runtime::get()?;
        let path = Path::new(request.model_dir.as_str()).join(file);
        let threads = match request.intra_op_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let session = session(&rt.env, &path, threads, placement)?;
        let device = placement.to_string();
        let inputs = session
            .inputs()
            .iter()
            .map(|i| {
                let ty = match i.dtype() {
                    ValueType::Tensor { ty, .. } => Some(*ty),
                    _ => None,
                };
                (i.name().to_string(), ty)
            })
            .collect();
        let cache_inputs = session
            .inputs()
            .iter()
            .filter(|i| i.name().starts_with("past_key_values."))
            .filter_map(|i| match i.dtype() {
                ValueType::Tensor { shape, .. } => {
                    Some((i.name().to_string(), shape.iter().copied().collect()))
                }
                _ => None,
            })
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| {
                let last = match o.dtype() {
                    ValueType::Tensor { shape, .. } => shape.last().copied().filter(|d| *d > 0),
                    _ => None,
                };
                (o.name().to_string(), last)
            })
            .collect();
        plugin_info!(
            "optimum",
            "loaded {} on {device} ({threads} threads)",
            path.display()
        );
        Ok(Graph {
            session: Mutex::new(session),
            inputs,
            cache_inputs,
            outputs,
            path: path.display().to_string(),
            device,
        })
    }

    /// Whether the graph takes an input of this name.
    pub fn takes(&self, name: &str) -> bool {
        self.inputs.iter().any(|(n, _)| n == name)
    }

    /// The shapes of an empty key/value cache for `rows` rows, one per cache input of a decoder
    /// export: the batch dimension `rows`, every other symbolic dimension (the past length) 0.
    pub fn empty_cache(&self, rows: usize) -> Vec<(&str, Vec<i64>)> {
        self.cache_inputs
            .iter()
            .map(|(name, dims)| {
                let shape = dims
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match (i, d) {
                        (0, _) => rows as i64,
                        (_, d) if d < 0 => 0,
                        (_, d) => d,
                    })
                    .collect();
                (name.as_str(), shape)
            })
            .collect()
    }

    /// Fails unless the graph takes every input in `names`.
    pub fn require_inputs(&self, names: &[&str]) -> Result<(), PluginError> {
        for needed in names {
            if !self.takes(needed) {
                let have: Vec<&str> = self.inputs.iter().map(|(n, _)| n.as_str()).collect();
                return Err(PluginError::unsupported(format!(
                    "{} has no `{needed}` input (inputs: {})",
                    self.path,
                    have.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The first output named in `preferred`, else the first output; with its last dimension
    /// when the graph declares it.
    pub fn pick_output(&self, preferred: &[&str]) -> Result<(String, Option<i64>), PluginError> {
        preferred
            .iter()
            .find_map(|p| self.outputs.iter().find(|(n, _)| n == p))
            .or_else(|| self.outputs.first())
            .cloned()
            .ok_or_else(|| PluginError::unsupported(format!("{} has no outputs", self.path)))
    }

    /// Names of all outputs.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn value(&self, name: &str, feed: Feed<'_>) -> Result<DynValue, PluginError> {
        let wants_f16 = self
            .inputs
            .iter()
            .any(|(n, t)| n == name && *t == Some(TensorElementType::Float16));
        let what = format!("input `{name}`");
        Ok(match feed {
            Feed::Int(shape, v) => Tensor::from_array((shape, v.to_vec()))
                .map_err(ort_err(&what))?
                .into_dyn(),
            Feed::Float(shape, v) if wants_f16 => {
                let halves: Vec<half::f16> = v.iter().map(|x| half::f16::from_f32(*x)).collect();
                Tensor::from_array((shape, halves))
                    .map_err(ort_err(&what))?
                    .into_dyn()
            }
            Feed::Float(shape, v) => Tensor::from_array((shape, v.to_vec()))
                .map_err(ort_err(&what))?
                .into_dyn(),
        })
    }

    /// Runs the graph on `feeds` (inputs it does not take are skipped) and reads `output`.
    pub fn run(&self, feeds: Vec<(&str, Feed<'_>)>, output: &str) -> Result<Output, PluginError> {
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(feeds.len());
        for (name, feed) in feeds {
            if self.takes(name) {
                inputs.push((name.to_string(), self.value(name, feed)?));
            }
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| PluginError::internal("session mutex poisoned by an earlier panic"))?;
        let outputs = session.run(inputs).map_err(ort_err("forward"))?;
        let value = outputs
            .get(output)
            .ok_or_else(|| PluginError::internal(format!("output `{output}` missing")))?;
        let (shape, data) = match value.dtype() {
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
        Ok(Output { shape, data })
    }
}
