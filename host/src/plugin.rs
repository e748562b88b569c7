//! Finding and loading backend plugins.
//!
//! A plugin is `libember_<backend>.so`, looked for in `PLUGIN_DIR`, else next to the `ember`
//! binary, then in `/usr/local/lib/ember`. Its ABI major is read from a plain C symbol before
//! abi_stable checks the layout of its root module, so an incompatible plugin is refused with
//! a message naming the file and both versions; a plugin of an older minor loads, without the
//! functions later minors added (found through their own symbols). Plugins are never unloaded.

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use abi_stable::std_types::{RStr, RString, RVec};
use abi_stable::StableAbi;
use ember_plugin_api::abi::{Extensions31Fn, LayoutFn};
use ember_plugin_api::{
    AbiVersion, DType, Extensions31, HostContext, LoadRequest, LogLevel, ModelBox, PluginError,
    PluginInfo, PluginModRef, ABI_VERSION, ABI_VERSION_SYMBOL, EXTENSIONS_3_1_LAYOUT_SYMBOL,
    EXTENSIONS_3_1_SYMBOL,
};
use std::path::{Path, PathBuf};

/// Why a plugin could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No file for the backend in any searched directory.
    #[error(
        "no plugin for BACKEND={backend}: looked for {file} in {searched}; plugins found: {found}"
    )]
    NotFound {
        backend: String,
        file: String,
        searched: String,
        found: String,
    },
    /// The file exists but is not a loadable ember plugin.
    #[error("cannot load plugin {path}: {reason}")]
    Invalid { path: String, reason: String },
    /// The plugin was built for another ABI major.
    #[error(
        "plugin {path} was built for ember plugin ABI {found}, but this ember expects ABI \
         {expected} (majors must match); rebuild the plugin against ember-plugin-api {expected}"
    )]
    AbiMismatch {
        path: String,
        expected: AbiVersion,
        found: AbiVersion,
    },
    /// The plugin's `init` failed (for example its runtime library is missing).
    #[error("plugin {path} failed to initialise: {error}")]
    Init { path: String, error: PluginError },
}

/// A loaded plugin.
pub struct Plugin {
    module: PluginModRef,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// What it reported at `init`.
    pub info: PluginInfo,
    /// Its ABI version.
    pub abi: AbiVersion,
    /// The functions of ABI 3.1, when it was built against 3.1 or later.
    pub extensions: Option<Extensions31>,
}

extern "C" fn host_log(level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
    let target = target.as_str();
    let message = message.as_str();
    match level {
        LogLevel::Error => tracing::error!(plugin = target, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin = target, "{message}"),
        LogLevel::Info => tracing::info!(plugin = target, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin = target, "{message}"),
    }
}

/// Why `dlopen` refused a plugin, on one line: the loader's own words (for example the runtime
/// library it could not find), not abi_stable's multi-line wrapping of them.
fn open_error(e: LibraryError) -> String {
    match e {
        LibraryError::OpenError { err, .. } => std::error::Error::source(&*err)
            .map_or_else(|| err.to_string(), |cause| cause.to_string()),
        other => other.to_string(),
    }
}

/// Directories searched for plugins, in order.
pub fn search_dirs(plugin_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = plugin_dir {
        return vec![dir.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir);
    }
    dirs.push(PathBuf::from("/usr/local/lib/ember"));
    dirs
}

/// File name of a backend's plugin.
pub fn file_name(backend: &str) -> String {
    format!("libember_{backend}.so")
}

/// Backend names of the plugins present in `dirs`.
pub fn available(dirs: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(b) = name
                .strip_prefix("libember_")
                .and_then(|s| s.strip_suffix(".so"))
            {
                if !found.iter().any(|f| f == b) {
                    found.push(b.to_string());
                }
            }
        }
    }
    found.sort();
    found
}

/// Finds the plugin file of `backend`.
pub fn find(backend: &str, plugin_dir: Option<&Path>) -> Result<PathBuf, LoadError> {
    let dirs = search_dirs(plugin_dir);
    let file = file_name(backend);
    if let Some(p) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let found = available(&dirs);
    Err(LoadError::NotFound {
        backend: backend.to_string(),
        file,
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        found: if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        },
    })
}

