//! Where converted models live, and converting once: a Hugging Face snapshot
//! (`.../models--org--name/snapshots/<rev>`) gets its conversion next to it, in
//! `.../models--org--name/ctranslate2/<rev>-<fingerprint>`; any other directory in
//! `$HF_HOME/ctranslate2/<name>-<fingerprint>`. The fingerprint covers the converter's
//! revision, the weight files (path, size, modification time) and the content of the other
//! files the conversion reads (`config.json`, `tokenizer.json`), so a changed checkpoint is
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

/// Files of the checkpoint besides its weights that the conversion reads: `config.json`
/// (layers, heads, activation, layer-norm epsilon, position offset, all written into
/// `model.bin` and CTranslate2's `config.json`) and `tokenizer.json` (`vocabulary.json`).
const CONVERSION_INPUTS: &[&str] = &["config.json", "tokenizer.json"];

/// The fingerprint of the checkpoint in `dir` with weight `files`.
///
/// Weight files count by canonical path, size and modification time, not by content: hashing
/// them would read every byte of a multi-GB checkpoint at every start, which is what the cache
/// is there to avoid. A rewritten file gets a new modification time (to the nanosecond), so
/// new weights are noticed even at the same size; a hub snapshot's files resolve to blobs
/// named by their content hash, so there the path alone is exact. What goes unnoticed is a
/// rewrite that also puts back the old size and modification time to the nanosecond (`touch
/// -r`); what costs a needless conversion is a `touch`. The change time and inode are left
/// out on purpose: copying a model directory or HF_HOME to another machine, or a container
/// image unpacked on a new host, keeps modification times but not those, and would convert
/// every model again. The other inputs are small (a few MB at most) and are hashed whole.
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
    for f in CONVERSION_INPUTS {
        f.hash(&mut h);
        std::fs::read(dir.join(f)).ok().hash(&mut h);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A model directory with weights and the conversion's other inputs, under the system's
    /// temporary directory.
    fn checkpoint(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ember-ct2-cache-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.safetensors"), [1u8; 64]).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"hidden_act": "gelu"}"#).unwrap();
        std::fs::write(dir.join("tokenizer.json"), r#"{"model": {}}"#).unwrap();
        dir
    }

    fn weights() -> Vec<String> {
        vec!["model.safetensors".to_string()]
    }

    /// Sets the modification time of `path`.
    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn an_unchanged_checkpoint_keeps_its_fingerprint() {
        let dir = checkpoint("same");
        assert_eq!(fingerprint(&dir, &weights()), fingerprint(&dir, &weights()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_weights_of_the_same_size_change_the_fingerprint() {
        let dir = checkpoint("weights");
        let path = dir.join("model.safetensors");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        set_mtime(&path, t);
        let before = fingerprint(&dir, &weights());
        std::fs::write(&path, [2u8; 64]).unwrap();
        set_mtime(&path, t + Duration::from_nanos(1));
        assert_ne!(fingerprint(&dir, &weights()), before);
        // A modification time alone counts too (the price of not reading the weights).
        std::fs::write(&path, [1u8; 64]).unwrap();
        set_mtime(&path, t + Duration::from_nanos(2));
        assert_ne!(fingerprint(&dir, &weights()), before);
        set_mtime(&path, t);
        assert_eq!(fingerprint(&dir, &weights()), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_and_tokenizer_count_by_content() {
        let dir = checkpoint("inputs");
        let before = fingerprint(&dir, &weights());
        for (file, changed) in [
            ("config.json", r#"{"hidden_act": "relu"}"#),
            ("tokenizer.json", r#"{"model": {"x": 1}}"#),
        ] {
            let path = dir.join(file);
            let old = std::fs::read(&path).unwrap();
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            std::fs::write(&path, changed).unwrap();
            // Even with the old modification time put back, the new content counts.
            set_mtime(&path, mtime);
            assert_ne!(fingerprint(&dir, &weights()), before, "{file} changed");
            // The old content back, rewritten later: the old fingerprint.
            std::fs::write(&path, old).unwrap();
            set_mtime(&path, mtime + Duration::from_secs(5));
            assert_eq!(fingerprint(&dir, &weights()), before, "{file} restored");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_tokenizer_is_not_an_empty_one() {
        let dir = checkpoint("missing");
        std::fs::write(dir.join("tokenizer.json"), "").unwrap();
        let empty = fingerprint(&dir, &weights());
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        assert_ne!(fingerprint(&dir, &weights()), empty);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hub_snapshots_convert_next_to_their_repository() {
        let root = checkpoint("hub");
        let snapshot = root
            .join("models--org--name")
            .join("snapshots")
            .join("abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        for f in ["model.safetensors", "config.json", "tokenizer.json"] {
            std::fs::copy(root.join(f), snapshot.join(f)).unwrap();
        }
        let at = location(&snapshot, &weights());
        assert_eq!(
            at.parent().unwrap(),
            root.join("models--org--name/ctranslate2")
        );
        let name = at.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            name,
            format!("abc123-{}", fingerprint(&snapshot, &weights()))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
