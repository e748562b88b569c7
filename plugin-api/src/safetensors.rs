//! The weight files of a Hugging Face repository in safetensors, as plugins that read
//! checkpoints choose them from the listing `Backend::select_files` receives, and their
//! floating-point tensors decoded to f32.

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

/// The values of a tensor's little-endian `bytes` as f32 (from f32, f16 or bf16); an error
/// naming the type for any other.
pub fn floats(dtype: safetensors::Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    use safetensors::Dtype;
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(format!("{other:?} is not a floating-point type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_decode_each_width_and_refuse_integers() {
        use safetensors::Dtype;
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(floats(Dtype::F32, &f32s), Ok(vec![1.5, -2.0]));
        // 1.5 and -2.0 in float16 (0x3e00, 0xc000) and bfloat16 (0x3fc0, 0xc000).
        assert_eq!(
            floats(Dtype::F16, &[0x00, 0x3e, 0x00, 0xc0]),
            Ok(vec![1.5, -2.0])
        );
        assert_eq!(
            floats(Dtype::BF16, &[0xc0, 0x3f, 0x00, 0xc0]),
            Ok(vec![1.5, -2.0])
        );
        assert!(floats(Dtype::I64, &[0; 8]).unwrap_err().contains("I64"));
    }

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
