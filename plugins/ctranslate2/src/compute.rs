//! `DEVICE` and `DTYPES` to CTranslate2's device and compute type.

use crate::ffi;
use ember_plugin_api::{DType, DeviceKind, DeviceRequest, PluginError};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(i32),
}

impl Device {
    /// The device for a request: CUDA when asked or, for `auto`, when CTranslate2 sees a GPU.
    pub fn of(request: DeviceRequest) -> Result<Device, PluginError> {
        let gpus = ffi::cuda_device_count();
        match request.kind {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Auto if gpus > 0 => Ok(Device::Cuda(request.ordinal as i32)),
            DeviceKind::Auto => Ok(Device::Cpu),
            DeviceKind::Cuda if gpus == 0 => Err(PluginError::unsupported(
                "DEVICE asks for CUDA but CTranslate2 sees no CUDA device",
            )),
            DeviceKind::Cuda if request.ordinal as i32 >= gpus => {
                Err(PluginError::unsupported(format!(
                    "DEVICE=cuda:{} but only {gpus} CUDA device(s) are visible",
                    request.ordinal
                )))
            }
            DeviceKind::Cuda => Ok(Device::Cuda(request.ordinal as i32)),
        }
    }

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
/// int8 weights with fp16 arithmetic on CUDA and int8 on CPUs that have int8 kernels.
pub fn compute_type(dtype: DType, device: Device) -> Result<(&'static str, DType), PluginError> {
    check_dtype(dtype)?;
    let (name, index) = device.ct2();
    let native = |t: &str| ffi::supports(name, index, t);
    let chosen = match (dtype, device) {
        (DType::Auto, Device::Cuda(_)) | (DType::Int8, Device::Cuda(_)) => {
            ("int8_float16", DType::Int8)
        }
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
