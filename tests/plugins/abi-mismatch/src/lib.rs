//! A plugin as a build against the next ABI major would look to this host: its version
//! symbol reports major + 1. The host must refuse it before touching anything else.

use ember_plugin_api::{AbiVersion, ABI_MAJOR};

/// Reports ABI `ABI_MAJOR + 1`.0.
#[no_mangle]
pub extern "C" fn ember_plugin_abi_version() -> AbiVersion {
    AbiVersion {
        major: ABI_MAJOR + 1,
        minor: 0,
    }
}
