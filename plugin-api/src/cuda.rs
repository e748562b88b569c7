//! The machine's NVIDIA driver and GPUs, read through `libcuda.so.1` (the driver's own library:
//! no CUDA toolkit needed), and the device a plugin runs on as a pure decision from them.
//!
//! A plugin describes what its runtime needs ([`Needs`]: the CUDA version it was built for and
//! the GPU architectures it carries kernels for), and [`decide`] turns `DEVICE` and the driver
//! into a [`Decision`]: `auto` falls back to the CPU with a warning that names the reason,
//! `cuda` fails with that reason (as an [`ErrorCode::Device`] error). `DEVICE=cpu` never
//! starts the driver.

use crate::{DeviceKind, DeviceRequest, ErrorCode, PluginError};
use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::sync::OnceLock;

/// A CUDA version as the driver API numbers it: 1000 × major + 10 × minor (12080 is 12.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CudaVersion(pub i32);

impl CudaVersion {
    /// The version `major.minor`.
    pub const fn new(major: i32, minor: i32) -> CudaVersion {
        CudaVersion(major * 1000 + minor * 10)
    }

    /// The major version.
    pub fn major(self) -> i32 {
        self.0 / 1000
    }
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 1000, (self.0 % 1000) / 10)
    }
}

/// A GPU architecture as `major * 10 + minor` of its compute capability (sm_86 is 86).
pub type Arch = u32;

/// One GPU as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// The product name (`NVIDIA H200`).
    pub name: String,
    /// Its compute capability (`90` for sm_90).
    pub arch: Arch,
    /// Its memory in MiB.
    pub memory_mib: u64,
}

/// What the driver library said about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// No `libcuda.so.1` could be loaded: no NVIDIA driver is mounted in this container.
    Absent(String),
    /// The driver is there but does not work: `cuInit` or a device query failed.
    Failed {
        /// The CUDA version it supports, when it said.
        version: Option<CudaVersion>,
        /// The driver's error (`CUDA_ERROR_NO_DEVICE`, ...).
        error: String,
    },
    /// A working driver and the GPUs this process may use (after `CUDA_VISIBLE_DEVICES`).
    Ready {
        /// The newest CUDA version the driver supports.
        version: CudaVersion,
        /// The visible GPUs, by ordinal.
        gpus: Vec<Gpu>,
    },
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Driver::Absent(why) => write!(f, "no NVIDIA driver ({why})"),
            Driver::Failed {
                version: Some(v),
                error,
            } => write!(f, "NVIDIA driver for CUDA {v} failed to start: {error}"),
            Driver::Failed {
                version: None,
                error,
            } => {
                write!(f, "NVIDIA driver failed to start: {error}")
            }
            Driver::Ready { version, gpus } => {
                write!(f, "NVIDIA driver for CUDA {version}, {} GPU(s)", gpus.len())?;
                for (i, g) in gpus.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { ", " };
                    write!(
                        f,
                        "{sep}cuda:{i} {} (sm_{}, {} MiB)",
                        g.name, g.arch, g.memory_mib
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What a plugin's GPU runtime needs of the driver and the GPU.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The runtime, for messages (`libtorch 2.13`).
    pub runtime: &'static str,
    /// The CUDA version it was built with; the driver must support at least this major.
    pub cuda: CudaVersion,
    /// The first driver release that supports that CUDA major, for messages (`580`).
    pub min_driver: &'static str,
    /// Architectures it carries compiled kernels (SASS) for; empty when not known.
    pub kernels: &'static [Arch],
    /// The architecture of the PTX it carries, which the driver compiles for newer GPUs.
    pub ptx: Option<Arch>,
    /// The CUDA version whose compiler wrote that PTX: a driver compiles only PTX no newer
    /// than its own CUDA version (CTranslate2's PTX ISA 8.7 is CUDA 12.8, driver 570).
    pub ptx_cuda: Option<CudaVersion>,
    /// Libraries it opens only when it first computes on a GPU (CTranslate2's cuBLAS): checked
    /// at start-up, so that a missing one is a start-up error and not a failed request.
    pub libraries: &'static [&'static str],
}

