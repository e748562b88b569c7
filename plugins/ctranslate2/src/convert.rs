//! Conversion of a Hugging Face BERT, RoBERTa-family or DistilBERT checkpoint into a
//! CTranslate2 model directory (`model.bin`, `config.json`, `vocabulary.json`), variable for
//! variable as CTranslate2's `TransformersConverter` writes a `TransformerEncoderSpec`:
//! post-norm layers, word (+ token-type) embeddings added, absolute positions, fused QKV
//! projections. Weights keep
//! their precision (f32, f16 or bf16); CTranslate2 converts them to the compute type on load.

use crate::checkpoint::{Checkpoint, Tensor};
use crate::modelbin::{self, DataType, Variable};
use ember_plugin_api::families::{self, Encoder};
use ember_plugin_api::PluginError;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::path::Path;

/// The architectures the conversion knows, by their weight layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT and its descendants (MiniLM, bge, e5, gte v1).
    Bert,
    /// RoBERTa, XLM-RoBERTa and CamemBERT (positions offset by the padding index).
    Roberta,
    /// DistilBERT: BERT's layout under other names, no segment embeddings.
    DistilBert,
}

impl Family {
    /// The family of a `config.json` `model_type`.
    pub fn of(model_type: &str) -> Result<Family, PluginError> {
        match Encoder::of(model_type) {
            Some(Encoder::Bert) => Ok(Family::Bert),
            Some(Encoder::Roberta) => Ok(Family::Roberta),
            Some(Encoder::DistilBert) => Ok(Family::DistilBert),
            _ if families::is_decoder(model_type) => Err(PluginError::unsupported(format!(
                "model_type \"{model_type}\" is a decoder; the ctranslate2 backend runs encoders \
                 (BERT, RoBERTa / XLM-RoBERTa, DistilBERT). Serve it with BACKEND=torch or \
                 BACKEND=optimum (an ONNX export)"
            ))),
            _ => Err(PluginError::unsupported(format!(
                "the ctranslate2 backend converts BERT, RoBERTa / XLM-RoBERTa and DistilBERT \
                 checkpoints; model_type \"{model_type}\" is not one of them (use the torch or \
                 optimum backend, or a repository already converted to CTranslate2)"
            ))),
        }
    }

    /// The SDK's description of the family's checkpoints.
    fn encoder(self) -> Encoder {
        match self {
            Family::Bert => Encoder::Bert,
            Family::Roberta => Encoder::Roberta,
            Family::DistilBert => Encoder::DistilBert,
        }
    }

    /// The prefix of the encoder's weights in `ckpt`: the task prefix when the checkpoint is a
    /// task model, none when it is the bare encoder.
    pub fn prefix_in(self, ckpt: &Checkpoint) -> &'static str {
        let prefix = self.encoder().task_prefix();
        if ckpt.has(&format!("{prefix}embeddings.word_embeddings.weight")) {
            prefix
        } else {
            ""
        }
    }
}

/// CTranslate2's activation numbering (`ops::ActivationType`).
fn activation(hidden_act: &str) -> Result<i8, PluginError> {
    Ok(match hidden_act {
        "relu" => 0,
        "gelu_fast" | "gelu_new" | "gelu_pytorch_tanh" => 1,
        "silu" | "swish" => 2,
        "gelu" | "gelu_python" => 3,
        "quick_gelu" => 4,
        other => {
            return Err(PluginError::unsupported(format!(
                "hidden_act \"{other}\" has no CTranslate2 equivalent"
            )))
        }
    })
}

fn data_type(dtype: Dtype, name: &str) -> Result<DataType, PluginError> {
    match dtype {
        Dtype::F32 => Ok(DataType::F32),
        Dtype::F16 => Ok(DataType::F16),
        Dtype::BF16 => Ok(DataType::BF16),
        other => Err(PluginError::unsupported(format!(
            "tensor {name} is {other:?}; the conversion reads f32, f16 and bf16 weights"
        ))),
    }
}

/// Reads weights under the encoder's prefix and names them as CTranslate2 does.
struct Builder<'a> {
    ckpt: &'a Checkpoint,
    prefix: &'static str,
    out: Vec<Variable<'a>>,
}

