//! `DEVICE` and `DTYPES` to libtorch's device and tensor kind.

use ember_plugin_api::cuda::{self, Placement};
use ember_plugin_api::{plugin_warn, DType, DeviceKind, DeviceRequest, PluginError};
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
        libraries: &[],
    })
}

/// Whether a model could run on a GPU here, asked of the driver without starting libtorch's CUDA.
pub fn cuda_usable() -> bool {
    let auto = DeviceRequest {
        kind: DeviceKind::Auto,
        ordinal: 0,
    };
    needs().is_some_and(|n| {
        cuda::decide(auto, cuda::driver(), &n).is_ok_and(|d| d.placement != Placement::Cpu)
    })
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
    // `auto` on the CPU with the reason logged; `cuda` failing with it.
    let cpu = |reason: &str| -> Result<Device, PluginError> {
        let decision = cuda::refuse(request, reason)?;
        plugin_warn!("torch", "{}", decision.warning.unwrap_or_default());
        Ok(Device::Cpu)
    };
    let Some(needs) = needs() else {
        return cpu("this libtorch is a CPU build");
    };
    match cuda::preflight("torch", request, &needs)?.placement {
        Placement::Cpu => Ok(Device::Cpu),
        Placement::Cuda(n) if (n as i64) < tch::Cuda::device_count() => {
            Ok(Device::Cuda(n as usize))
        }
        Placement::Cuda(_) => {
            // The driver can run it, yet libtorch's CUDA did not start (its CUDA libraries,
            // libtorch_cuda, failed to load): libtorch only says so in a warning.
            let reason = "the driver sees the GPU but libtorch does not (its CUDA libraries                           under torch/lib and nvidia/ did not load; see the warning above)";
            let decision = cuda::refuse(request, reason)?;
            plugin_warn!("torch", "{}", decision.warning.unwrap_or_default());
            Ok(Device::Cpu)
        }
    }
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
