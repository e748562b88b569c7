//! libtorch errors become plugin errors of the right class, and the model lock survives panics.

use ember_plugin_api::ErrorCode;
use ember_torch::error::{code_of, from_tch, lock};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// 2^50 floats (4 PiB): more than any machine's memory, and than its address space.
const HUGE: i64 = 1 << 50;

#[test]
fn a_failed_cpu_allocation_is_out_of_memory() {
    for result in [
        Tensor::f_zeros([HUGE], (Kind::Float, Device::Cpu)),
        Tensor::f_empty([HUGE], (Kind::Float, Device::Cpu)),
        Tensor::f_ones([2, HUGE / 2], (Kind::Float, Device::Cpu)),
    ] {
        let e = from_tch(
            "allocating",
            result.expect_err("a 4 PiB tensor was allocated"),
        );
        assert_eq!(e.code, ErrorCode::OutOfMemory, "{}", e.message);
        assert!(e.message.starts_with("allocating: "), "{}", e.message);
        assert!(e.message.contains("allocate"), "{}", e.message);
        assert!(!e.message.contains("Internal torch error"), "{}", e.message);
        assert!(
            !e.message.contains("Exception raised from"),
            "{}",
            e.message
        );
    }
}

#[test]
fn other_libtorch_errors_are_internal() {
    let t = Tensor::f_zeros([2, 3], (Kind::Float, Device::Cpu)).unwrap();
    let e = from_tch("reshaping", t.f_view([4]).unwrap_err());
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.message);
    assert!(
        e.message.contains("invalid for input of size 6"),
        "{}",
        e.message
    );
    let words = Tensor::f_zeros([10, 4], (Kind::Float, Device::Cpu)).unwrap();
    let ids = Tensor::f_from_slice(&[3i64, 10]).unwrap();
    let e = from_tch(
        "embedding",
        Tensor::f_embedding(&words, &ids, -1, false, false).unwrap_err(),
    );
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.message);
    assert!(e.message.contains("out of range"), "{}", e.message);
    // Errors of tch itself (not libtorch's) keep their text.
    let e = from_tch("reading", Vec::<f32>::try_from(&t).unwrap_err());
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.message);
    assert!(e.message.contains("2 dimensions"), "{}", e.message);
}

#[test]
fn cuda_out_of_memory_is_out_of_memory() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    let e = from_tch(
        "allocating",
        Tensor::f_zeros([HUGE], (Kind::Float, Device::Cuda(0))).unwrap_err(),
    );
    assert_eq!(e.code, ErrorCode::OutOfMemory, "{}", e.message);
    // The device stays usable.
    let t = Tensor::f_ones([1024], (Kind::Float, Device::Cuda(0))).unwrap();
    assert_eq!(t.f_sum(Kind::Float).unwrap().double_value(&[]), 1024.0);
}

#[test]
fn messages_are_classified() {
    let cases = [
        (
            "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of \
             79.1 GiB of which 1.2 GiB is free.",
            ErrorCode::OutOfMemory,
        ),
        ("CUDA error: out of memory", ErrorCode::OutOfMemory),
        (
            "[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate \
             memory: you tried to allocate 4503599627370496 bytes. Error code 12 (Cannot \
             allocate memory)",
            ErrorCode::OutOfMemory,
        ),
        (
            "DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB.",
            ErrorCode::OutOfMemory,
        ),
        (
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
            ErrorCode::OutOfMemory,
        ),
        (
            "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
            ErrorCode::OutOfMemory,
        ),
        ("std::bad_alloc", ErrorCode::OutOfMemory),
        (
            "CUDA error: device-side assert triggered\nCUDA kernel errors might be \
             asynchronously reported",
            ErrorCode::Device,
        ),
        (
            "CUDA error: an illegal memory access was encountered",
            ErrorCode::Device,
        ),
        (
            "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
            ErrorCode::Device,
        ),
        (
            "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, ...)`",
            ErrorCode::Device,
        ),
        ("CUDA driver error: unknown error", ErrorCode::Device),
        (
            "The size of tensor a (26) must match the size of tensor b (17) at non-singleton \
             dimension 1",
            ErrorCode::Internal,
        ),
        ("index out of range in self", ErrorCode::Internal),
        ("", ErrorCode::Internal),
    ];
    for (message, code) in cases {
        assert_eq!(code_of(message), code, "{message}");
    }
}

#[test]
fn the_backtrace_is_left_out_of_the_message() {
    let e = from_tch(
        "embedding tokens",
        tch::TchError::Torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB.\nException raised from malloc at \
             CUDACachingAllocator.cpp:1000 (most recent call first):\nframe #0: c10::Error"
                .into(),
        ),
    );
    assert_eq!(e.code, ErrorCode::OutOfMemory);
    assert_eq!(
        e.message.as_str(),
        "embedding tokens: CUDA out of memory. Tried to allocate 2.00 GiB."
    );
    // Only the message is classified, not the names in the backtrace.
    let e = from_tch(
        "embedding images",
        tch::TchError::Torch(
            "shape mismatch\nException raised from check at Loops.cuh:10 (most recent call \
             first):\nframe #0: report CUDA error: out of memory (0x1 in libtorch_cuda.so)"
                .into(),
        ),
    );
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.message);
    assert_eq!(e.message.as_str(), "embedding images: shape mismatch");
}

#[test]
fn a_panic_while_locked_does_not_lock_out_later_calls() {
    let weights = Mutex::new(vec![1.0f32, 2.0]);
    let panicked = std::panic::catch_unwind(|| {
        let w = lock(&weights);
        assert_eq!(w.len(), 2);
        panic!("forward failed while the weights were locked");
    });
    assert!(panicked.is_err());
    assert!(
        weights.is_poisoned(),
        "the panic should have poisoned the mutex"
    );
    assert_eq!(*lock(&weights), vec![1.0, 2.0]);
    // And again: the lock is not left held.
    assert_eq!(lock(&weights).iter().sum::<f32>(), 3.0);
}
