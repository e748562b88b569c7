//! The cxx bridge to `src/bridge.cc`: a CTranslate2 encoder, loaded and run from Rust.

// A forward call takes its batch as flat arrays, the parts and the buffer to fill: cxx passes
// each as an argument of its own.
#[allow(clippy::too_many_arguments)]
#[cxx::bridge(namespace = "ember_ct2")]
mod bridge {
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

        /// Runs one batch of right-padded rows as the parts that end at `part_ends`, at once on
        /// the replicas (one part with `all_threads`: on the replica of every thread, if there
        /// is one), writing the float32 states of each row's first `longest` positions to
        /// `states` (`rows * longest * hidden`; positions past a part's longest row are left
        /// as they are). Fails if the engine's states have another shape.
        fn forward(
            self: &Encoder,
            ids: &[u32],
            type_ids: &[u32],
            lengths: &[u32],
            seq: usize,
            part_ends: &[usize],
            all_threads: bool,
            states: &mut [f32],
        ) -> Result<()>;

        /// The compute type CTranslate2 chose.
        fn compute_type(self: &Encoder) -> String;

        /// How many calls the encoder runs at once (one replica per CPU thread).
        fn replicas(self: &Encoder) -> usize;

        /// Whether a replica computes on every thread (a CPU of several threads).
        fn has_whole(self: &Encoder) -> bool;

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
