//! libtorch's own settings reached through the plugin's C++ symbol bindings.

#[test]
fn cudnn_attention_is_switched_in_libtorchs_own_context() {
    assert!(
        ember_torch::aten::cudnn_attention(),
        "libtorch's default is cuDNN attention allowed"
    );
    ember_torch::aten::use_cudnn_attention(false);
    assert!(!ember_torch::aten::cudnn_attention());
    ember_torch::aten::use_cudnn_attention(true);
    assert!(ember_torch::aten::cudnn_attention());
}
