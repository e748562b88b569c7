//! The safe SDK: implement [`Backend`] and [`Model`] with plain Rust types, then export the
//! backend with [`crate::export_plugin!`]. The SDK turns panics into [`PluginError`]s, so a
//! plugin never unwinds into the host.

use crate::abi::{
    Extensions31, HostContext, ModelBox, ModelHandle, ModelHandle_TO, PluginMod, PluginModRef,
};
use crate::types::{
    DType, EmbeddingBatch, LoadRequest, LoadedModel, LogLevel, LogitBatch, Outputs, PairBatch,
    PixelBatch, PluginError, PluginInfo, ScoreBatch, SparseBatch, SparseReduction, TokenBatch,
    TokenStates,
};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_CanDowncast;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// A backend: describes itself, picks the files it reads, and loads models.
pub trait Backend: 'static {
    /// What the backend can do in this process (called once, after the host's context is set);
    /// an error here (for example a runtime library that cannot be found) stops the host.
    fn info() -> Result<PluginInfo, PluginError>;

    /// Chooses, from a model repository's file listing, the files this backend reads for
    /// `dtype`; an error names the files it looked for when none fit.
    fn select_files(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError>;

    /// Loads one model.
    fn load(request: &LoadRequest) -> Result<Box<dyn Model>, PluginError>;
}

/// A loaded model. Forward functions that a model kind does not have keep their default,
/// which answers an `Unsupported` error.
pub trait Model: Send + Sync + 'static {
    /// Facts about the loaded model.
    fn describe(&self) -> LoadedModel;

    /// Pooled, unnormalised embeddings of token sequences, one row per input row.
    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let _ = batch;
        Err(PluginError::unsupported(
            "this model does not produce text embeddings",
        ))
    }

    /// One raw logit per query–document pair.
    fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
        let _ = batch;
        Err(PluginError::unsupported("this model does not score pairs"))
    }

    /// Embeddings of preprocessed images, one row per image.
    fn embed_pixels(&self, batch: &PixelBatch) -> Result<EmbeddingBatch, PluginError> {
        let _ = batch;
        Err(PluginError::unsupported(
            "this model does not produce image embeddings",
        ))
    }

    /// Every label's raw logit for each row (a text, or a pair of texts with its segment ids).
    fn classify_tokens(&self, batch: &TokenBatch) -> Result<LogitBatch, PluginError> {
        let _ = batch;
        Err(PluginError::unsupported("this model is not a classifier"))
    }

    /// The outputs the model offers besides its kind's own; say [`Outputs::TOKEN_STATES`]
    /// when [`Model::token_states`] answers.
    fn outputs(&self) -> Outputs {
        Outputs::NONE
    }

    /// Each row's state of every token its attention mask keeps (the states pooling reads,
    /// before pooling, not normalised), ragged: see [`TokenStates`]. A model that says
    /// [`Outputs::UNATTENDED_STATES`] answers the positions of [`TokenBatch::pooling_mask`]
    /// instead, which may include positions attention skips.
    fn token_states(&self, batch: &TokenBatch) -> Result<TokenStates, PluginError> {
        let _ = batch;
        Err(PluginError::unsupported(
            "this model does not produce token states",
        ))
    }

    /// Each row's SPLADE weights: the masked-language head's logits of the tokens the
    /// attention mask keeps, reduced as `reduction` says; say [`Outputs::SPARSE`] in
    /// [`Model::outputs`] when implemented.
    fn sparse(
        &self,
        batch: &TokenBatch,
        reduction: SparseReduction,
    ) -> Result<SparseBatch, PluginError> {
        let _ = (batch, reduction);
        Err(PluginError::unsupported(
            "this model has no masked-language head: it produces no sparse weights",
        ))
    }
}

static HOST: OnceLock<HostContext> = OnceLock::new();

/// Directory holding the plugin's shared object, as the host reported it at `init`.
pub fn plugin_dir() -> Option<std::path::PathBuf> {
    let host = HOST.get()?;
    std::path::Path::new(host.plugin_path.as_str())
        .parent()
        .map(|p| p.to_path_buf())
}

