//! `DEVICE` and `DTYPES` to libtorch's device and tensor kind.

use ember_plugin_api::{DType, DeviceKind, DeviceRequest, PluginError};
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

/// The device a model runs on.
pub fn device(request: DeviceRequest) -> Result<Device, PluginError> {
    let cuda = tch::Cuda::is_available();
    match request.kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Auto if cuda => Ok(Device::Cuda(request.ordinal as usize)),
        DeviceKind::Auto => Ok(Device::Cpu),
        DeviceKind::Cuda if !cuda => Err(PluginError::unsupported(
            "DEVICE asks for CUDA but libtorch sees no CUDA device",
        )),
        DeviceKind::Cuda => {
            let n = tch::Cuda::device_count() as u32;
            if request.ordinal >= n {
                return Err(PluginError::unsupported(format!(
                    "DEVICE=cuda:{} but only {n} CUDA device(s) are visible",
                    request.ordinal
                )));
            }
            Ok(Device::Cuda(request.ordinal as usize))
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
