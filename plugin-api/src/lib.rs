//! ember's plugin ABI and SDK: the guide below is `plugin-api/README.md`.
#![doc = include_str!("../README.md")]

pub mod abi;
pub mod cuda;
pub mod families;
pub mod parts;
pub mod pooling;
pub mod safetensors;
pub mod sdk;
pub mod types;

pub use abi::{
    Extensions31, HostContext, ModelBox, ModelHandle, PluginMod, PluginModRef, ABI_MAJOR,
    ABI_MINOR, ABI_VERSION, ABI_VERSION_SYMBOL, EXTENSIONS_3_1_LAYOUT_SYMBOL,
    EXTENSIONS_3_1_SYMBOL,
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
    pub use abi_stable::type_layout::TypeLayout;
    pub use abi_stable::StableAbi;
}
