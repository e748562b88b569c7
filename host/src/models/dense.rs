//! The `Dense` modules of a sentence-transformers pipeline: a linear layer, an activation and
//! an optional residual, applied to the pooled embedding in pipeline order. The host applies
//! them to whatever the plugin returns, so every backend gets them, once.

use super::ModelError;
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// An activation sentence-transformers names in a Dense config (`torch.nn.modules...`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `Identity`.
    Identity,
    /// `Tanh` (sentence-transformers' default).
    Tanh,
    /// `Sigmoid`.
    Sigmoid,
    /// `ReLU`.
    Relu,
    /// `GELU` (exact, erf form).
    Gelu,
    /// `SiLU`.
    Silu,
}

impl Activation {
    /// Reads a class path such as `torch.nn.modules.activation.Tanh`.
    fn parse(path: &str) -> Result<Activation, String> {
        Ok(match path.rsplit('.').next().unwrap_or_default() {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "Sigmoid" => Activation::Sigmoid,
            "ReLU" => Activation::Relu,
            "GELU" => Activation::Gelu,
            "SiLU" => Activation::Silu,
            _ => {
                return Err(format!(
                    "activation_function {path:?} is not one ember implements (Identity, Tanh, \
                     Sigmoid, ReLU, GELU, SiLU)"
                ))
            }
        })
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Relu => x.max(0.0),
            Activation::Gelu => {
                0.5 * x * (1.0 + erf(f64::from(x) / std::f64::consts::SQRT_2) as f32)
            }
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// The error function, to within 1.2e-7 (Numerical Recipes' `erfc` by Chebyshev fit), enough
/// for float32 outputs.
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

/// A float tensor of `shape` read from a Dense module's safetensors as float32, or why not.
fn tensor(tensors: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
    let t = tensors
        .tensor(name)
        .map_err(|_| format!("has no tensor {name:?}"))?;
    if t.shape() != shape {
        return Err(format!("{name} is {:?}; expected {shape:?}", t.shape()));
    }
    ember_plugin_api::safetensors::floats(t.dtype(), t.data())
        .map_err(|e| format!("tensor {name:?}: {e}"))
}

/// One tensor of a safetensors file, read without reading the rest: its shape and values.
fn read_one(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| format!("is not a safetensors file: {e}"))?;
    let header_len = u64::from_le_bytes(len);
    // Offsets are checked against the file before anything is allocated for them.
    let size = f
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    // safetensors' own limit on a header.
    if header_len > 100_000_000 || 8 + header_len > size {
        return Err(format!(
            "is not a safetensors file: a header of {header_len} bytes in a file of {size}"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| format!("is not a safetensors file: {e}"))?;
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| format!("is not a safetensors file: {e}"))?;
    let info = metadata.info(name).ok_or("is not in the file")?;
    let (start, end) = info.data_offsets;
    let past_end = (8 + header_len)
        .checked_add(end as u64)
        .is_none_or(|stop| stop > size);
    if start > end || past_end {
        return Err(format!(
            "lies at bytes {start}..{end} of the data, past the end of the file"
        ));
    }
    let mut bytes = vec![0u8; end - start];
    f.seek(SeekFrom::Start(8 + header_len + start as u64))
        .and_then(|_| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot be read: {e}"))?;
    let values = ember_plugin_api::safetensors::floats(info.dtype, &bytes)?;
    if values.len() != info.shape.iter().product::<usize>() {
        return Err(format!(
            "holds {} values for a shape of {:?}",
            values.len(),
            info.shape
        ));
    }
    Ok((info.shape.clone(), values))
}

/// One Dense module.
#[derive(Debug, Clone)]
pub struct Dense {
    /// The module's directory in the pipeline (for messages).
    pub path: String,
    /// Width it reads.
    pub in_features: usize,
    /// Width it writes.
    pub out_features: usize,
    // Shared: the manifest, the runner and each request's pipeline hold the same weights.
    weight: Arc<[f32]>,
    bias: Option<Arc<[f32]>>,
    activation: Activation,
    residual: Residual,
}

#[derive(Debug, Clone)]
enum Residual {
    None,
    /// The input added to the output (same widths).
    Input,
    /// The input projected to the output width (`out x in`, no bias), added.
    Projected(Arc<[f32]>),
}

fn matvec(weight: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
    weight
        .chunks_exact(cols)
        .map(|row| row.iter().zip(x).map(|(w, v)| w * v).sum())
        .collect()
}

impl Dense {
    /// Reads the Dense module at `path` (its `config.json` and `model.safetensors`), which
    /// must map the pipeline's `stream` (`sentence_embedding`, or each token's
    /// `token_embeddings` in a multi-vector model) to itself.
    pub fn read(name: &str, dir: &Path, path: &str, stream: &str) -> Result<Dense, ModelError> {
        let err = |file: &str, reason: String| ModelError::Config {
            name: name.into(),
            file: format!("{path}/{file}"),
            reason,
        };
        let module = dir.join(path);
        let text = std::fs::read_to_string(module.join("config.json"))
            .map_err(|e| err("config.json", format!("cannot be read: {e}")))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| err("config.json", format!("is not valid JSON: {e}")))?;
        let width = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| err("config.json", format!("has no {key}")))
        };
        let (in_features, out_features) = (width("in_features")?, width("out_features")?);
        let input = config
            .get("module_input_name")
            .and_then(Value::as_str)
            .unwrap_or(stream);
        let output = config
            .get("module_output_name")
            .and_then(Value::as_str)
            .unwrap_or(input);
        if input != stream || output != stream {
            return Err(err(
                "config.json",
                format!(
                    "reads {input:?} and writes {output:?}; in this pipeline ember applies \
                     Dense modules to {stream:?} only"
                ),
            ));
        }
        // sentence-transformers' default when the key is absent is Tanh.
        let activation = match config.get("activation_function").and_then(Value::as_str) {
            Some(a) => Activation::parse(a).map_err(|r| err("config.json", r))?,
            None => Activation::Tanh,
        };
        let has_bias = config.get("bias").and_then(Value::as_bool).unwrap_or(true);
        let residual = config
            .get("use_residual")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let file = "model.safetensors";
        let bytes = std::fs::read(module.join(file)).map_err(|e| {
            let pickle = ["pytorch_model.bin", "model.bin"]
                .into_iter()
                .find(|f| module.join(f).is_file());
            let reason = match pickle {
                Some(f) => format!(
                    "is missing: this Dense module has only {f} (a PyTorch pickle); ember \
                     reads Dense weights from model.safetensors (save the model again with \
                     safe_serialization=True)"
                ),
                None => format!("cannot be read: {e}"),
            };
            err(file, reason)
        })?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| err(file, format!("is not a safetensors file: {e}")))?;
        let read =
            |name: &str, shape: &[usize]| tensor(&tensors, name, shape).map_err(|r| err(file, r));
        let weight = read("linear.weight", &[out_features, in_features])?;
        let bias = match has_bias {
            true => Some(read("linear.bias", &[out_features])?),
            false => None,
        };
        let residual = match (residual, in_features == out_features) {
            (false, _) => Residual::None,
            (true, true) => Residual::Input,
            (true, false) => {
                Residual::Projected(read("residual.weight", &[out_features, in_features])?.into())
            }
        };
        Ok(Dense {
            path: path.to_string(),
            in_features,
            out_features,
            weight: weight.into(),
            bias: bias.map(Into::into),
            activation,
            residual,
        })
    }

    /// A plain linear layer (`out x in` weight, optional bias, no activation) named `path`.
    pub fn linear(
        path: &str,
        in_features: usize,
        out_features: usize,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Dense {
        Dense {
            path: path.to_string(),
            in_features,
            out_features,
            weight: weight.into(),
            bias: bias.map(Into::into),
            activation: Activation::Identity,
            residual: Residual::None,
        }
    }

    /// The bias-free linear layer stored as `tensor` among a checkpoint's own weights in
    /// `dir` (`model.safetensors`, or the shard its index names), as Stanford ColBERT stores
    /// its projection; only that tensor's bytes are read. An error names the file.
    pub fn from_checkpoint(dir: &Path, tensor: &str) -> Result<Dense, (String, String)> {
        const SINGLE: &str = "model.safetensors";
        const INDEX: &str = "model.safetensors.index.json";
        let file = if dir.join(SINGLE).is_file() {
            SINGLE.to_string()
        } else if dir.join(INDEX).is_file() {
            let bad = |reason: String| (INDEX.to_string(), reason);
            let text = std::fs::read_to_string(dir.join(INDEX))
                .map_err(|e| bad(format!("cannot be read: {e}")))?;
            let index: Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
            index
                .get("weight_map")
                .and_then(|m| m.get(tensor))
                .and_then(Value::as_str)
                .filter(|f| !f.contains(['/', '\\']) && *f != ".." && *f != ".")
                .ok_or_else(|| bad(format!("names no shard file holding {tensor:?}")))?
                .to_string()
        } else {
            let reason = match dir.join("pytorch_model.bin").is_file() {
                true => format!(
                    "is missing: the checkpoint has only pytorch_model.bin (a PyTorch pickle); \
                     ember reads its {tensor} from model.safetensors (save the model again \
                     with safe_serialization=True)"
                ),
                false => format!("is missing: it holds the checkpoint's {tensor}"),
            };
            return Err((SINGLE.to_string(), reason));
        };
        let bad = |reason: String| (file.clone(), reason);
        let (shape, weight) =
            read_one(&dir.join(&file), tensor).map_err(|e| bad(format!("{tensor}: {e}")))?;
        match shape[..] {
            [out_features, in_features] if out_features > 0 && in_features > 0 => Ok(
                Dense::linear(tensor, in_features, out_features, weight, None),
            ),
            _ => Err(bad(format!(
                "{tensor} is {shape:?}; expected [out, in], neither of them 0"
            ))),
        }
    }

    /// `activation(W x + b)`, plus the residual when the module has one.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = matvec(&self.weight, self.in_features, x);
        if let Some(b) = &self.bias {
            out.iter_mut().zip(b.iter()).for_each(|(o, b)| *o += b);
        }
        out.iter_mut().for_each(|o| *o = self.activation.apply(*o));
        match &self.residual {
            Residual::None => {}
            Residual::Input => out.iter_mut().zip(x).for_each(|(o, v)| *o += v),
            Residual::Projected(w) => {
                let r = matvec(w, self.in_features, x);
                out.iter_mut().zip(r).for_each(|(o, v)| *o += v);
            }
        }
        out
    }
}

