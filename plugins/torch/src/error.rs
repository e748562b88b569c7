//! libtorch's errors as plugin errors, classified so that the host can act on them: running out
//! of memory (the host halves the batch, or answers 503 for one item), a failing device
//! (systemic), anything else (internal); and a lock that an earlier panic does not poison.

use ember_plugin_api::{ErrorCode, PluginError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tch::TchError;

/// Fragments (lower case) of the messages of failed allocations: CUDA's caching allocator
/// ("CUDA out of memory. Tried to allocate ..."), CUDA calls ("CUDA error: out of memory"),
/// the CPU allocator ("DefaultCPUAllocator: can't allocate memory" / "not enough memory"),
/// C++'s `std::bad_alloc`, and the workspaces of CUDA's libraries.
const OUT_OF_MEMORY: &[&str] = &[
    "out of memory",
    "can't allocate memory",
    "not enough memory",
    "bad_alloc",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cusolver_status_alloc_failed",
    "cusparse_status_alloc_failed",
    "cufft_alloc_failed",
];

/// Fragments (lower case) of the messages of device failures: CUDA runtime and driver errors
/// (a device-side assert among them, after which the CUDA context is unusable), and the status
/// codes of cuDNN, cuBLAS and the other CUDA libraries. Checked after [`OUT_OF_MEMORY`], so
/// that `CUDA error: out of memory` and `CUBLAS_STATUS_ALLOC_FAILED` count as memory.
const DEVICE: &[&str] = &[
    "cuda error",
    "cuda driver error",
    "cuda runtime error",
    "device-side assert",
    "cudnn error",
    "cudnn_status_",
    "cublas_status_",
    "cusolver_status_",
    "cusparse_status_",
    "nvrtc error",
    "nccl error",
];

/// The error code of a libtorch error message.
pub fn code_of(message: &str) -> ErrorCode {
    let message = message.to_lowercase();
    if OUT_OF_MEMORY.iter().any(|p| message.contains(p)) {
        ErrorCode::OutOfMemory
    } else if DEVICE.iter().any(|p| message.contains(p)) {
        ErrorCode::Device
    } else {
        ErrorCode::Internal
    }
}

/// A tch error raised while doing `what`, as a plugin error with its class and libtorch's
/// message, without the C++ backtrace libtorch appends to some messages.
pub fn from_tch(what: &str, error: TchError) -> PluginError {
    let text = match error {
        // Its Display adds "Internal torch error: ", which would be wrong for most classes.
        TchError::Torch(message) => message,
        other => other.to_string(),
    };
    let message = text
        .split("\nException raised from")
        .next()
        .unwrap_or_default()
        .trim_end();
    PluginError::new(code_of(message), format!("{what}: {message}"))
}

/// Locks `mutex` even if a panic poisoned it: for data that a panic cannot leave half-changed
/// (a model's weights, which forward calls only read), so that one failed call does not make
/// every later one fail.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
