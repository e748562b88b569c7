//! The liar test plugin's model (tests/plugins/liar) exported as a plugin of ember's plugin
//! ABI 3.0: it reports version 3.0 and exports none of the function tables later minors added,
//! as a plugin built before them does. A host of a later minor must load it and serve what 3.0
//! served.

#[path = "../../liar/src/model.rs"]
mod model;

ember_plugin_api::export_plugin!(@abi_3_0 model::Liar);