/// How a runtime's kernels reach a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFit {
    /// Compiled kernels for this architecture (or an earlier minor of the same major).
    Native,
    /// Only PTX for an older architecture: the driver compiles it at the first start.
    Jit(Arch),
    /// Nothing that runs on this GPU.
    None,
    /// The runtime's kernel list is not known; assumed to run.
    Unknown,
}

impl Needs {
    /// How this runtime's kernels run on a GPU of architecture `arch`. A cubin for sm_XY runs
    /// on sm_XZ for every Z ≥ Y; PTX for sm_XY compiles for any later architecture.
    pub fn fit(&self, arch: Arch) -> KernelFit {
        if self.kernels.is_empty() && self.ptx.is_none() {
            return KernelFit::Unknown;
        }
        if self
            .kernels
            .iter()
            .any(|&k| k / 10 == arch / 10 && k % 10 <= arch % 10)
        {
            return KernelFit::Native;
        }
        match self.ptx {
            Some(p) if p <= arch => KernelFit::Jit(p),
            _ => KernelFit::None,
        }
    }

    /// The kernels it carries, for messages (`sm_75, sm_80, sm_86 and PTX compute_86`).
    pub fn kernel_list(&self) -> String {
        let mut parts: Vec<String> = self.kernels.iter().map(|k| format!("sm_{k}")).collect();
        if let Some(p) = self.ptx {
            parts.push(format!("PTX compute_{p}"));
        }
        parts.join(", ")
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The CPU.
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(u32),
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Cpu => write!(f, "cpu"),
            Placement::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device chosen, and a warning the plugin logs (the reason `auto` fell back to the CPU,
/// or that kernels are compiled at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Where the model runs.
    pub placement: Placement,
    /// What an operator should know about the choice.
    pub warning: Option<String>,
}

impl Decision {
    /// The CPU, with the reason CUDA was not used.
    pub fn cpu_because(reason: impl Into<String>) -> Decision {
        Decision {
            placement: Placement::Cpu,
            warning: Some(format!("DEVICE=auto runs on the CPU: {}", reason.into())),
        }
    }
}

/// Why CUDA device `ordinal` cannot run `needs` with this driver, or how it runs its kernels.
fn usable(ordinal: u32, driver: &Driver, needs: &Needs) -> Result<KernelFit, String> {
    let (version, gpus) = match driver {
        Driver::Ready { version, gpus } => (*version, gpus),
        other => return Err(other.to_string()),
    };
    if version.major() < needs.cuda.major() {
        return Err(format!(
            "the NVIDIA driver supports CUDA {version}, but {} is built for CUDA {} and needs a \
             driver of the {} series or newer",
            needs.runtime, needs.cuda, needs.min_driver
        ));
    }
    if gpus.is_empty() {
        return Err(
            "the NVIDIA driver sees no GPU (check CUDA_VISIBLE_DEVICES and the \
                    container's --gpus)"
                .into(),
        );
    }
    let Some(gpu) = gpus.get(ordinal as usize) else {
        return Err(format!(
            "there is no cuda:{ordinal}: only {} CUDA device(s) are visible",
            gpus.len()
        ));
    };
    match needs.fit(gpu.arch) {
        KernelFit::None => Err(format!(
            "{} (sm_{}) is not supported by {}, which has kernels for {} only",
            gpu.name,
            gpu.arch,
            needs.runtime,
            needs.kernel_list()
        )),
        KernelFit::Jit(_) if needs.ptx_cuda.is_some_and(|ptx| version < ptx) => Err(format!(
            "{} (sm_{}) has no compiled kernels in {}, whose PTX needs a driver for CUDA {} \
             or newer to be compiled; this driver supports CUDA {version}",
            gpu.name,
            gpu.arch,
            needs.runtime,
            needs.ptx_cuda.unwrap_or(version)
        )),
        fit => Ok(fit),
    }
}

/// The device for `request` given the driver and the runtime's needs: `cpu` always; `cuda:N`
/// when device N can run the runtime, else a [`ErrorCode::Device`] error with the reason;
/// `auto` as `cuda:N` when it can, else the CPU with the reason as a warning.
pub fn decide(
    request: DeviceRequest,
    driver: &Driver,
    needs: &Needs,
) -> Result<Decision, PluginError> {
    if request.kind == DeviceKind::Cpu {
        return Ok(Decision {
            placement: Placement::Cpu,
            warning: None,
        });
    }
    match usable(request.ordinal, driver, needs) {
        Ok(fit) => Ok(Decision {
            placement: Placement::Cuda(request.ordinal),
            warning: match fit {
                KernelFit::Jit(ptx) => Some(format!(
                    "{} has no compiled kernels for this GPU; the driver compiles its \
                     compute_{ptx} PTX at start (slow first start; kept in the CUDA JIT cache)",
                    needs.runtime
                )),
                _ => None,
            },
        }),
        Err(reason) => refuse(request, reason),
    }
}

/// The first of `libraries` that cannot be opened, with the loader's reason.
fn missing_library(libraries: &[&str]) -> Option<String> {
    libraries.iter().find_map(|name| {
        // SAFETY: a CUDA library of the runtime's own (cuBLAS), opened as the runtime itself
        // will open it; it stays loaded for the runtime.
        match unsafe { libloading::Library::new(*name) } {
            Ok(lib) => {
                std::mem::forget(lib);
                None
            }
            Err(e) => Some(format!("{name} cannot be loaded ({})", loader_error(&e))),
        }
    })
}

/// [`decide`] on this machine's driver, logging the driver and any warning to the host's log
/// under `plugin`, and checking that the runtime's lazily opened libraries load. Returns where
/// the model runs.
pub fn preflight(
    plugin: &str,
    request: DeviceRequest,
    needs: &Needs,
) -> Result<Placement, PluginError> {
    if request.kind == DeviceKind::Cpu {
        return Ok(Placement::Cpu);
    }
    let driver = driver();
    crate::plugin_info!(
        plugin,
        "{driver}; {} needs CUDA {}",
        needs.runtime,
        needs.cuda
    );
    let decision = decide(request, driver, needs)?;
    if decision.placement != Placement::Cpu {
        if let Some(reason) = missing_library(needs.libraries) {
            return fall_back(plugin, request, reason);
        }
    }
    if let Some(warning) = &decision.warning {
        crate::plugin_warn!(plugin, "{warning}");
    }
    Ok(decision.placement)
}

/// `auto` on the CPU for `reason`, or for `cuda` the [`ErrorCode::Device`] error it gives.
pub fn refuse(request: DeviceRequest, reason: impl Into<String>) -> Result<Decision, PluginError> {
    let reason = reason.into();
    match request.kind {
        DeviceKind::Cuda => Err(PluginError::new(
            ErrorCode::Device,
            format!("DEVICE={request} cannot be used: {reason}"),
        )),
        _ => Ok(Decision::cpu_because(reason)),
    }
}

/// [`refuse`] for a reason found after the preflight (the runtime's own view of the GPU),
/// logging the fall-back to the CPU under `plugin`.
pub fn fall_back(
    plugin: &str,
    request: DeviceRequest,
    reason: impl Into<String>,
) -> Result<Placement, PluginError> {
    let decision = refuse(request, reason)?;
    if let Some(warning) = &decision.warning {
        crate::plugin_warn!(plugin, "{warning}");
    }
    Ok(decision.placement)
}

/// Runs `open` on the decided device; when that fails on a GPU under `DEVICE=auto` for a
/// reason of the device (a runtime whose CUDA libraries, kernels or memory fail only when first
/// used: an internal, device or memory error), logs why and runs it on the CPU. Under
/// `DEVICE=cuda` such a failure is a [`ErrorCode::Device`] error (memory keeps its class);
/// errors of the model itself (invalid input, unsupported) are returned as they are. Returns
/// the value and where it was made.
pub fn or_cpu<T>(
    plugin: &str,
    request: DeviceRequest,
    placement: Placement,
    mut open: impl FnMut(Placement) -> Result<T, PluginError>,
) -> Result<(T, Placement), PluginError> {
    let e = match open(placement) {
        Ok(value) => return Ok((value, placement)),
        Err(e) => e,
    };
    let of_device = matches!(
        e.code,
        ErrorCode::Internal | ErrorCode::Device | ErrorCode::OutOfMemory
    );
    if placement == Placement::Cpu || !of_device {
        return Err(e);
    }
    if request.kind == DeviceKind::Auto {
        crate::plugin_warn!(
            plugin,
            "DEVICE=auto runs on the CPU: {placement} failed: {}",
            e.message
        );
        return open(Placement::Cpu).map(|value| (value, Placement::Cpu));
    }
    Err(match e.code {
        ErrorCode::OutOfMemory => e,
        _ => PluginError::new(
            ErrorCode::Device,
            format!("DEVICE={request}: {}", e.message),
        ),
    })
}

/// Whether an NVIDIA driver library is in this container, without starting it (cheap; for
/// choices made before the device is decided, such as which files to fetch).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: the driver's library, loaded and left loaded; no function of it is called.
        unsafe { libloading::Library::new("libcuda.so.1") }
            .map(std::mem::forget)
            .is_ok()
    })
}

