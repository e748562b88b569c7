//! The data that crosses the plugin boundary: requests, batches, results and errors.
//!
//! Every type here is `#[repr(C)]` and derives `StableAbi`, so its layout is checked when a
//! plugin is loaded. Changing a type here is an ABI major bump; a new type that only a minor's
//! own function table uses (such as [`TokenStates`]) is not, its layout being checked with
//! that table's.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;
use std::fmt;

/// Version of the plugin ABI: a plugin loads when its major equals the host's.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiVersion {
    /// Incompatible changes bump the major.
    pub major: u32,
    /// Compatible additions (new optional root-module functions) bump the minor.
    pub minor: u32,
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a model does: text embeddings, query–document scoring, text classification, or text and
/// image embeddings.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// A text encoder whose pooled output is an embedding.
    Embed,
    /// A cross-encoder with one logit per (query, document) pair.
    Rerank,
    /// A CLIP-like model with a text tower and a vision tower in one space.
    Clip,
    /// A sequence classifier with one logit per label for each text (or pair of texts).
    Classify,
}

impl ModelKind {
    /// Every kind, for a plugin that serves them all.
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Embed,
        ModelKind::Rerank,
        ModelKind::Classify,
        ModelKind::Clip,
    ];

    /// The lower-case name used in configuration, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Embed => "embed",
            ModelKind::Rerank => "rerank",
            ModelKind::Clip => "clip",
            ModelKind::Classify => "classify",
        }
    }
}

/// How token states become one vector, as sentence-transformers' `Pooling` module does it.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The state of the first pooled token: `[CLS]`, or the first token after the prompt when
    /// the pooling mask leaves the prompt out.
    Cls,
    /// Mean of the states of the pooled tokens (pooling mask 1).
    Mean,
    /// Element-wise max over the pooled tokens.
    Max,
    /// Sum of the pooled states divided by the square root of their count.
    MeanSqrtLen,
    /// The state of the last pooled token.
    LastToken,
}

impl Pooling {
    /// The name sentence-transformers gives this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::LastToken => "lasttoken",
        }
    }
}

/// Numeric precision asked for a model; `Auto` lets the plugin choose for the device.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// The plugin's best choice for the device (fp16 or bf16 on GPUs, fp32 on CPUs).
    Auto,
    /// 32-bit floats.
    Fp32,
    /// IEEE half precision.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 8-bit floats, on GPUs that have them.
    Fp8,
    /// 8-bit integer weights (quantized models).
    Int8,
}

impl DType {
    /// Every value, in the order the configuration documents them.
    pub const ALL: [DType; 6] = [
        DType::Auto,
        DType::Fp32,
        DType::Fp16,
        DType::Bf16,
        DType::Fp8,
        DType::Int8,
    ];

    /// The name used in `DTYPES`.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::Auto => "auto",
            DType::Fp32 => "fp32",
            DType::Fp16 => "fp16",
            DType::Bf16 => "bf16",
            DType::Fp8 => "fp8",
            DType::Int8 => "int8",
        }
    }
}

/// Kind of device a model runs on.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Use CUDA when the plugin finds a usable GPU, the CPU otherwise.
    Auto,
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

impl DeviceKind {
    /// The name used in settings and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Auto => "auto",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// The device asked for a model (`DEVICE=auto|cpu|cuda|cuda:N`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Which kind of device.
    pub kind: DeviceKind,
    /// GPU ordinal for `Cuda` (and for `Auto` when it picks CUDA).
    pub ordinal: u32,
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DeviceKind::Auto => write!(f, "auto"),
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.ordinal),
        }
    }
}

/// Image input geometry and normalisation of a vision tower (host-side preprocessing result).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// Height in pixels of the tensors the model takes.
    pub height: u32,
    /// Width in pixels of the tensors the model takes.
    pub width: u32,
    /// Per-channel mean subtracted after rescaling (RGB).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean (RGB).
    pub std: [f32; 3],
}

