//! Intel MKL, linked into libtorch_cpu, runs the CPU's matrix products (every linear layer).
//! MKL chooses its kernels by CPU vendor before instruction sets: on a CPU that does not say
//! "GenuineIntel" it runs generic kernels whatever the CPU supports. On a 2-core AMD EPYC
//! (Zen 4, AVX-512), that made libtorch's linear layers the slowest part of the torch backend:
//! 0.75× the optimum backend's throughput on all-MiniLM-L6-v2, against 0.91× on an Intel CPU.
//!
//! MKL asks `mkl_serv_intel_cpu_true` which kind of CPU it runs on, through libtorch_cpu's
//! dynamic symbol table. The plugin defines that symbol, and a plugin's own symbols come
//! before those of the libraries it loads, so MKL picks its kernels by what the CPU supports
//! (AVX-512 where there is AVX-512, AVX2 where there is AVX2), on any vendor. On an Intel CPU
//! nothing changes.

use std::ffi::c_int;

/// MKL's vendor test, answered "yes" so that MKL dispatches on instruction sets alone.
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> c_int {
    1
}
