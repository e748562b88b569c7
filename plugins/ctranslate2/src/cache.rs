//! Where converted models live, and converting once: a Hugging Face snapshot
//! (`.../models--org--name/snapshots/<rev>`) gets its conversion next to it, in
//! `.../models--org--name/ctranslate2/<rev>-<fingerprint>`; any other directory in
//! `$HF_HOME/ctranslate2/<name>-<fingerprint>`. The fingerprint covers the converter's
//! revision and the weight files (path, size, modification time), so a changed checkpoint is
//! converted again. A conversion is written to a temporary directory and renamed into place,
//! so a crash never leaves a half-written model and concurrent starts agree on one copy.

use ember_plugin_api::PluginError;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Bumped whenever the conversion's output changes.
const CONVERTER_REVISION: u32 = 1;

fn hf_home() -> PathBuf {
    if let Some(home) = std::env::var_os("HF_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface")
}

/// The fingerprint of the weight `files` of `dir`.
fn fingerprint(dir: &Path, files: &[String]) -> String {
    // std's SipHash with fixed keys: stable within a toolchain; a change only means one
    // more conversion.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    CONVERTER_REVISION.hash(&mut h);
    for f in files {
        let path = dir.join(f);
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        real.hash(&mut h);
        if let Ok(meta) = std::fs::metadata(&real) {
            meta.len().hash(&mut h);
            meta.modified().ok().hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

/// The directory the conversion of `dir`'s `files` lives in.
pub fn location(dir: &Path, files: &[String]) -> PathBuf {
    let print = fingerprint(dir, files);
    let snapshot = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent = dir.parent();
    let repo = parent.and_then(Path::parent);
    let in_hub = parent
        .and_then(Path::file_name)
        .is_some_and(|n| n == "snapshots")
        && repo
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with("models--"));
    match (in_hub, repo, snapshot) {
        (true, Some(repo), Some(rev)) => repo.join("ctranslate2").join(format!("{rev}-{print}")),
        (_, _, name) => hf_home().join("ctranslate2").join(format!(
            "{}-{print}",
            name.unwrap_or_else(|| "model".into())
        )),
    }
}

/// Runs `convert` into a fresh directory that becomes `target`, unless `target` exists;
/// says whether it converted.
pub fn get_or_convert(
    target: &Path,
    convert: impl FnOnce(&Path) -> Result<(), PluginError>,
) -> Result<bool, PluginError> {
    if target.join("model.bin").is_file() {
        return Ok(false);
    }
    let parent = target
        .parent()
        .ok_or_else(|| PluginError::internal("conversion target has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|e| {
        PluginError::internal(format!(
            "cannot create {} for the CTranslate2 conversion: {e}",
            parent.display()
        ))
    })?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)
        .map_err(|e| PluginError::internal(format!("cannot create {}: {e}", tmp.display())))?;
    if let Err(e) = convert(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process finished the same conversion first: use its copy.
        if !target.join("model.bin").is_file() {
            return Err(PluginError::internal(format!(
                "cannot move the conversion to {}: {e}",
                target.display()
            )));
        }
    }
    Ok(true)
}