/// What the host learned about a model from its configuration files.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ModelManifest {
    /// The model id as configured (`MODEL_NAMES` entry).
    pub name: RString,
    /// What the model does.
    pub kind: ModelKind,
    /// `architectures[0]` of `config.json` (for example `BertModel`), empty if absent.
    pub architecture: RString,
    /// `model_type` of `config.json` (for example `bert`, `xlm-roberta`, `clip`).
    pub model_type: RString,
    /// Pooling of token states into one vector (embedders and CLIP text towers).
    pub pooling: Pooling,
    /// Longest input in tokens, special tokens included; inputs are truncated to it.
    pub max_input_tokens: u32,
    /// Width of the hidden states.
    pub hidden_size: u32,
    /// Number of classifier outputs (rerankers: 1, classifiers: their labels, others: 0).
    pub num_labels: u32,
    /// Whether pooling reads the prompt's tokens (sentence-transformers' `include_prompt`).
    /// When false the host sends a [`TokenBatch::pooling_mask`] that leaves them out; a plugin
    /// that cannot pool under such a mask refuses the model at load.
    pub include_prompt: bool,
    /// Vision input geometry for CLIP-like models.
    pub image: ROption<ImageSpec>,
}

/// Everything a plugin needs to load one model.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct LoadRequest {
    /// Local directory with the model's files, in the Hugging Face repository layout.
    pub model_dir: RString,
    /// The files (relative to `model_dir`) the plugin chose with `select_files`.
    pub files: RVec<RString>,
    /// The host's reading of the model's configuration.
    pub manifest: ModelManifest,
    /// Precision asked for.
    pub dtype: DType,
    /// Device asked for.
    pub device: DeviceRequest,
    /// Most rows the host will put in one batch.
    pub max_batch_size: u32,
    /// Threads for one forward call on the CPU; 0 lets the plugin choose.
    pub intra_op_threads: u32,
}

/// What a plugin can do, reported once at load.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginInfo {
    /// Backend name, as in `BACKEND` (for example `optimum`).
    pub name: RString,
    /// Version of the plugin itself.
    pub version: RString,
    /// Name and version of the inference runtime it wraps (for example `onnxruntime 1.31.1`).
    pub runtime: RString,
    /// Model kinds it can run.
    pub kinds: RVec<ModelKind>,
    /// Device kinds its runtime is built for (CUDA where the build has it; whether this
    /// machine's driver and GPU can run it is decided when a model loads).
    pub devices: RVec<DeviceKind>,
    /// Precisions it accepts.
    pub dtypes: RVec<DType>,
}

/// What a loaded model reports about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct LoadedModel {
    /// Length of the vectors it returns (rerankers: 1, classifiers: their number of labels).
    pub embedding_dim: u32,
    /// Device it runs on, as text (`cpu`, `cuda:0`).
    pub device: RString,
    /// Precision it runs in.
    pub dtype: DType,
    /// Whether the host may call its forward functions from several threads at once.
    pub concurrent_calls: bool,
}

/// A right-padded batch of token sequences, row-major `[rows, seq_len]`.
///
/// Row `r`'s real tokens are `input_ids[r*seq_len .. r*seq_len + len_r]` where
/// `len_r` is the sum of its attention mask; padding positions have mask 0. Attention reads
/// `attention_mask`; pooling reads [`TokenBatch::pooling_mask`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Number of sequences.
    pub rows: u32,
    /// Padded length of every sequence.
    pub seq_len: u32,
    /// Token ids, `rows * seq_len` values.
    pub input_ids: RVec<i64>,
    /// 1 for real tokens, 0 for padding, `rows * seq_len` values.
    pub attention_mask: RVec<i64>,
    /// Segment ids (0 for the first text, 1 for the second of a pair), `rows * seq_len`.
    pub token_type_ids: RVec<i64>,
    /// The positions pooling reads, 1 or 0, `rows * seq_len` values; empty means the attention
    /// mask. The host sends one when a model's pooling leaves the prompt's tokens out
    /// (`include_prompt: false`): it is the attention mask with each row's prompt zeroed. In a
    /// token-state call to a model that says [`Outputs::UNATTENDED_STATES`] it may also keep
    /// positions after a row's attended tokens (ColBERT's query expansion).
    pub pooling_mask: RVec<i64>,
}

impl TokenBatch {
    /// Checks that the arrays have `rows * seq_len` values each (the pooling mask: or none).
    pub fn validate(&self) -> Result<(), PluginError> {
        let n = self.rows as usize * self.seq_len as usize;
        for (name, len) in [
            ("input_ids", self.input_ids.len()),
            ("attention_mask", self.attention_mask.len()),
            ("token_type_ids", self.token_type_ids.len()),
            ("pooling_mask", self.pooling_mask.len()),
        ] {
            if len != n && !(name == "pooling_mask" && len == 0) {
                return Err(PluginError::invalid_input(format!(
                    "token batch {name} has {len} values, expected rows*seq_len = {}*{} = {n}",
                    self.rows, self.seq_len
                )));
            }
        }
        Ok(())
    }