impl<'a> Builder<'a> {
    fn tensor(&self, name: &str) -> Result<Tensor<'a>, PluginError> {
        self.ckpt.get(&format!("{}{name}", self.prefix))
    }

    fn copy(&mut self, to: &str, from: &str) -> Result<(), PluginError> {
        let t = self.tensor(from)?;
        self.out.push(Variable {
            name: to.into(),
            shape: t.shape.to_vec(),
            dtype: data_type(t.dtype, from)?,
            bytes: Cow::Borrowed(t.bytes),
        });
        Ok(())
    }

    fn linear(&mut self, to: &str, from: &str) -> Result<(), PluginError> {
        self.copy(&format!("{to}/weight"), &format!("{from}.weight"))?;
        self.copy(&format!("{to}/bias"), &format!("{from}.bias"))
    }

    fn layer_norm(&mut self, to: &str, from: &str) -> Result<(), PluginError> {
        self.copy(&format!("{to}/gamma"), &format!("{from}.weight"))?;
        self.copy(&format!("{to}/beta"), &format!("{from}.bias"))
    }

    /// Concatenates the query, key and value projections (`{layer}.{q,k,v}`) along their
    /// output dimension.
    fn fused(&mut self, to: &str, layer: &str, [q, k, v]: [&str; 3]) -> Result<(), PluginError> {
        for part in ["weight", "bias"] {
            let parts: Vec<Tensor> = [q, k, v]
                .iter()
                .map(|p| self.tensor(&format!("{layer}.{p}.{part}")))
                .collect::<Result<_, _>>()?;
            let dtype = parts[0].dtype;
            if parts
                .iter()
                .any(|t| t.dtype != dtype || t.shape[1..] != parts[0].shape[1..])
            {
                return Err(PluginError::invalid_input(format!(
                    "{layer}: query, key and value {part}s differ in type or shape"
                )));
            }
            let mut shape = parts[0].shape.to_vec();
            shape[0] = parts.iter().map(|t| t.shape[0]).sum();
            let bytes: Vec<u8> = parts.iter().flat_map(|t| t.bytes.iter().copied()).collect();
            self.out.push(Variable {
                name: format!("{to}/{part}"),
                shape,
                dtype: data_type(dtype, layer)?,
                bytes: Cow::Owned(bytes),
            });
        }
        Ok(())
    }
}

/// Tokens in id order from `tokenizer.json` (model vocabulary and added tokens), padded with
/// unique placeholders up to `size` (CTranslate2 needs one entry per embedding row).
fn vocabulary(dir: &Path, size: usize) -> Result<Vec<String>, PluginError> {
    let mut tokens: Vec<Option<String>> = vec![None; size];
    let path = dir.join("tokenizer.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let mut put = |id: u64, token: &str| {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = Some(token.to_string());
            }
        };
        match &v["model"]["vocab"] {
            Value::Object(map) => map
                .iter()
                .for_each(|(t, id)| put(id.as_u64().unwrap_or(u64::MAX), t)),
            // Unigram: a list of [token, score], the index being the id.
            Value::Array(list) => list.iter().enumerate().for_each(|(id, e)| {
                put(id as u64, e[0].as_str().unwrap_or_default());
            }),
            _ => {}
        }
        for added in v["added_tokens"].as_array().into_iter().flatten() {
            if let (Some(id), Some(t)) = (added["id"].as_u64(), added["content"].as_str()) {
                put(id, t);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    Ok(tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            Some(t) if seen.insert(t.clone()) => t,
            _ => format!("<ember_unused_{i}>"),
        })
        .collect())
}

