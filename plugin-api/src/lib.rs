//! ember's plugin ABI and SDK.
//!
//! A backend plugin is a `cdylib` that implements [`Backend`] and [`Model`] and exports them
//! with [`export_plugin!`]. The host loads it at start-up, checks its ABI version, and calls it
//! with token batches, pair batches and pixel batches it prepared itself; the plugin runs the
//! model on its device and returns pooled vectors or raw scores.
#![doc = ""]

pub mod abi;
pub mod sdk;
pub mod types;

pub use abi::{
    HostContext, ModelBox, ModelHandle, PluginMod, PluginModRef, ABI_MAJOR, ABI_MINOR, ABI_VERSION,
    ABI_VERSION_SYMBOL,
};
pub use sdk::{Backend, Model};
pub use types::*;

/// Items the export macro needs from abi_stable, so plugins need not depend on it.
#[doc(hidden)]
pub mod reexports {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
    pub use abi_stable::std_types::{RResult, RString, RVec};
}