    /// The mask pooling reads: `pooling_mask` when the host sent one, else `attention_mask`.
    pub fn pooling_mask(&self) -> &[i64] {
        if self.pooling_mask.is_empty() {
            &self.attention_mask
        } else {
            &self.pooling_mask
        }
    }

    /// Whether pooling reads other positions than attention does (a pooling mask was sent).
    pub fn has_pooling_mask(&self) -> bool {
        !self.pooling_mask.is_empty()
    }

    /// Number of real tokens of each row (the sum of its attention mask).
    pub fn row_lengths(&self) -> Vec<usize> {
        self.counts(&self.attention_mask)
    }

    /// Number of positions of each row whose token state is asked for: those its pooling mask
    /// keeps (see [`Outputs::UNATTENDED_STATES`]).
    pub fn state_lengths(&self) -> Vec<usize> {
        self.counts(self.pooling_mask())
    }

    /// Per row, the positions of `mask` that are set.
    fn counts(&self, mask: &[i64]) -> Vec<usize> {
        let s = self.seq_len as usize;
        (0..self.rows as usize)
            .map(|r| mask[r * s..(r + 1) * s].iter().filter(|&&m| m != 0).count())
            .collect()
    }
}

/// Query–document pairs, each tokenized jointly as the model's tokenizer pairs them.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PairBatch {
    /// One row per pair; `token_type_ids` mark the document side where the model uses them.
    pub tokens: TokenBatch,
}

/// Preprocessed images, row-major `[rows, channels, height, width]` float32 (NCHW).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PixelBatch {
    /// Number of images.
    pub rows: u32,
    /// Channels per image (3, RGB).
    pub channels: u32,
    /// Height in pixels.
    pub height: u32,
    /// Width in pixels.
    pub width: u32,
    /// `rows * channels * height * width` normalised values.
    pub values: RVec<f32>,
}

impl PixelBatch {
    /// A batch of `rows` RGB images of `height` x `width`, their values concatenated.
    pub fn rgb(rows: usize, height: u32, width: u32, values: Vec<f32>) -> PixelBatch {
        PixelBatch {
            rows: rows as u32,
            channels: 3,
            height,
            width,
            values: values.into(),
        }
    }

    /// Checks that `values` holds `rows * channels * height * width` floats.
    pub fn validate(&self) -> Result<(), PluginError> {
        let n = self.rows as usize
            * self.channels as usize
            * self.height as usize
            * self.width as usize;
        if self.values.len() != n {
            return Err(PluginError::invalid_input(format!(
                "pixel batch has {} values, expected {}x{}x{}x{} = {n}",
                self.values.len(),
                self.rows,
                self.channels,
                self.height,
                self.width
            )));
        }
        Ok(())
    }
}

/// Pooled, not normalised vectors, row-major `[rows, dim]`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct EmbeddingBatch {
    /// Number of vectors (equals the input's rows).
    pub rows: u32,
    /// Length of each vector.
    pub dim: u32,
    /// `rows * dim` values.
    pub values: RVec<f32>,
}

impl EmbeddingBatch {
    /// The answer to a batch of no rows.
    pub fn empty(dim: u32) -> EmbeddingBatch {
        EmbeddingBatch {
            rows: 0,
            dim,
            values: RVec::new(),
        }
    }
}

/// One raw logit per pair, in input order.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ScoreBatch {
    /// One value per input row.
    pub scores: RVec<f32>,
}

/// Raw logits of a classifier, row-major `[rows, labels]`, in input order.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct LogitBatch {
    /// Number of rows (equals the input's rows).
    pub rows: u32,
    /// Logits per row (the model's number of labels).
    pub labels: u32,
    /// `rows * labels` values.
    pub values: RVec<f32>,
}

/// The outputs a model offers besides its kind's own (ABI 3.1), as a set of flags: a host
/// ignores flags it does not know, so later minors add flags without a new layout.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outputs(pub u64);

impl Outputs {
    /// No output besides the kind's own (what a plugin built against ABI 3.0 offers).
    pub const NONE: Outputs = Outputs(0);
    /// Per-token states ([`Extensions31::token_states`](crate::abi::Extensions31)).
    pub const TOKEN_STATES: Outputs = Outputs(1);
    /// SPLADE's sparse vocabulary weights ([`Extensions31::sparse`](crate::abi::Extensions31)).
    pub const SPARSE: Outputs = Outputs(2);
    /// Token states of positions attention skips: with this flag, `token_states` answers
    /// the positions of the batch's pooling mask, which may keep positions its attention mask
    /// does not (ColBERT's query expansion: tokens that read the text but that the text does
    /// not read). Without it, the host sends token-state calls no such positions.
    pub const UNATTENDED_STATES: Outputs = Outputs(4);

