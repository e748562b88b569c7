//! Where the NVIDIA driver keeps the kernels it compiles from PTX (for GPUs newer than a
//! runtime's compiled kernels, such as CTranslate2's on Hopper and Blackwell): under `HF_HOME`,
//! which on RunPod is the network volume, so that a cold start compiles them once rather than
//! at every start; and large enough to hold them (the driver's default is 256 MiB).

/// The driver's cache size limit that ember asks for: its largest allowed value, 4 GiB.
const MAX_SIZE: &str = "4294967296";

/// The variables to set, given how the process's environment answers `var`: only those the
/// operator has not set.
pub fn defaults(var: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if var("CUDA_CACHE_PATH").is_none() {
        let hf_home = var("HF_HOME")
            .filter(|v| !v.is_empty())
            .or_else(|| var("HOME").map(|home| format!("{home}/.cache/huggingface")));
        if let Some(dir) = hf_home {
            out.push(("CUDA_CACHE_PATH", format!("{dir}/cuda-jit-cache")));
        }
    }
    if var("CUDA_CACHE_MAXSIZE").is_none() {
        out.push(("CUDA_CACHE_MAXSIZE", MAX_SIZE.to_string()));
    }
    out
}

/// Sets the defaults in this process's environment. Call before any thread starts and before
/// a plugin loads (the driver reads them when it starts).
pub fn configure() {
    for (key, value) in defaults(|k| std::env::var(k).ok()) {
        std::env::set_var(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_cache_lives_under_hf_home() {
        let set = defaults(env(&[("HF_HOME", "/runpod-volume"), ("HOME", "/root")]));
        assert_eq!(
            set,
            vec![
                (
                    "CUDA_CACHE_PATH",
                    "/runpod-volume/cuda-jit-cache".to_string()
                ),
                ("CUDA_CACHE_MAXSIZE", MAX_SIZE.to_string()),
            ]
        );
        let home = defaults(env(&[("HOME", "/root")]));
        assert_eq!(home[0].1, "/root/.cache/huggingface/cuda-jit-cache");
    }

    #[test]
    fn what_the_operator_set_is_kept() {
        let set = defaults(env(&[
            ("HF_HOME", "/data"),
            ("CUDA_CACHE_PATH", "/fast/cache"),
            ("CUDA_CACHE_MAXSIZE", "1073741824"),
        ]));
        assert!(set.is_empty(), "{set:?}");
    }
}
