//! The weight files of a Hugging Face repository in safetensors, as plugins that read
//! checkpoints choose them from the listing `Backend::select_files` receives.

/// `model.safetensors`, else `model.safetensors.index.json` with its `model-*.safetensors`
/// shards; `None` when the listing has neither.
pub fn weight_files(listing: &[String]) -> Option<Vec<String>> {
    let has = |f: &str| listing.iter().any(|l| l == f);
    if has("model.safetensors") {
        return Some(vec!["model.safetensors".into()]);
    }
    if has("model.safetensors.index.json") {
        let mut out = vec!["model.safetensors.index.json".to_string()];
        out.extend(
            listing
                .iter()
                .filter(|f| f.starts_with("model-") && f.ends_with(".safetensors"))
                .cloned(),
        );
        return Some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(files: &[&str]) -> Vec<String> {
        files.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn single_file_first_then_shards_then_none() {
        let both = list(&["model.safetensors", "model.safetensors.index.json"]);
        assert_eq!(weight_files(&both), Some(list(&["model.safetensors"])));
        let sharded = list(&[
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ]);
        assert_eq!(
            weight_files(&sharded),
            Some(list(&[
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
            ]))
        );
        assert_eq!(weight_files(&list(&["pytorch_model.bin"])), None);
    }
}