/// Sends one line to the host's log; before `init` (or outside a host) it goes to stderr.
pub fn log(level: LogLevel, target: &str, message: &str) {
    match HOST.get() {
        Some(host) => (host.log)(level, RStr::from_str(target), RStr::from_str(message)),
        None => eprintln!("[{level:?}] {target}: {message}"),
    }
}

/// Logs a formatted line at info level to the host's log: `plugin_info!("backend", "...")`.
#[macro_export]
macro_rules! plugin_info {
    ($target:expr, $($arg:tt)*) => {
        $crate::sdk::log($crate::LogLevel::Info, $target, &format!($($arg)*))
    };
}

/// Logs a formatted line at warn level to the host's log.
#[macro_export]
macro_rules! plugin_warn {
    ($target:expr, $($arg:tt)*) => {
        $crate::sdk::log($crate::LogLevel::Warn, $target, &format!($($arg)*))
    };
}

/// Logs a formatted line at debug level to the host's log.
#[macro_export]
macro_rules! plugin_debug {
    ($target:expr, $($arg:tt)*) => {
        $crate::sdk::log($crate::LogLevel::Debug, $target, &format!($($arg)*))
    };
}

/// The message of a caught panic: its `&str` or `String` payload, else a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string())
}

/// Runs `f`, turning a panic into an `Internal` error that carries the panic message.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e),
        Err(payload) => RResult::RErr(PluginError::panicked(what, &panic_message(&*payload))),
    }
}

/// Adapts a [`Model`] to the ABI's [`ModelHandle`], guarding every call.
struct Guarded(Box<dyn Model>);

impl ModelHandle for Guarded {
    fn describe(&self) -> LoadedModel {
        // describe() is infallible at the ABI; a panic here yields a conservative answer.
        match catch_unwind(AssertUnwindSafe(|| self.0.describe())) {
            Ok(d) => d,
            Err(_) => LoadedModel {
                embedding_dim: 0,
                device: RString::from("unknown"),
                dtype: DType::Auto,
                concurrent_calls: false,
            },
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> RResult<EmbeddingBatch, PluginError> {
        guard("embed_tokens", || {
            batch.validate()?;
            self.0.embed_tokens(batch)
        })
    }

    fn score_pairs(&self, batch: &PairBatch) -> RResult<ScoreBatch, PluginError> {
        guard("score_pairs", || {
            batch.tokens.validate()?;
            self.0.score_pairs(batch)
        })
    }

    fn embed_pixels(&self, batch: &PixelBatch) -> RResult<EmbeddingBatch, PluginError> {
        guard("embed_pixels", || {
            batch.validate()?;
            self.0.embed_pixels(batch)
        })
    }

    fn classify_tokens(&self, batch: &TokenBatch) -> RResult<LogitBatch, PluginError> {
        guard("classify_tokens", || {
            batch.validate()?;
            self.0.classify_tokens(batch)
        })
    }
}

/// Wraps a plain [`Model`] into the ABI's owned handle (one that [`extensions_3_1`]'s
/// functions can take back to the model).
pub fn into_model_box(model: Box<dyn Model>) -> ModelBox {
    ModelHandle_TO::from_value(Guarded(model), TD_CanDowncast)
}

/// The model behind a handle this plugin made.
fn model_of(handle: &ModelBox) -> Result<&dyn Model, PluginError> {
    handle
        .obj
        .downcast_as::<Guarded>()
        .map(|g| g.0.as_ref())
        .map_err(|_| PluginError::internal("the handle is not one of this plugin's models"))
}

extern "C" fn outputs(handle: &ModelBox) -> Outputs {
    // Infallible at the ABI; a panic here offers nothing extra.
    catch_unwind(AssertUnwindSafe(|| model_of(handle).map(|m| m.outputs())))
        .ok()
        .and_then(Result::ok)
        .unwrap_or(Outputs::NONE)
}

extern "C" fn token_states(
    handle: &ModelBox,
    batch: &TokenBatch,
) -> RResult<TokenStates, PluginError> {
    guard("token_states", || {
        batch.validate()?;
        model_of(handle)?.token_states(batch)
    })
}

extern "C" fn sparse(
    handle: &ModelBox,
    batch: &TokenBatch,
    reduction: SparseReduction,
) -> RResult<SparseBatch, PluginError> {
    guard("sparse", || {
        batch.validate()?;
        model_of(handle)?.sparse(batch, reduction)
    })
}

/// The functions of ABI 3.1 over this SDK's models (exported by [`crate::export_plugin!`]).
pub fn extensions_3_1() -> Extensions31 {
    Extensions31 {
        outputs,
        token_states,
        sparse,
    }
}

extern "C" fn init<B: Backend>(host: HostContext) -> RResult<PluginInfo, PluginError> {
    let _ = HOST.set(host);
    guard("init", B::info)
}

extern "C" fn select_files<B: Backend>(
    listing: &RVec<RString>,
    dtype: DType,
) -> RResult<RVec<RString>, PluginError> {
    guard("select_files", || {
        let listing: Vec<String> = listing.iter().map(|s| s.to_string()).collect();
        let files = B::select_files(&listing, dtype)?;
        Ok(files.into_iter().map(RString::from).collect())
    })
}

extern "C" fn load_model<B: Backend>(request: &LoadRequest) -> RResult<ModelBox, PluginError> {
    guard("load_model", || B::load(request).map(into_model_box))
}

/// Builds the root module of backend `B` (used by [`crate::export_plugin!`]).
pub fn root_module<B: Backend>() -> PluginModRef {
    PluginMod {
        init: init::<B>,
        select_files: select_files::<B>,
        load_model: load_model::<B>,
    }
    .leak_into_prefix()
}

/// Exports a [`Backend`] as an ember plugin: the ABI version symbol, the root module and the
/// function tables of the minors after 3.0.
///
/// ```text
/// struct MyBackend;
/// impl ember_plugin_api::Backend for MyBackend { /* ... */ }
/// ember_plugin_api::export_plugin!(MyBackend);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($backend:ty) => {
        $crate::export_plugin!(@root $backend, $crate::ABI_VERSION);

        /// The layout of this plugin's table of ABI 3.1, checked by the host before it reads
        /// the table.
        #[no_mangle]
        pub extern "C" fn ember_plugin_extensions_3_1_layout(
        ) -> &'static $crate::reexports::TypeLayout {
            <$crate::abi::Extensions31 as $crate::reexports::StableAbi>::LAYOUT
        }