/// The Dense modules of one model, in pipeline order (none for most models).
#[derive(Debug, Clone, Default)]
pub struct Head(pub Vec<Dense>);

impl Head {
    /// The width of the vectors after the head, given the width the plugin returns.
    pub fn output_dim(&self, pooled: usize) -> usize {
        self.0.last().map_or(pooled, |d| d.out_features)
    }

    /// Checks that the plugin's width is what the first module reads, and each module reads
    /// what the one before writes.
    pub fn check(&self, pooled: usize) -> Result<(), String> {
        let mut width = pooled;
        for d in &self.0 {
            if d.in_features != width {
                return Err(format!(
                    "Dense module {} reads vectors of {} values, but gets {width}",
                    d.path, d.in_features
                ));
            }
            width = d.out_features;
        }
        Ok(())
    }

    /// Applies every module in turn.
    pub fn apply(&self, v: &[f32]) -> Vec<f32> {
        let mut modules = self.0.iter();
        match modules.next() {
            Some(first) => modules.fold(first.apply(v), |x, d| d.apply(&x)),
            None => v.to_vec(),
        }
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_torch_at_a_few_points() {
        // torch.nn.GELU()(torch.tensor([-1.5, -0.3, 0.0, 0.7, 2.0]))
        let want = [-0.100_210_86, -0.114_626_58, 0.0, 0.530_625_46, 1.954_499_7];
        for (x, w) in [-1.5f32, -0.3, 0.0, 0.7, 2.0].iter().zip(want) {
            let g = Activation::Gelu.apply(*x);
            assert!((g - w).abs() < 1e-6, "gelu({x}) = {g}, torch {w}");
        }
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert!((Activation::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
        assert!((Activation::Silu.apply(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(
            Activation::parse("torch.nn.modules.linear.Identity").unwrap(),
            Activation::Identity
        );
        let e = Activation::parse("my_package.Swish").unwrap_err();
        assert!(e.contains("my_package.Swish") && e.contains("Tanh"), "{e}");
    }

    fn write_module(dir: &Path, config: Value, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, shape, values) in tensors {
            let start = data.len();
            data.extend(values.iter().flat_map(|x| x.to_le_bytes()));
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": shape,
                                   "data_offsets": [start, data.len()]}),
            );
        }
        let header = Value::Object(header).to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    }

    #[test]
    fn a_checkpoints_own_linear_is_read_alone_from_its_file_or_shard() {
        let root = std::env::temp_dir().join(format!("ember-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let single = root.join("single");
        write_module(
            &single,
            serde_json::json!({}),
            &[
                ("bert.pooler.dense.bias", vec![3], vec![9.0; 3]),
                (
                    "linear.weight",
                    vec![2, 3],
                    vec![1.0, 2.0, 3.0, 0.0, 0.0, -1.0],
                ),
            ],
        );
        let d = Dense::from_checkpoint(&single, "linear.weight").unwrap();
        assert_eq!((d.in_features, d.out_features), (3, 2));
        assert_eq!(
            d.apply(&[1.0, 1.0, 1.0]),
            vec![6.0, -1.0],
            "no bias, no activation"
        );

        // Sharded: the index names the shard.
        let sharded = root.join("sharded");
        write_module(
            &sharded,
            serde_json::json!({}),
            &[("linear.weight", vec![1, 2], vec![0.5, 0.5])],
        );
        std::fs::rename(
            sharded.join("model.safetensors"),
            sharded.join("model-00002-of-00002.safetensors"),
        )
        .unwrap();
        std::fs::write(
            sharded.join("model.safetensors.index.json"),
            r#"{"weight_map": {"linear.weight": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let d = Dense::from_checkpoint(&sharded, "linear.weight").unwrap();
        assert_eq!(d.apply(&[2.0, 4.0]), vec![3.0]);

        // Missing, or only a pickle: the error names the file and says what to do.
        let (file, e) = Dense::from_checkpoint(&sharded, "linear.bias").unwrap_err();
        assert_eq!(file, "model.safetensors.index.json");
        assert!(e.contains("linear.bias"), "{e}");
        // A shard is a file of the model's directory, nothing outside it.
        std::fs::write(
            sharded.join("model.safetensors.index.json"),
            r#"{"weight_map": {"linear.weight": "../single/model.safetensors"}}"#,
        )
        .unwrap();
        let (_, e) = Dense::from_checkpoint(&sharded, "linear.weight").unwrap_err();
        assert!(e.contains("no shard file"), "{e}");
        // An empty projection is refused.
        let empty = root.join("empty");
        write_module(
            &empty,
            serde_json::json!({}),
            &[("linear.weight", vec![0, 3], vec![])],
        );
        let (_, e) = Dense::from_checkpoint(&empty, "linear.weight").unwrap_err();
        assert!(e.contains("[0, 3]"), "{e}");
        let pickle = root.join("pickle");
        std::fs::create_dir_all(&pickle).unwrap();
        std::fs::write(pickle.join("pytorch_model.bin"), b"x").unwrap();
        let (file, e) = Dense::from_checkpoint(&pickle, "linear.weight").unwrap_err();
        assert_eq!(file, "model.safetensors");
        assert!(
            e.contains("pytorch_model.bin") && e.contains("safe_serialization"),
            "{e}"
        );
        // A file cut short is an error, not a short weight.
        let bytes = std::fs::read(single.join("model.safetensors")).unwrap();
        std::fs::write(single.join("model.safetensors"), &bytes[..bytes.len() - 4]).unwrap();
        let (_, e) = Dense::from_checkpoint(&single, "linear.weight").unwrap_err();
        assert!(e.contains("past the end of the file"), "{e}");
        std::fs::write(single.join("model.safetensors"), u64::MAX.to_le_bytes()).unwrap();
        let (_, e) = Dense::from_checkpoint(&single, "linear.weight").unwrap_err();
        assert!(e.contains("is not a safetensors file"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_module_is_read_checked_and_applied() {
        let root = std::env::temp_dir().join(format!("ember-dense-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write_module(
            &root.join("2_Dense"),
            serde_json::json!({"in_features": 3, "out_features": 2, "bias": true,
                 "activation_function": "torch.nn.modules.activation.ReLU"}),
            &[
                (
                    "linear.weight",
                    vec![2, 3],
                    vec![1.0, 0.0, -1.0, 0.5, 0.5, 0.5],
                ),
                ("linear.bias", vec![2], vec![0.0, -1.0]),
            ],
        );
        let d = Dense::read("m", &root, "2_Dense", "sentence_embedding").unwrap();
        // [1 - 3, 0.5 * 6 - 1] = [-2, 2] -> ReLU -> [0, 2]
        assert_eq!(d.apply(&[1.0, 2.0, 3.0]), vec![0.0, 2.0]);
        let head = Head(vec![d]);
        assert_eq!(head.output_dim(3), 2);
        assert!(head.check(3).is_ok());
        let e = head.check(4).unwrap_err();
        assert!(
            e.contains("2_Dense") && e.contains("3") && e.contains("4"),
            "{e}"
        );

        // A residual of equal widths adds the input; the default activation is Tanh.
        write_module(
            &root.join("3_Dense"),
            serde_json::json!({"in_features": 2, "out_features": 2, "bias": false,
                               "use_residual": true}),
            &[("linear.weight", vec![2, 2], vec![1.0, 0.0, 0.0, 1.0])],
        );
        let r = Dense::read("m", &root, "3_Dense", "sentence_embedding").unwrap();
        let got = r.apply(&[0.5, -1.0]);
        assert!((got[0] - (0.5f32.tanh() + 0.5)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - ((-1.0f32).tanh() - 1.0)).abs() < 1e-6, "{got:?}");

        // A shape that disagrees with the config is refused, naming the module's file.
        write_module(
            &root.join("4_Dense"),
            serde_json::json!({"in_features": 3, "out_features": 2, "bias": false}),
            &[("linear.weight", vec![3, 2], vec![0.0; 6])],
        );
        let e = Dense::read("m", &root, "4_Dense", "sentence_embedding")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4_Dense/model.safetensors") && e.contains("[2, 3]"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
