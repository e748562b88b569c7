//! libtorch's process-wide settings (ATen's `at::Context`) that tch does not wrap: C++ symbols
//! of the libtorch_cpu this plugin links (libtorch 2.11 and 2.13 both export them), called with
//! the context as the first argument, as the Itanium C++ ABI passes `this`.

use std::ffi::c_void;

extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context14setSDPUseCuDNNEb"]
    fn at_context_set_sdp_use_cudnn(context: *mut c_void, enabled: bool);
    #[link_name = "_ZNK2at7Context19userEnabledCuDNNSDPEv"]
    fn at_context_user_enabled_cudnn_sdp(context: *const c_void) -> bool;
}

/// Lets `scaled_dot_product_attention` on CUDA use cuDNN's attention, or not.
///
/// The GPU path turns it off: libtorch prefers it for fp16/bf16 on Hopper, and cuDNN builds an
/// execution graph for every new (batch, length) shape. On an H200 the first fp16 batch of a
/// new shape took up to 1.9 s (the 32-row warm-up; 0.34 s in fp32), and a server meets a new
/// shape with nearly every batch. Without it libtorch picks its memory-efficient kernels,
/// which need no per-shape build.
///
/// The setting is a plain flag that attention reads: change it before any model runs on CUDA
/// (the plugin does so once, when it starts libtorch's CUDA backend).
pub fn use_cudnn_attention(enabled: bool) {
    // SAFETY: `at::globalContext()` returns the process-wide context, alive as long as
    // libtorch; `setSDPUseCuDNN(bool)` is a plain setter of it.
    unsafe { at_context_set_sdp_use_cudnn(at_global_context(), enabled) }
}

/// Whether `scaled_dot_product_attention` may use cuDNN's attention (libtorch's default: yes).
pub fn cudnn_attention() -> bool {
    // SAFETY: as in `use_cudnn_attention`; `userEnabledCuDNNSDP()` is a const getter.
    unsafe { at_context_user_enabled_cudnn_sdp(at_global_context()) }
}