        /// The functions of plugin ABI 3.1.
        #[no_mangle]
        pub extern "C" fn ember_plugin_extensions_3_1() -> $crate::abi::Extensions31 {
            $crate::sdk::extensions_3_1()
        }
    };
    // A plugin as ABI 3.0 built them (version 3.0, no later tables): for ember's own tests of
    // hosts loading older plugins.
    (@abi_3_0 $backend:ty) => {
        $crate::export_plugin!(@root $backend, $crate::AbiVersion {
            major: $crate::ABI_MAJOR,
            minor: 0,
        });
    };
    (@root $backend:ty, $version:expr) => {
        /// Reports the plugin's ABI version; read by the host before anything else.
        #[no_mangle]
        pub extern "C" fn ember_plugin_abi_version() -> $crate::AbiVersion {
            $version
        }

        // The symbol abi_stable 0.11 looks up (its ROOT_MODULE_LOADER_NAME; a test in
        // ember-plugin-api checks the spelling), so that plugins need not depend on abi_stable.
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static EMBER_PLUGIN_ROOT: $crate::reexports::LibHeader = {
            fn module() -> $crate::PluginModRef {
                $crate::sdk::root_module::<$backend>()
            }
            extern "C" fn erased() -> $crate::reexports::RootModuleResult {
                $crate::reexports::__call_root_module_loader(module)
            }
            unsafe {
                $crate::reexports::LibHeader::from_constructor::<$crate::PluginModRef>(
                    erased,
                    $crate::reexports::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// Forwards a host log call to stderr; used by tools that load a plugin outside the host.
pub extern "C" fn stderr_log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    eprintln!("[{level:?}] {target}: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ErrorCode;

    #[test]
    fn export_name_matches_abi_stable_loader_symbol() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    #[test]
    fn guard_turns_panic_into_internal_error() {
        let r: RResult<(), PluginError> = guard("test", || panic!("boom {}", 42));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("boom 42"), "{}", e.message);
        assert!(e.is_panic());
        assert!(!PluginError::internal("panicked elsewhere").is_panic());
    }

    struct Nothing;
    impl Model for Nothing {
        fn describe(&self) -> LoadedModel {
            LoadedModel {
                embedding_dim: 4,
                device: "cpu".into(),
                dtype: DType::Fp32,
                concurrent_calls: true,
            }
        }
        fn embed_tokens(&self, _: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
            panic!("forward exploded")
        }
    }

    #[test]
    fn model_box_guards_forward_calls_and_validates_shapes() {
        let m = into_model_box(Box::new(Nothing));
        assert_eq!(m.describe().embedding_dim, 4);
        let bad = TokenBatch {
            rows: 2,
            seq_len: 3,
            input_ids: RVec::from(vec![1, 2, 3]),
            attention_mask: RVec::from(vec![1; 6]),
            token_type_ids: RVec::from(vec![0; 6]),
            pooling_mask: RVec::new(),
        };
        let e = m.embed_tokens(&bad).into_result().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(
            e.message.contains("input_ids has 3 values"),
            "{}",
            e.message
        );
        let short_pooling = TokenBatch {
            input_ids: RVec::from(vec![1; 6]),
            pooling_mask: RVec::from(vec![1; 5]),
            ..bad.clone()
        };
        let e = m.embed_tokens(&short_pooling).into_result().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(
            e.message.contains("pooling_mask has 5 values"),
            "{}",
            e.message
        );
        let good = TokenBatch {
            input_ids: RVec::from(vec![1; 6]),
            ..bad
        };
        let e = m.embed_tokens(&good).into_result().unwrap_err();
        assert!(e.message.contains("forward exploded"), "{}", e.message);
        let e = m
            .score_pairs(&PairBatch {
                tokens: good.clone(),
            })
            .into_result()
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
        // The functions of 3.1 find the model behind the handle, with the defaults it keeps.
        let ext = extensions_3_1();
        assert_eq!((ext.outputs)(&m), Outputs::NONE);
        let e = (ext.token_states)(&m, &good).into_result().unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
        let e = (ext.token_states)(&m, &short_pooling)
            .into_result()
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput, "{}", e.message);
    }

    #[test]
    fn token_states_check_their_offsets_against_the_rows_asked_for() {
        let s = TokenStates::from_rows(2, &[3, 1], (0..8).map(|x| x as f32).collect());
        assert_eq!(s.offsets.as_slice(), &[0, 3, 4]);
        s.validate(&[3, 1]).unwrap();
        assert_eq!(s.row(1), &[6.0, 7.0]);
        assert!(s.validate(&[2, 2]).unwrap_err().contains("offsets"));
        let short = TokenStates::from_rows(2, &[3, 1], vec![0.0; 7]);
        assert!(short.validate(&[3, 1]).unwrap_err().contains("7 values"));
        assert!(Outputs::TOKEN_STATES.has(Outputs::TOKEN_STATES));
        assert!(!Outputs::NONE.has(Outputs::TOKEN_STATES));
        assert_eq!(
            Outputs(1 << 40).with(Outputs::TOKEN_STATES).names(),
            ["token_states"]
        );
        let both = Outputs::TOKEN_STATES.with(Outputs::SPARSE);
        assert_eq!(both.names(), ["token_states", "sparse"]);
        assert_eq!(both.without(Outputs::SPARSE), Outputs::TOKEN_STATES);
    }

    #[test]
    fn sparse_batches_check_offsets_order_and_values() {
        let b = SparseBatch::from_rows(vec![(vec![3, 9], vec![0.5, 1.0]), (vec![], vec![])]);
        assert_eq!(b.offsets.as_slice(), &[0, 2, 2]);
        b.validate(2, 10).unwrap();
        assert_eq!(b.row(0), (&[3u32, 9][..], &[0.5f32, 1.0][..]));
        assert!(b.validate(3, 10).is_err());
        assert!(b
            .validate(2, 9)
            .unwrap_err()
            .contains("below the vocabulary"));
        let unsorted = SparseBatch::from_rows(vec![(vec![9, 3], vec![0.5, 1.0])]);
        assert!(unsorted.validate(1, 10).unwrap_err().contains("ascend"));
        let zero = SparseBatch::from_rows(vec![(vec![1], vec![0.0])]);
        assert!(zero.validate(1, 10).unwrap_err().contains("positive"));
    }
}
