//! The root module every plugin exports and the model handle it returns.
//!
//! Plugin authors do not use this module directly: they implement the traits of
//! [`crate::sdk`] and call [`crate::export_plugin!`].
// `#[sabi_trait]` expands to impls inside a const block, which rustc's lint flags.
#![allow(non_local_definitions)]

use crate::types::{
    AbiVersion, DType, EmbeddingBatch, LoadRequest, LoadedModel, LogLevel, LogitBatch, Outputs,
    PairBatch, PixelBatch, PluginError, PluginInfo, ScoreBatch, SparseBatch, SparseReduction,
    TokenBatch, TokenStates,
};
use abi_stable::library::RootModule;
use abi_stable::sabi_trait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

/// Major version of the ABI this crate defines; a host loads only plugins of its own major.
pub const ABI_MAJOR: u32 = 3;
/// Minor version of the ABI this crate defines; new minors only add optional functions.
/// 3.1 added [`Extensions31`] (token states, SPLADE weights).
pub const ABI_MINOR: u32 = 1;
/// This crate's ABI version.
pub const ABI_VERSION: AbiVersion = AbiVersion {
    major: ABI_MAJOR,
    minor: ABI_MINOR,
};

/// Name of the plain C symbol that reports a plugin's ABI version before any layout check.
pub const ABI_VERSION_SYMBOL: &[u8] = b"ember_plugin_abi_version\0";

/// Signature of the [`ABI_VERSION_SYMBOL`] function.
pub type AbiVersionFn = extern "C" fn() -> AbiVersion;

/// What the host tells a plugin at `init`, and the services it offers (logging).
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct HostContext {
    /// The host's ABI version.
    pub abi: AbiVersion,
    /// Absolute path of the plugin's own shared object, to find runtimes shipped beside it.
    pub plugin_path: RString,
    /// Writes one line to the host's log: level, target (the plugin name), message.
    pub log: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>),
}

/// A loaded model. The host calls one handle's forward functions from one thread at a time
/// unless [`LoadedModel::concurrent_calls`] says otherwise.
#[sabi_trait]
pub trait ModelHandle: Send + Sync {
    /// Facts about the loaded model (vector width, device, precision, threading).
    fn describe(&self) -> LoadedModel;

    /// Pooled, unnormalised embeddings of token sequences (embedders, CLIP text towers).
    fn embed_tokens(&self, batch: &TokenBatch) -> RResult<EmbeddingBatch, PluginError>;

    /// One raw logit per query–document pair (rerankers).
    fn score_pairs(&self, batch: &PairBatch) -> RResult<ScoreBatch, PluginError>;

    /// Embeddings of preprocessed images (CLIP vision towers).
    fn embed_pixels(&self, batch: &PixelBatch) -> RResult<EmbeddingBatch, PluginError>;

    /// Every label's raw logit for each text or pair of texts (sequence classifiers).
    #[sabi(last_prefix_field)]
    fn classify_tokens(&self, batch: &TokenBatch) -> RResult<LogitBatch, PluginError>;
}

/// An owned model handle as it crosses the boundary.
pub type ModelBox = ModelHandle_TO<'static, RBox<()>>;

/// Name of the C symbol that returns a plugin's [`Extensions31`]; plugins of ABI 3.0 lack it.
pub const EXTENSIONS_3_1_SYMBOL: &[u8] = b"ember_plugin_extensions_3_1\0";

/// Signature of the [`EXTENSIONS_3_1_SYMBOL`] function.
pub type Extensions31Fn = extern "C" fn() -> Extensions31;

/// Name of the C symbol that returns the layout of a plugin's [`Extensions31`], which the host
/// checks before it calls [`EXTENSIONS_3_1_SYMBOL`].
pub const EXTENSIONS_3_1_LAYOUT_SYMBOL: &[u8] = b"ember_plugin_extensions_3_1_layout\0";

/// Signature of the [`EXTENSIONS_3_1_LAYOUT_SYMBOL`] function.
pub type LayoutFn = extern "C" fn() -> &'static abi_stable::type_layout::TypeLayout;

/// The model functions ABI 3.1 added, each taking a handle the same plugin returned (one the
/// SDK's [`crate::sdk::into_model_box`] made; other handles get an `Internal` error).
///
/// They live outside [`ModelHandle`]'s vtable because abi_stable refuses to load a library
/// whose vtable has fewer entries than the host's: appending methods there would lock out
/// every plugin of an older minor. Each minor that adds functions adds its own table under
/// its own symbol, and a table never changes once released, so a host finds exactly the
/// tables a plugin was built with.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct Extensions31 {
    /// The outputs the model offers besides its kind's own.
    pub outputs: extern "C" fn(model: &ModelBox) -> Outputs,
    /// Each row's state of every live token, offered when [`Outputs::TOKEN_STATES`] is (with
    /// [`Outputs::UNATTENDED_STATES`]: of every position its pooling mask keeps).
    pub token_states:
        extern "C" fn(model: &ModelBox, batch: &TokenBatch) -> RResult<TokenStates, PluginError>,
    /// Each row's SPLADE weights, offered when [`Outputs::SPARSE`] is: the masked-language
    /// head's logits reduced inside the plugin, so that no vocabulary-wide tensor crosses.
    pub sparse: extern "C" fn(
        model: &ModelBox,
        batch: &TokenBatch,
        reduction: SparseReduction,
    ) -> RResult<SparseBatch, PluginError>,
}

/// The root module of a plugin: its entry points, found by the host at load.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Called once after loading: receives the host's services, reports what the plugin can do.
    pub init: extern "C" fn(host: HostContext) -> RResult<PluginInfo, PluginError>,

    /// Given a model repository's file listing and the precision asked for, the files the
    /// plugin will read (weights and their side files), or an error naming what it looked for.
    pub select_files:
        extern "C" fn(listing: &RVec<RString>, dtype: DType) -> RResult<RVec<RString>, PluginError>,

    /// Loads one model.
    #[sabi(last_prefix_field)]
    pub load_model: extern "C" fn(request: &LoadRequest) -> RResult<ModelBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "ember_plugin";
    const NAME: &'static str = "ember_plugin";
    // abi_stable compares these at load and refuses a library whose minor is below the host's,
    // so they stay at the major's first minor: a plugin of an older minor must load. ember's
    // own minor is what `ember_plugin_abi_version` reports.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("3.0.0");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_strings_follow_abi_constants() {
        let v = <PluginModRef as RootModule>::VERSION_STRINGS;
        assert_eq!(v.version.as_str(), format!("{ABI_MAJOR}.0.0"));
    }
}
