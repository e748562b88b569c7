//! Which ONNX files of a model repository this backend reads, per precision.

use ember_plugin_api::{DType, PluginError};

/// Candidate model files per precision, in order of preference.
fn candidates(dtype: DType) -> Result<&'static [&'static str], PluginError> {
    Ok(match dtype {
        DType::Auto | DType::Fp32 => &["onnx/model.onnx", "model.onnx"],
        DType::Fp16 => &["onnx/model_fp16.onnx", "model_fp16.onnx"],
        DType::Int8 => &[
            "onnx/model_quantized.onnx",
            "onnx/model_int8.onnx",
            "onnx/model_qint8_avx512_vnni.onnx",
            "onnx/model_quint8_avx2.onnx",
            "model_quantized.onnx",
            "model_int8.onnx",
        ],
        DType::Bf16 | DType::Fp8 => {
            return Err(PluginError::unsupported(format!(
                "the optimum backend has no {} ONNX variant; use DTYPES=auto, fp32, fp16 or int8",
                dtype.as_str()
            )))
        }
    })
}

/// Picks the ONNX file for `dtype` and its external-data side files from `listing`.
pub fn select(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError> {
    let wanted = candidates(dtype)?;
    let Some(model) = wanted.iter().find(|c| listing.iter().any(|f| f == *c)) else {
        return Err(PluginError::unsupported(format!(
            "no ONNX file for DTYPES={} in the model: looked for {}",
            dtype.as_str(),
            wanted.join(", ")
        )));
    };
    // Exports over 2 GiB keep their weights in external data files next to the graph.
    let mut out = vec![model.to_string()];
    for f in listing {
        if f.starts_with(&format!("{model}_data")) || f == &format!("{model}.data") {
            out.push(f.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefers_onnx_subdirectory_and_takes_external_data() {
        let listing = l(&[
            "model.onnx",
            "onnx/model.onnx",
            "onnx/model.onnx_data",
            "x.bin",
        ]);
        assert_eq!(
            select(&listing, DType::Auto).unwrap(),
            l(&["onnx/model.onnx", "onnx/model.onnx_data"])
        );
    }

    #[test]
    fn missing_file_error_names_what_was_looked_for() {
        let e = select(&l(&["model.safetensors"]), DType::Fp16).unwrap_err();
        assert!(
            e.message.contains("onnx/model_fp16.onnx, model_fp16.onnx"),
            "{}",
            e.message
        );
    }

    #[test]
    fn int8_picks_a_quantized_export() {
        let listing = l(&["onnx/model.onnx", "onnx/model_qint8_avx512_vnni.onnx"]);
        assert_eq!(
            select(&listing, DType::Int8).unwrap(),
            l(&["onnx/model_qint8_avx512_vnni.onnx"])
        );
    }

    #[test]
    fn bf16_is_a_clear_unsupported_error() {
        let e = select(&l(&["onnx/model.onnx"]), DType::Bf16).unwrap_err();
        assert!(e.message.contains("bf16"), "{}", e.message);
    }
}
