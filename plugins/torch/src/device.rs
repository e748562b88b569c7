//! `DEVICE` and `DTYPES` to libtorch's device and tensor kind.

use ember_plugin_api::cuda::{self, Placement};
use ember_plugin_api::{DType, DeviceKind, DeviceRequest, PluginError};
use std::sync::OnceLock;
use tch::{Device, Kind};

/// Refuses the precisions this backend does not compute in.
pub fn check_dtype(dtype: DType) -> Result<(), PluginError> {
    match dtype {
        DType::Auto | DType::Fp32 | DType::Fp16 | DType::Bf16 => Ok(()),
        other => Err(PluginError::unsupported(format!(
            "the torch backend computes in fp32, fp16 or bf16; DTYPES={} is not available \
             (use auto, or the optimum/ctranslate2 backends for int8)",
            other.as_str()
        ))),
    }
}

/// The CUDA version libtorch was built for (`13.0`), empty for a CPU build.
const BUILT_FOR: &str = env!("EMBER_TORCH_CUDA");

/// What this libtorch needs of a GPU: the pinned `torch` wheel's CUDA, and the architectures
/// its kernels are compiled for (torch 2.13+cu130: sm_75 to sm_121, no PTX, as
/// scripts/cuda-kernels.py reads libtorch_cuda.so). `None` for a CPU build.
fn needs() -> Option<cuda::Needs> {
    let (major, minor) = BUILT_FOR.split_once('.')?;
    let cuda = cuda::CudaVersion::new(major.parse().ok()?, minor.parse().ok()?);
    Some(cuda::Needs {
        runtime: "libtorch 2.13",
        cuda,
        min_driver: if cuda.major() >= 13 { "580" } else { "525" },
        kernels: &[75, 80, 86, 89, 90, 100, 103, 120, 121],
        ptx: None,
        ptx_cuda: None,
        libraries: &[],
    })
}

/// Whether this libtorch is built for CUDA (whether this machine can run it is decided at load,
/// so that `info` neither starts the driver nor libtorch's CUDA).
pub fn cuda_built() -> bool {
    needs().is_some()
}

/// The runtime as `info` reports it.
pub fn runtime() -> String {
    match BUILT_FOR {
        "" => "libtorch 2.13 (tch 0.26), CPU build".into(),
        cuda => format!("libtorch 2.13 (tch 0.26), built for CUDA {cuda}"),
    }
}

/// The device a model runs on: the driver preflight's decision, then libtorch's own view.
pub fn device(request: DeviceRequest) -> Result<Device, PluginError> {
    if request.kind == DeviceKind::Cpu {
        return Ok(Device::Cpu);
    }
    let Some(needs) = needs() else {
        return cpu(request, "this libtorch is a CPU build");
    };
    let Placement::Cuda(n) = cuda::preflight("torch", request, &needs)? else {
        return Ok(Device::Cpu);
    };
    if let Err(why) = start_cuda() {
        return cpu(request, &why);
    }
    if (n as i64) < tch::Cuda::device_count() {
        return Ok(Device::Cuda(n as usize));
    }
    // The driver can run it, yet libtorch sees no device (its CUDA libraries under torch/lib
    // and nvidia/ did not start): libtorch says why only in a warning of its own.
    cpu(
        request,
        "the driver sees the GPU but libtorch does not (see libtorch's warning above)",
    )
}

/// The CPU for `auto` with `reason` logged; for `cuda` the error that gives it.
fn cpu(request: DeviceRequest, reason: &str) -> Result<Device, PluginError> {
    cuda::fall_back("torch", request, reason).map(|_| Device::Cpu)
}

/// Loads libtorch's CUDA backend (`libtorch_cuda.so`, beside libtorch_cpu through the
/// plugin's rpath), once: its initialisers register the CUDA kernels and hooks. The plugin does
/// not link it, so the CPU never reads it. Nothing may ask libtorch about CUDA before this
/// (`tch::Cuda::*`, `manual_seed`, `Device::cuda_if_available`): libtorch would remember that
/// there is none.
fn start_cuda() -> Result<(), String> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
            // SAFETY: libtorch's own CUDA library, of the same build as the libtorch_cpu
            // already loaded; it stays loaded for the life of the process.
            match unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_LOCAL) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    crate::aten::use_cudnn_attention(false);
                    Ok(())
                }
                Err(e) => Err(format!(
                    "libtorch's CUDA backend cannot be loaded ({}); an image without CUDA \
                     libraries runs torch on the CPU only",
                    cuda::loader_error(&e)
                )),
            }
        })
        .clone()
}

/// The tensor kind for `dtype` on `device` (`auto`: fp16 on CUDA, fp32 on the CPU).
pub fn kind(dtype: DType, device: Device) -> Result<(Kind, DType), PluginError> {
    check_dtype(dtype)?;
    Ok(match (dtype, device) {
        (DType::Auto, Device::Cuda(_)) | (DType::Fp16, _) => (Kind::Half, DType::Fp16),
        (DType::Bf16, _) => (Kind::BFloat16, DType::Bf16),
        _ => (Kind::Float, DType::Fp32),
    })
}

/// A device as the host reports it.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}