/// Converts the checkpoint in `dir` into a CTranslate2 model directory `out` (which exists).
pub fn convert(
    dir: &Path,
    ckpt: &Checkpoint,
    config: &Value,
    out: &Path,
) -> Result<(), PluginError> {
    let family = Family::of(config["model_type"].as_str().unwrap_or_default())?;
    if let Some(kind) = config["position_embedding_type"].as_str() {
        if kind != "absolute" {
            return Err(PluginError::unsupported(format!(
                "position_embedding_type \"{kind}\": CTranslate2 encoders have absolute positions"
            )));
        }
    }
    let uint = |key: &str| config[key].as_u64().map(|v| v as usize);
    let distil = family == Family::DistilBert;
    // DistilBERT's config names its sizes and activation differently.
    let (layers_key, heads_key, act_key) = match distil {
        true => ("n_layers", "n_heads", "activation"),
        false => ("num_hidden_layers", "num_attention_heads", "hidden_act"),
    };
    let layers = uint(layers_key)
        .ok_or_else(|| PluginError::invalid_input(format!("config.json: no {layers_key}")))?;
    let heads = uint(heads_key)
        .ok_or_else(|| PluginError::invalid_input(format!("config.json: no {heads_key}")))?;
    let act = activation(config[act_key].as_str().unwrap_or("gelu"))?;
    let mut b = Builder {
        ckpt,
        prefix: family.prefix_in(ckpt),
        out: Vec::new(),
    };
    b.copy(
        "encoder/embeddings_0/weight",
        "embeddings.word_embeddings.weight",
    )?;
    if !distil {
        b.copy(
            "encoder/embeddings_1/weight",
            "embeddings.token_type_embeddings.weight",
        )?;
    }
    b.layer_norm("encoder/layernorm_embedding", "embeddings.LayerNorm")?;
    let positions = b.tensor("embeddings.position_embeddings.weight")?;
    // RoBERTa numbers positions from padding_idx + 1; CTranslate2 from 0.
    let offset = match family {
        Family::Bert | Family::DistilBert => 0,
        Family::Roberta => uint("pad_token_id").unwrap_or(1) + 1,
    };
    let row = positions.bytes.len() / positions.shape[0].max(1);
    if offset >= positions.shape[0] {
        return Err(PluginError::invalid_input(
            "position embeddings shorter than the padding offset",
        ));
    }
    b.out.push(Variable {
        name: "encoder/position_encodings/encodings".into(),
        shape: vec![positions.shape[0] - offset, positions.shape[1]],
        dtype: data_type(positions.dtype, "position embeddings")?,
        bytes: Cow::Borrowed(&positions.bytes[offset * row..]),
    });
    // Each layer's weights: query, key, value, attention output, attention norm, feed-forward
    // in and out, output norm.
    let [q, k, v, attn_out, attn_norm, ffn_in, ffn_out, out_norm] = family.encoder().layer_parts();
    let stack = family.encoder().layer_stack();
    for i in 0..layers {
        let (to, from) = (format!("encoder/layer_{i}"), format!("{stack}.{i}"));
        b.fused(&format!("{to}/self_attention/linear_0"), &from, [q, k, v])?;
        b.linear(
            &format!("{to}/self_attention/linear_1"),
            &format!("{from}.{attn_out}"),
        )?;
        b.layer_norm(
            &format!("{to}/self_attention/layer_norm"),
            &format!("{from}.{attn_norm}"),
        )?;
        b.linear(&format!("{to}/ffn/linear_0"), &format!("{from}.{ffn_in}"))?;
        b.linear(&format!("{to}/ffn/linear_1"), &format!("{from}.{ffn_out}"))?;
        b.layer_norm(
            &format!("{to}/ffn/layer_norm"),
            &format!("{from}.{out_norm}"),
        )?;
    }
    let vocab_rows = b.tensor("embeddings.word_embeddings.weight")?.shape[0];
    let mut variables = b.out;
    variables.extend([
        Variable::int8("encoder/activation", act),
        Variable::int8("encoder/embeddings_merge", 1), // add
        Variable::int8("encoder/multi_query_attention", 0),
        Variable::int8("encoder/pre_norm", 0),
        Variable::int8("encoder/scale_embeddings", 0),
        Variable::int16(
            "encoder/num_heads",
            i16::try_from(heads)
                .map_err(|_| PluginError::invalid_input("num_attention_heads too large"))?,
        ),
    ]);
    let write_err = |what: &str, e: std::io::Error| {
        PluginError::internal(format!("writing {}: {e}", out.join(what).display()))
    };
    modelbin::write(&out.join("model.bin"), "TransformerEncoderSpec", variables)
        .map_err(|e| write_err("model.bin", e))?;

    let tokens = vocabulary(dir, vocab_rows)?;
    let unk = ["[UNK]", "<unk>"]
        .into_iter()
        .find(|u| tokens.iter().any(|t| t == u))
        .unwrap_or("<unk>");
    let ct2_config = json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        // DistilBERT's norms are fixed at 1e-12.
        "layer_norm_epsilon": config["layer_norm_eps"].as_f64().unwrap_or(1e-12),
        "multi_query_attention": false,
        "unk_token": unk,
    });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    std::fs::write(out.join("config.json"), pretty(&ct2_config))
        .map_err(|e| write_err("config.json", e))?;
    std::fs::write(out.join("vocabulary.json"), pretty(&json!(tokens)))
        .map_err(|e| write_err("vocabulary.json", e))?;
    Ok(())
}
