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

/// The side files holding the external data of `graph` (exports over 2 GiB).
fn with_data(listing: &[String], graph: &str) -> Vec<String> {
    let mut out = vec![graph.to_string()];
    for f in listing {
        if f.starts_with(&format!("{graph}_data")) || f == &format!("{graph}.data") {
            out.push(f.clone());
        }
    }
    out
}

/// Picks the ONNX graph(s) for `dtype` and their external-data side files from `listing`;
/// `auto` on a machine where the model will likely run on a GPU (`gpu`) takes the fp16
/// graphs as well when the repository has them, which [`precision`] then prefers on CUDA.
pub fn select(listing: &[String], dtype: DType, gpu: bool) -> Result<Vec<String>, PluginError> {
    let fp32 = select_one(listing, dtype)?;
    if dtype == DType::Auto && gpu {
        if let Ok(half) = select_one(listing, DType::Fp16) {
            return Ok(half.into_iter().chain(fp32).collect());
        }
    }
    Ok(fp32)
}

/// Whether `file` is an fp16 graph (or its data) by the names exports give them.
pub fn is_half(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.contains("_fp16.onnx")
}

/// The precision a model loads in: `auto` is fp16 on CUDA when its fp16 graphs were selected
/// (half the memory and bandwidth, tensor cores; cosine 0.999+), fp32 otherwise.
pub fn precision(requested: DType, on_gpu: bool, files: &[&str]) -> DType {
    match requested {
        DType::Auto if on_gpu && files.iter().any(|f| is_half(f)) => DType::Fp16,
        DType::Auto => DType::Fp32,
        other => other,
    }
}

/// The graphs of one precision.
///
/// Layouts read, in order of preference for each precision's file name `.../model*.onnx`:
/// separate CLIP towers `text_model*.onnx` + `vision_model*.onnx` next to it (transformers.js
/// repositories), then the single graph itself (optimum exports: embedders, cross-encoders,
/// combined CLIP).
fn select_one(listing: &[String], dtype: DType) -> Result<Vec<String>, PluginError> {
    let wanted = candidates(dtype)?;
    let has = |f: &str| listing.iter().any(|l| l == f);
    for model in wanted {
        let (dir, name) = model.rsplit_once('/').map_or(("", *model), |(d, n)| (d, n));
        let sibling = |prefix: &str| {
            let file = format!("{prefix}_{name}");
            if dir.is_empty() {
                file
            } else {
                format!("{dir}/{file}")
            }
        };
        let (text, vision) = (sibling("text"), sibling("vision"));
        if has(&text) && has(&vision) {
            let mut out = with_data(listing, &text);
            out.extend(with_data(listing, &vision));
            return Ok(out);
        }
        if has(model) {
            return Ok(with_data(listing, model));
        }
    }
    Err(PluginError::unsupported(format!(
        "no ONNX file for DTYPES={} in the model: looked for {} (or text_/vision_ pairs of them)",
        dtype.as_str(),
        wanted.join(", ")
    )))
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
            select(&listing, DType::Auto, false).unwrap(),
            l(&["onnx/model.onnx", "onnx/model.onnx_data"])
        );
    }

    #[test]
    fn missing_file_error_names_what_was_looked_for() {
        let e = select(&l(&["model.safetensors"]), DType::Fp16, false).unwrap_err();
        assert!(
            e.message.contains("onnx/model_fp16.onnx, model_fp16.onnx"),
            "{}",
            e.message
        );
    }

    #[test]
    fn clip_towers_are_preferred_to_the_combined_graph() {
        let listing = l(&[
            "onnx/model.onnx",
            "onnx/text_model.onnx",
            "onnx/vision_model.onnx",
            "onnx/text_model_fp16.onnx",
        ]);
        assert_eq!(
            select(&listing, DType::Fp32, false).unwrap(),
            l(&["onnx/text_model.onnx", "onnx/vision_model.onnx"])
        );
        // Without both fp16 towers, fp16 has nothing to read.
        assert!(select(&listing, DType::Fp16, false).is_err());
    }

    #[test]
    fn int8_picks_a_quantized_export() {
        let listing = l(&["onnx/model.onnx", "onnx/model_qint8_avx512_vnni.onnx"]);
        assert_eq!(
            select(&listing, DType::Int8, false).unwrap(),
            l(&["onnx/model_qint8_avx512_vnni.onnx"])
        );
    }

    #[test]
    fn bf16_is_a_clear_unsupported_error() {
        let e = select(&l(&["onnx/model.onnx"]), DType::Bf16, false).unwrap_err();
        assert!(e.message.contains("bf16"), "{}", e.message);
    }

    #[test]
    fn auto_takes_the_fp16_graph_too_where_a_gpu_will_run_it() {
        let listing = l(&[
            "onnx/model.onnx",
            "onnx/model_fp16.onnx",
            "onnx/model_quantized.onnx",
        ]);
        let gpu = select(&listing, DType::Auto, true).unwrap();
        assert_eq!(gpu, l(&["onnx/model_fp16.onnx", "onnx/model.onnx"]));
        assert_eq!(
            select(&listing, DType::Auto, false).unwrap(),
            l(&["onnx/model.onnx"])
        );
        // Asked precisions are left alone; a repository without fp16 gives fp32 alone.
        assert_eq!(
            select(&listing, DType::Fp32, true).unwrap(),
            l(&["onnx/model.onnx"])
        );
        let fp32_only = l(&["onnx/model.onnx"]);
        assert_eq!(select(&fp32_only, DType::Auto, true).unwrap(), fp32_only);
    }

    #[test]
    fn auto_is_fp16_on_cuda_only_when_the_fp16_graph_is_there() {
        let both = ["onnx/model_fp16.onnx", "onnx/model.onnx"];
        assert_eq!(precision(DType::Auto, true, &both), DType::Fp16);
        assert_eq!(precision(DType::Auto, false, &both), DType::Fp32);
        assert_eq!(
            precision(DType::Auto, true, &["onnx/model.onnx"]),
            DType::Fp32
        );
        assert_eq!(precision(DType::Int8, true, &both), DType::Int8);
        assert!(is_half("onnx/text_model_fp16.onnx") && !is_half("onnx/model.onnx"));
    }
}