/// The table of ABI 3.1 of a plugin that reports 3.1 or later, once its layout is checked
/// against the host's.
fn extensions_3_1(raw: &'static RawLibrary) -> Result<Extensions31, String> {
    let missing = |symbol: &[u8]| {
        format!(
            "the plugin reports ABI 3.1 or later but lacks its symbol {} (plugins are \
             exported with ember_plugin_api::export_plugin!)",
            String::from_utf8_lossy(symbol.strip_suffix(b"\0").unwrap_or(symbol))
        )
    };
    // SAFETY: a plugin of 3.1 or later exports both symbols with these signatures (the SDK's
    // export_plugin! does); the layout function only returns a static, and the table is read
    // only once its layout matches the host's. The library is never unloaded.
    unsafe {
        let layout = raw
            .get::<LayoutFn>(EXTENSIONS_3_1_LAYOUT_SYMBOL)
            .map_err(|_| missing(EXTENSIONS_3_1_LAYOUT_SYMBOL))?;
        check_layout_compatibility(<Extensions31 as StableAbi>::LAYOUT, (*layout)()).map_err(
            |e| {
                tracing::debug!("layout of the plugin's table of ABI 3.1: {e}");
                "the layout of its table of ABI 3.1 differs from the host's (RUST_LOG=debug \
                 shows how)"
                    .to_string()
            },
        )?;
        let table = raw
            .get::<Extensions31Fn>(EXTENSIONS_3_1_SYMBOL)
            .map_err(|_| missing(EXTENSIONS_3_1_SYMBOL))?;
        Ok((*table)())
    }
}

impl Plugin {
    /// Loads the plugin at `path`, checks its ABI and initialises it.
    pub fn load(path: &Path) -> Result<Plugin, LoadError> {
        let shown = path.display().to_string();
        let invalid = |reason: String| LoadError::Invalid {
            path: shown.clone(),
            reason,
        };
        let path = path.canonicalize().map_err(|e| invalid(e.to_string()))?;
        let raw = RawLibrary::load_at(&path).map_err(|e| invalid(open_error(e)))?;
        // Plugins are never unloaded: their code and statics live as long as the process.
        let raw: &'static RawLibrary = Box::leak(Box::new(raw));
        // SAFETY: the symbol is a plain `extern "C" fn() -> AbiVersion` in every ember plugin,
        // a layout that no ABI version changes.
        let found = unsafe {
            raw.get::<extern "C" fn() -> AbiVersion>(ABI_VERSION_SYMBOL)
                .map(|f| (*f)())
                .map_err(|_| {
                    invalid(
                        "no ember_plugin_abi_version symbol: not an ember plugin \
                         (plugins are exported with ember_plugin_api::export_plugin!)"
                            .into(),
                    )
                })?
        };
        if found.major != ABI_VERSION.major {
            return Err(LoadError::AbiMismatch {
                path: shown,
                expected: ABI_VERSION,
                found,
            });
        }
        // SAFETY: the library stays loaded for the life of the process (leaked above).
        let header =
            unsafe { lib_header_from_raw_library(raw) }.map_err(|e| invalid(e.to_string()))?;
        let module = header
            .init_root_module::<PluginModRef>()
            .map_err(|e| invalid(e.to_string()))?;
        let ctx = HostContext {
            abi: ABI_VERSION,
            plugin_path: RString::from(path.display().to_string()),
            log: host_log,
        };
        let info = (module.init())(ctx)
            .into_result()
            .map_err(|error| LoadError::Init {
                path: shown.clone(),
                error,
            })?;
        let extensions = match found.minor {
            0 => None,
            _ => Some(extensions_3_1(raw).map_err(invalid)?),
        };
        Ok(Plugin {
            module,
            path,
            info,
            abi: found,
            extensions,
        })
    }

    /// The files the plugin reads from a repository with this listing.
    pub fn select_files(
        &self,
        listing: &[String],
        dtype: DType,
    ) -> Result<Vec<String>, PluginError> {
        let listing: RVec<RString> = listing.iter().map(|s| RString::from(s.as_str())).collect();
        (self.module.select_files())(&listing, dtype)
            .into_result()
            .map(|v| v.into_iter().map(|s| s.into_string()).collect())
    }

    /// Loads a model (the engine loads through `ModelRunner::load`, which adds the functions of
    /// later minors).
    pub fn load_model(&self, request: &LoadRequest) -> Result<ModelBox, PluginError> {
        (self.module.load_model())(request).into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_dlopen_refuses_is_reported_on_one_line_in_the_loaders_words() {
        let dir = std::env::temp_dir().join(format!("ember-plugin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("libember_garbage.so");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let loaded = Plugin::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let Err(e) = loaded else {
            panic!("a file of text loaded as a plugin");
        };
        let message = e.to_string();
        assert!(matches!(e, LoadError::Invalid { .. }), "{message}");
        assert!(!message.contains('\n'), "{message:?}");
        assert!(message.contains("libember_garbage.so"), "{message}");
        // glibc's own words for a file that is not a shared object.
        assert!(message.contains("ELF header"), "{message}");
    }
}
