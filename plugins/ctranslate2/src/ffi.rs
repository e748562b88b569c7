//! The cxx bridge to `src/bridge.cc`: a CTranslate2 encoder, loaded and run from Rust.

#[cxx::bridge(namespace = "ember_ct2")]
mod bridge {
    /// Token states of a batch, on the CPU in float32 (`rows * seq * hidden`, row-major).
    struct EncoderOutput {
        rows: usize,
        seq: usize,
        hidden: usize,
        states: Vec<f32>,
    }

    unsafe extern "C++" {
        include!("ember-ctranslate2/src/bridge.h");

        /// A CTranslate2 encoder.
        type Encoder;

        /// Loads the CTranslate2 model in `path` on `device` ("cpu" or "cuda").
        fn load_encoder(
            path: &str,
            device: &str,
            device_index: i32,
            compute_type: &str,
            threads: usize,
        ) -> Result<UniquePtr<Encoder>>;

        /// Runs one batch of right-padded rows.
        fn forward(
            self: &Encoder,
            ids: &[u32],
            type_ids: &[u32],
            lengths: &[u32],
            seq: usize,
        ) -> Result<EncoderOutput>;

        /// The compute type CTranslate2 chose.
        fn compute_type(self: &Encoder) -> String;

        /// Number of CUDA devices CTranslate2 can use.
        fn cuda_device_count() -> i32;

        /// Whether `device` computes `compute_type` natively.
        fn supports(device: &str, device_index: i32, compute_type: &str) -> bool;
    }
}

pub use bridge::*;

// CTranslate2's Encoder is a thread pool whose methods are safe to call from any thread.
unsafe impl Send for bridge::Encoder {}
unsafe impl Sync for bridge::Encoder {}