/// The driver of this machine, probed once per process.
pub fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(probe)
}

/// The dynamic loader's own words for a failed `dlopen` (libloading's message alone is
/// "dlopen failed").
pub fn loader_error(e: &libloading::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string())
}

/// `CUresult` of success.
const CUDA_SUCCESS: c_int = 0;
/// `CUresult` when no CUDA device is visible.
const CUDA_ERROR_NO_DEVICE: c_int = 100;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` and `..._MINOR`.
const CC_MAJOR: c_int = 75;
const CC_MINOR: c_int = 76;

type CuInit = unsafe extern "C" fn(u32) -> c_int;
type CuIntOut = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type CuGetErrorName = unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int;

/// Asks `libcuda.so.1` for the driver's CUDA version and the visible GPUs.
fn probe() -> Driver {
    // SAFETY: libcuda.so.1 is the NVIDIA driver's library; loading it runs no user code
    // beyond its initialisers, and every symbol is called with the signature the CUDA driver
    // API documents for it.
    unsafe {
        let lib = match libloading::Library::new("libcuda.so.1") {
            // Never unloaded: once initialised, the runtimes use the same driver.
            Ok(lib) => &*Box::leak(Box::new(lib)),
            Err(e) => return Driver::Absent(loader_error(&e)),
        };
        macro_rules! sym {
            ($name:literal, $ty:ty) => {
                match lib.get::<$ty>($name) {
                    Ok(s) => s,
                    Err(e) => {
                        return Driver::Failed {
                            version: None,
                            error: format!("libcuda.so.1 lacks {}: {e}", $name),
                        }
                    }
                }
            };
        }
        let error_name = lib.get::<CuGetErrorName>("cuGetErrorName").ok();
        let describe = |code: c_int| -> String {
            let mut name: *const c_char = std::ptr::null();
            match &error_name {
                Some(f) if f(code, &mut name) == CUDA_SUCCESS && !name.is_null() => {
                    CStr::from_ptr(name).to_string_lossy().into_owned()
                }
                _ => format!("CUresult {code}"),
            }
        };
        let get_version = sym!("cuDriverGetVersion", CuIntOut);
        let mut raw = 0;
        let version = (get_version(&mut raw) == CUDA_SUCCESS).then_some(CudaVersion(raw));
        let init = sym!("cuInit", CuInit);
        let code = init(0);
        match (code, version) {
            (CUDA_SUCCESS, _) => {}
            // No device to initialise: none exists, or CUDA_VISIBLE_DEVICES hides them all.
            (CUDA_ERROR_NO_DEVICE, Some(version)) => {
                return Driver::Ready {
                    version,
                    gpus: Vec::new(),
                }
            }
            _ => {
                return Driver::Failed {
                    version,
                    error: describe(code),
                }
            }
        }
        let Some(version) = version else {
            return Driver::Failed {
                version,
                error: "cuDriverGetVersion failed".into(),
            };
        };
        let count_fn = sym!("cuDeviceGetCount", CuIntOut);
        let device_get = sym!("cuDeviceGet", CuDeviceGet);
        let name_fn = sym!("cuDeviceGetName", CuDeviceGetName);
        let attribute = sym!("cuDeviceGetAttribute", CuDeviceGetAttribute);
        let memory = sym!("cuDeviceTotalMem_v2", CuDeviceTotalMem);
        let mut count = 0;
        let code = count_fn(&mut count);
        if code != CUDA_SUCCESS {
            return Driver::Failed {
                version: Some(version),
                error: describe(code),
            };
        }
        let mut gpus = Vec::new();
        for ordinal in 0..count {
            let mut device = 0;
            let mut name = [0 as c_char; 256];
            let (mut major, mut minor, mut bytes) = (0, 0, 0usize);
            for code in [
                device_get(&mut device, ordinal),
                name_fn(name.as_mut_ptr(), name.len() as c_int, device),
                attribute(&mut major, CC_MAJOR, device),
                attribute(&mut minor, CC_MINOR, device),
                memory(&mut bytes, device),
            ] {
                if code != CUDA_SUCCESS {
                    return Driver::Failed {
                        version: Some(version),
                        error: format!("querying cuda:{ordinal}: {}", describe(code)),
                    };
                }
            }
            gpus.push(Gpu {
                name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                arch: (major * 10 + minor) as Arch,
                memory_mib: (bytes / (1 << 20)) as u64,
            });
        }
        Driver::Ready { version, gpus }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TORCH: Needs = Needs {
        runtime: "libtorch 2.13",
        cuda: CudaVersion::new(13, 0),
        min_driver: "580",
        kernels: &[75, 80, 86, 90, 100, 120],
        ptx: None,
        ptx_cuda: None,
        libraries: &[],
    };
    const CT2: Needs = Needs {
        runtime: "CTranslate2 4.8",
        cuda: CudaVersion::new(12, 0),
        min_driver: "525",
        kernels: &[53, 60, 61, 70, 75, 80, 86],
        ptx: Some(86),
        ptx_cuda: Some(CudaVersion::new(12, 8)),
        libraries: &["libcublas.so.12"],
    };

    fn ready(cuda: CudaVersion, archs: &[Arch]) -> Driver {
        Driver::Ready {
            version: cuda,
            gpus: archs
                .iter()
                .map(|&arch| Gpu {
                    name: format!("GPU sm_{arch}"),
                    arch,
                    memory_mib: 24576,
                })
                .collect(),
        }
    }

    fn request(kind: DeviceKind, ordinal: u32) -> DeviceRequest {
        DeviceRequest { kind, ordinal }
    }

    #[test]
    fn cpu_never_needs_a_driver() {
        let d = decide(
            request(DeviceKind::Cpu, 0),
            &Driver::Absent("x".into()),
            &TORCH,
        )
        .unwrap();
        assert_eq!(d.placement, Placement::Cpu);
        assert_eq!(d.warning, None);
    }

    #[test]
    fn an_old_driver_sends_auto_to_the_cpu_and_fails_cuda_with_the_reason() {
        // Driver 570 supports CUDA 12.8: too old for a CUDA 13 build, enough for CUDA 12.
        let old = ready(CudaVersion::new(12, 8), &[90]);
        let auto = decide(request(DeviceKind::Auto, 0), &old, &TORCH).unwrap();
        assert_eq!(auto.placement, Placement::Cpu);
        let warning = auto.warning.unwrap();
        assert!(warning.contains("supports CUDA 12.8"), "{warning}");
        assert!(warning.contains("built for CUDA 13.0"), "{warning}");
        assert!(warning.contains("580 series"), "{warning}");
        let err = decide(request(DeviceKind::Cuda, 0), &old, &TORCH).unwrap_err();
        assert_eq!(err.code, ErrorCode::Device);
        assert!(
            err.message.contains("DEVICE=cuda:0 cannot be used"),
            "{err:?}"
        );
        assert!(err.message.contains("supports CUDA 12.8"), "{err:?}");
        let ct2 = decide(request(DeviceKind::Cuda, 0), &old, &CT2).unwrap();
        assert_eq!(ct2.placement, Placement::Cuda(0));
        // A newer minor of the same major is fine.
        let newer = ready(CudaVersion::new(13, 1), &[90]);
        let d = decide(request(DeviceKind::Auto, 0), &newer, &TORCH).unwrap();
        assert_eq!(
            d,
            Decision {
                placement: Placement::Cuda(0),
                warning: None
            }
        );
    }

    #[test]
    fn no_driver_or_a_failing_one_is_named() {
        let absent = Driver::Absent("libcuda.so.1: cannot open shared object file".into());
        let d = decide(request(DeviceKind::Auto, 0), &absent, &TORCH).unwrap();
        assert_eq!(d.placement, Placement::Cpu);
        assert!(d.warning.unwrap().contains("no NVIDIA driver"));
        let failed = Driver::Failed {
            version: Some(CudaVersion::new(13, 0)),
            error: "CUDA_ERROR_NO_DEVICE".into(),
        };
        let err = decide(request(DeviceKind::Cuda, 0), &failed, &TORCH).unwrap_err();
        assert_eq!(err.code, ErrorCode::Device);
        assert!(err.message.contains("CUDA_ERROR_NO_DEVICE"), "{err:?}");
        let none = ready(CudaVersion::new(13, 0), &[]);
        let err = decide(request(DeviceKind::Cuda, 0), &none, &TORCH).unwrap_err();
        assert!(err.message.contains("sees no GPU"), "{err:?}");
    }

    #[test]
    fn an_ordinal_past_the_last_gpu_is_refused() {
        let two = ready(CudaVersion::new(13, 0), &[90, 90]);
        assert_eq!(
            decide(request(DeviceKind::Cuda, 1), &two, &TORCH)
                .unwrap()
                .placement,
            Placement::Cuda(1)
        );
        let err = decide(request(DeviceKind::Cuda, 2), &two, &TORCH).unwrap_err();
        assert!(
            err.message
                .contains("DEVICE=cuda:2 cannot be used: there is no cuda:2: only 2 CUDA"),
            "{err:?}"
        );
    }

    #[test]
    fn kernels_run_natively_by_major_and_newer_gpus_jit_from_ptx() {
        // sm_89 (L4, L40S, RTX 4090) runs sm_86 cubins; sm_103 runs sm_100's.
        assert_eq!(TORCH.fit(89), KernelFit::Native);
        assert_eq!(TORCH.fit(103), KernelFit::Native);
        assert_eq!(TORCH.fit(121), KernelFit::Native);
        // Volta has no kernels in a CUDA 13 build, and no PTX reaches back.
        assert_eq!(TORCH.fit(70), KernelFit::None);
        // CTranslate2's wheel: Hopper and Blackwell compile PTX 8.6.
        assert_eq!(CT2.fit(90), KernelFit::Jit(86));
        assert_eq!(CT2.fit(120), KernelFit::Jit(86));
        assert_eq!(CT2.fit(61), KernelFit::Native);
        assert_eq!(CT2.fit(52), KernelFit::None);
        let unknown = Needs {
            kernels: &[],
            ptx: None,
            ..TORCH
        };
        assert_eq!(unknown.fit(70), KernelFit::Unknown);
    }

    #[test]
    fn a_gpu_without_kernels_falls_back_or_fails_and_jit_is_a_warning() {
        let volta = ready(CudaVersion::new(13, 0), &[70]);
        let d = decide(request(DeviceKind::Auto, 0), &volta, &TORCH).unwrap();
        assert_eq!(d.placement, Placement::Cpu);
        let w = d.warning.unwrap();
        assert!(
            w.contains("GPU sm_70 (sm_70) is not supported by libtorch 2.13"),
            "{w}"
        );
        assert!(w.contains("sm_75, sm_80"), "{w}");
        let h100 = ready(CudaVersion::new(12, 8), &[90]);
        let d = decide(request(DeviceKind::Cuda, 0), &h100, &CT2).unwrap();
        assert_eq!(d.placement, Placement::Cuda(0));
        assert!(d.warning.unwrap().contains("compute_86 PTX"));
        // A driver older than the PTX (535: CUDA 12.2) cannot compile it; sm_86 cubins still run.
        let old = ready(CudaVersion::new(12, 2), &[90, 86]);
        let err = decide(request(DeviceKind::Cuda, 0), &old, &CT2).unwrap_err();
        assert!(
            err.message.contains("needs a driver for CUDA 12.8"),
            "{err:?}"
        );
        let auto = decide(request(DeviceKind::Auto, 0), &old, &CT2).unwrap();
        assert_eq!(auto.placement, Placement::Cpu);
        let a10 = decide(request(DeviceKind::Cuda, 1), &old, &CT2).unwrap();
        assert_eq!(
            a10,
            Decision {
                placement: Placement::Cuda(1),
                warning: None
            }
        );
    }

    #[test]
    fn versions_and_drivers_read_as_operators_write_them() {
        assert_eq!(CudaVersion(12080).to_string(), "12.8");
        assert_eq!(CudaVersion::new(13, 0).to_string(), "13.0");
        let d = ready(CudaVersion::new(13, 0), &[90]);
        assert_eq!(
            d.to_string(),
            "NVIDIA driver for CUDA 13.0, 1 GPU(s): cuda:0 GPU sm_90 (sm_90, 24576 MiB)"
        );
    }

    #[test]
    fn a_runtime_that_fails_on_the_gpu_falls_back_under_auto_only() {
        let calls = std::cell::RefCell::new(Vec::new());
        let open = |p: Placement| {
            calls.borrow_mut().push(p);
            match p {
                Placement::Cuda(_) => Err(PluginError::internal(
                    "CUDA failure 35: CUDA driver version is insufficient",
                )),
                Placement::Cpu => Ok("session"),
            }
        };
        let auto = request(DeviceKind::Auto, 0);
        let (value, on) = or_cpu("test", auto, Placement::Cuda(0), open).unwrap();
        assert_eq!((value, on), ("session", Placement::Cpu));
        assert_eq!(*calls.borrow(), [Placement::Cuda(0), Placement::Cpu]);
        let err = or_cpu(
            "test",
            request(DeviceKind::Cuda, 0),
            Placement::Cuda(0),
            open,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::Device);
        assert!(
            err.message.contains("DEVICE=cuda:0: CUDA failure 35"),
            "{err:?}"
        );
        // Memory keeps its class, so the host can act on it; the CPU's own failure is final.
        let oom = or_cpu(
            "test",
            request(DeviceKind::Cuda, 0),
            Placement::Cuda(0),
            |_| Err::<(), _>(PluginError::new(ErrorCode::OutOfMemory, "out of memory")),
        );
        assert_eq!(oom.unwrap_err().code, ErrorCode::OutOfMemory);
        let cpu = or_cpu("test", auto, Placement::Cpu, |_| {
            Err::<(), _>(PluginError::invalid_input("bad file"))
        });
        assert_eq!(cpu.unwrap_err().code, ErrorCode::InvalidInput);
        // A model the backend does not run is not a device problem: no retry, same error.
        let tries = std::cell::Cell::new(0);
        let refused = or_cpu("test", auto, Placement::Cuda(0), |_| {
            tries.set(tries.get() + 1);
            Err::<(), _>(PluginError::unsupported("a text-generation export"))
        });
        assert_eq!(refused.unwrap_err().code, ErrorCode::Unsupported);
        assert_eq!(tries.get(), 1);
    }

    #[test]
    fn a_library_the_runtime_opens_late_is_checked_early() {
        assert_eq!(missing_library(&["libc.so.6"]), None);
        let missing = missing_library(&["libc.so.6", "libember-no-such-cublas.so.12"]).unwrap();
        assert!(missing.starts_with("libember-no-such-cublas.so.12 cannot be loaded"));
        let err = refuse(request(DeviceKind::Cuda, 0), missing).unwrap_err();
        assert_eq!(err.code, ErrorCode::Device);
        let auto = refuse(request(DeviceKind::Auto, 0), "why").unwrap();
        assert_eq!(auto, Decision::cpu_because("why"));
    }

    #[test]
    fn probing_this_machine_does_not_fail() {
        // Whatever the machine has (no driver here; a GPU elsewhere), the probe answers.
        let d = driver();
        assert!(!d.to_string().is_empty());
    }
}