    /// Whether every flag of `other` is set.
    pub fn has(self, other: Outputs) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// The union of both sets.
    pub fn with(self, other: Outputs) -> Outputs {
        Outputs(self.0 | other.0)
    }

    /// This set without the flags of `other`.
    pub fn without(self, other: Outputs) -> Outputs {
        Outputs(self.0 & !other.0)
    }

    /// Names of the known outputs set, for logs and `/v1/models` (flags that qualify another
    /// output, as [`Outputs::UNATTENDED_STATES`] does, are not named).
    pub fn names(self) -> Vec<&'static str> {
        [
            (Outputs::TOKEN_STATES, "token_states"),
            (Outputs::SPARSE, "sparse"),
        ]
        .into_iter()
        .filter(|(flag, _)| self.has(*flag))
        .map(|(_, name)| name)
        .collect()
    }
}

/// The offsets of rows of `lengths` tokens: 0, then the running sums.
fn offsets_of(lengths: &[usize]) -> Vec<u32> {
    std::iter::once(0)
        .chain(lengths.iter().scan(0u32, |sum, &n| {
            *sum += n as u32;
            Some(*sum)
        }))
        .collect()
}

/// Each row's state of every token its attention mask keeps (ABI 3.1), ragged: row `r`'s
/// states are `values[offsets[r] * dim .. offsets[r + 1] * dim]`, one `dim`-wide state per
/// live token, in sequence order. Not normalised.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct TokenStates {
    /// Number of rows (equals the input's rows).
    pub rows: u32,
    /// Width of each state.
    pub dim: u32,
    /// `rows + 1` increasing token offsets, starting at 0.
    pub offsets: RVec<u32>,
    /// `offsets[rows] * dim` values.
    pub values: RVec<f32>,
}

impl TokenStates {
    /// The states of `rows` rows of `lengths[r]` tokens each, from their values concatenated.
    pub fn from_rows(dim: usize, lengths: &[usize], values: Vec<f32>) -> TokenStates {
        TokenStates {
            rows: lengths.len() as u32,
            dim: dim as u32,
            offsets: offsets_of(lengths).into(),
            values: values.into(),
        }
    }

    /// Checks that the offsets and values agree with each other and with `lengths`, the live
    /// tokens of the rows asked for.
    pub fn validate(&self, lengths: &[usize]) -> Result<(), String> {
        let dim = self.dim as usize;
        let expected = offsets_of(lengths);
        if self.rows as usize != lengths.len() || self.offsets.as_slice() != expected.as_slice() {
            return Err(format!(
                "token states of {} rows with offsets {:?} for {} rows of {:?} live tokens",
                self.rows,
                self.offsets.as_slice(),
                lengths.len(),
                lengths
            ));
        }
        let tokens = *expected.last().unwrap_or(&0) as usize;
        if dim == 0 || self.values.len() != tokens * dim {
            return Err(format!(
                "token states hold {} values for {tokens} tokens of width {dim}",
                self.values.len()
            ));
        }
        Ok(())
    }

    /// Row `r`'s states, `[tokens, dim]` flat (panics unless [`TokenStates::validate`] passed).
    pub fn row(&self, r: usize) -> &[f32] {
        let dim = self.dim as usize;
        &self.values[self.offsets[r] as usize * dim..self.offsets[r + 1] as usize * dim]
    }
}

/// How a masked-language model's logits over a row's tokens become one weight per
/// vocabulary entry (sentence-transformers' `SpladePooling`, ABI 3.1): each logit `x` becomes
/// `log(1 + relu(x))` (twice `log1p` with [`SparseReduction::log1p_twice`]), then the tokens
/// the attention mask keeps are reduced per entry by their max, or their sum.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseReduction {
    /// Sum over the tokens instead of the max (`pooling_strategy: "sum"`, SPLADE v1).
    pub sum: bool,
    /// `log1p` applied twice (`activation_function: "log1p_relu"`, OpenSearch's models).
    pub log1p_twice: bool,
}

/// Each row's non-zero vocabulary weights (ABI 3.1), ragged: row `r`'s entries are
/// `indices[offsets[r]..offsets[r + 1]]` (ascending token ids) with their `values` (> 0).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct SparseBatch {
    /// Number of rows (equals the input's rows).
    pub rows: u32,
    /// `rows + 1` increasing entry offsets, starting at 0.
    pub offsets: RVec<u32>,
    /// Token ids, ascending within each row.
    pub indices: RVec<u32>,
    /// The weight of each of `indices`.
    pub values: RVec<f32>,
}

