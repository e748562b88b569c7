//! `DEVICE` and `DTYPES` to CTranslate2's device and compute type.

use crate::ffi;
use ember_plugin_api::cuda::{self, Placement};
use ember_plugin_api::{DType, DeviceRequest, PluginError};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(i32),
}

/// What CTranslate2 needs of a GPU: the pinned wheel (4.8.4) is a CUDA 12 build with kernels
/// for sm_53 to sm_86 and PTX for compute_86 written by CUDA 12.8 (ISA 8.7: Hopper and
/// Blackwell compile it at their first start, with a driver of 570 or newer), and it opens
/// cuBLAS 12 only at its first matrix product (read with scripts/cuda-kernels.py).
const NEEDS: cuda::Needs = cuda::Needs {
    runtime: "CTranslate2 4.8",
    cuda: cuda::CudaVersion::new(12, 0),
    min_driver: "525",
    kernels: &[53, 60, 61, 70, 75, 80, 86],
    ptx: Some(86),
    ptx_cuda: Some(cuda::CudaVersion::new(12, 8)),
    libraries: &["libcublas.so.12"],
};

/// Where a model for `request` runs: the driver preflight's decision, then CTranslate2's own
/// view of the GPU.
pub fn placement(request: DeviceRequest) -> Result<Placement, PluginError> {
    match cuda::preflight("ctranslate2", request, &NEEDS)? {
        Placement::Cuda(n) if (n as i32) >= ffi::cuda_device_count() => cuda::fall_back(
            "ctranslate2",
            request,
            "the driver sees the GPU but CTranslate2 does not",
        ),
        placement => Ok(placement),
    }
}

impl From<Placement> for Device {
    fn from(placement: Placement) -> Device {
        match placement {
            Placement::Cpu => Device::Cpu,
            Placement::Cuda(i) => Device::Cuda(i as i32),
        }
    }
}

impl Device {
    /// CTranslate2's device name and index.
    pub fn ct2(self) -> (&'static str, i32) {
        match self {
            Device::Cpu => ("cpu", 0),
            Device::Cuda(i) => ("cuda", i),
        }
    }

    /// The device as the host reports it.
    pub fn name(self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(i) => format!("cuda:{i}"),
        }
    }
}

/// Refuses the precisions this backend has no compute type for.
pub fn check_dtype(dtype: DType) -> Result<(), PluginError> {
    match dtype {
        DType::Fp8 => Err(PluginError::unsupported(
            "the ctranslate2 backend computes in fp32, fp16, bf16 or int8; DTYPES=fp8 is not \
             available",
        )),
        _ => Ok(()),
    }
}

/// The compute type for `dtype` on `device`, and the precision reported for it. `auto` is
/// float16 on CUDA (cosine 0.999+ to float32, where int8_float16 keeps about 0.97) and int8 on
/// CPUs that have int8 kernels.
pub fn compute_type(dtype: DType, device: Device) -> Result<(&'static str, DType), PluginError> {
    check_dtype(dtype)?;
    let (name, index) = device.ct2();
    let native = |t: &str| ffi::supports(name, index, t);
    let chosen = match (dtype, device) {
        (DType::Auto, Device::Cuda(_)) if native("float16") => ("float16", DType::Fp16),
        (DType::Auto, Device::Cuda(_)) => ("float32", DType::Fp32),
        (DType::Int8, Device::Cuda(_)) => ("int8_float16", DType::Int8),
        (DType::Auto, Device::Cpu) if native("int8") => ("int8", DType::Int8),
        (DType::Auto, Device::Cpu) | (DType::Fp32, _) => ("float32", DType::Fp32),
        (DType::Int8, Device::Cpu) => ("int8", DType::Int8),
        (DType::Fp16, _) => ("float16", DType::Fp16),
        (DType::Bf16, _) => ("bfloat16", DType::Bf16),
        (DType::Fp8, _) => unreachable!("refused by check_dtype"),
    };
    let base = match chosen.0 {
        "int8_float16" | "int8" => "int8",
        other => other,
    };
    if !native(base) {
        return Err(PluginError::unsupported(format!(
            "DTYPES={}: CTranslate2 has no {base} kernels on {} (the CPU computes in float32 \
             and int8; fp16 and bf16 need a GPU that supports them)",
            dtype.as_str(),
            device.name()
        )));
    }
    Ok(chosen)
}