impl SparseBatch {
    /// A batch of rows given as (ascending ids, weights) each.
    pub fn from_rows(rows: Vec<(Vec<u32>, Vec<f32>)>) -> SparseBatch {
        let lengths: Vec<usize> = rows.iter().map(|(i, _)| i.len()).collect();
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for (i, v) in rows {
            indices.extend(i);
            values.extend(v);
        }
        SparseBatch {
            rows: lengths.len() as u32,
            offsets: offsets_of(&lengths).into(),
            indices: indices.into(),
            values: values.into(),
        }
    }

    /// Checks the offsets against `rows` rows, the indices (ascending per row, below `vocab`)
    /// and the values (finite, positive).
    pub fn validate(&self, rows: usize, vocab: u32) -> Result<(), String> {
        let n = self.indices.len();
        let offsets = self.offsets.as_slice();
        if self.rows as usize != rows
            || offsets.len() != rows + 1
            || offsets.first() != Some(&0)
            || offsets.last() != Some(&(n as u32))
            || offsets.windows(2).any(|w| w[0] > w[1])
            || self.values.len() != n
        {
            return Err(format!(
                "sparse rows {} with {} offsets, {n} indices and {} values for {rows} rows",
                self.rows,
                offsets.len(),
                self.values.len()
            ));
        }
        for r in 0..rows {
            let (ids, values) = self.row(r);
            if ids.windows(2).any(|w| w[0] >= w[1]) || ids.iter().any(|&i| i >= vocab) {
                return Err(format!(
                    "sparse row {r}: indices must ascend and stay below the vocabulary of {vocab}"
                ));
            }
            if values.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(format!(
                    "sparse row {r}: values must be finite and positive"
                ));
            }
        }
        Ok(())
    }

    /// Row `r`'s ids and weights (panics unless [`SparseBatch::validate`] passed).
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.offsets[r] as usize, self.offsets[r + 1] as usize);
        (&self.indices[a..b], &self.values[a..b])
    }
}

/// Why a plugin call failed; decides the HTTP status the host answers with.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The input itself is wrong (bad shape, unsupported token id): 400.
    InvalidInput,
    /// The plugin cannot do this (model kind, dtype, device, file layout): 400 or start-up error.
    Unsupported,
    /// Device or host memory ran out; the host retries with smaller batches.
    OutOfMemory,
    /// The device failed (CUDA error, lost device).
    Device,
    /// Anything else, including a panic inside the plugin.
    Internal,
}

impl ErrorCode {
    /// The name used in messages and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid-input",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::OutOfMemory => "out-of-memory",
            ErrorCode::Device => "device",
            ErrorCode::Internal => "internal",
        }
    }
}

/// How the message of a caught panic begins. ABI 3 has no error code for a panic, so a panic
/// is an `Internal` error with this prefix ([`PluginError::panicked`]); the next ABI major
/// gives it its own [`ErrorCode`].
pub const PANIC_PREFIX: &str = "plugin panicked in ";

/// An error value crossing the boundary: a code and a human-readable message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginError {
    /// The class of failure.
    pub code: ErrorCode,
    /// What went wrong, for logs and API errors.
    pub message: RString,
}

impl PluginError {
    /// An error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        PluginError {
            code,
            message: RString::from(message.into()),
        }
    }
    /// The input is wrong.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }
    /// The plugin cannot do this.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    /// A panic caught in `what`: an `Internal` error marked as a panic (see [`PANIC_PREFIX`]).
    pub fn panicked(what: &str, message: &str) -> Self {
        Self::new(
            ErrorCode::Internal,
            format!("{PANIC_PREFIX}{what}: {message}"),
        )
    }
    /// Whether this is a panic a plugin caught ([`PluginError::panicked`]): a plugin bug,
    /// even though the process survived it.
    pub fn is_panic(&self) -> bool {
        self.code == ErrorCode::Internal && self.message.starts_with(PANIC_PREFIX)
    }
    /// Anything else.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for PluginError {}

/// Severity of a log line a plugin sends to the host.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Failures.
    Error,
    /// Degraded but working (for example a CUDA fallback to the CPU).
    Warn,
    /// Life-cycle events (model loaded, device chosen).
    Info,
    /// Details for debugging.
    Debug,
}
