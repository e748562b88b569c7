//! BERT (bert, MiniLM, bge, e5, gte v1 checkpoints) on candle tensors: embeddings, encoder
//! layers with masked attention, then the manifest's pooling.

use candle_core::{DType as CDType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use ember_plugin_api::pooling::pool;
use ember_plugin_api::{
    plugin_info, DType, DeviceKind, EmbeddingBatch, LoadRequest, LoadedModel, Model, ModelKind,
    PluginError, Pooling, TokenBatch,
};
use serde_json::Value;
use std::path::Path;

fn err(what: &str) -> impl Fn(candle_core::Error) -> PluginError + '_ {
    move |e| PluginError::internal(format!("{what}: {e}"))
}

/// The sizes read from `config.json`.
struct Config {
    hidden: usize,
    heads: usize,
    layers: usize,
    eps: f64,
}

impl Config {
    fn read(dir: &Path) -> Result<Config, PluginError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let model_type = v["model_type"].as_str().unwrap_or_default();
        if model_type != "bert" {
            return Err(PluginError::unsupported(format!(
                "the candle backend runs BERT models (model_type \"bert\"), not {model_type:?}"
            )));
        }
        if v["hidden_act"].as_str().is_some_and(|a| a != "gelu") {
            return Err(PluginError::unsupported(format!(
                "hidden_act {} is not supported (gelu is)",
                v["hidden_act"]
            )));
        }
        let num = |k: &str| {
            v[k].as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| PluginError::invalid_input(format!("config.json lacks {k}")))
        };
        Ok(Config {
            hidden: num("hidden_size")?,
            heads: num("num_attention_heads")?,
            layers: num("num_hidden_layers")?,
            eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12),
        })
    }
}

fn linear(vb: &VarBuilder, name: &str) -> candle_core::Result<Linear> {
    let vb = vb.pp(name);
    let weight = vb.get_unchecked("weight")?;
    let bias = vb.get_unchecked("bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

fn layer_norm(vb: &VarBuilder, name: &str, eps: f64) -> candle_core::Result<LayerNorm> {
    let vb = vb.pp(name);
    // Old checkpoints name the LayerNorm parameters gamma and beta.
    let (w, b) = if vb.contains_tensor("weight") {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    };
    Ok(LayerNorm::new(
        vb.get_unchecked(w)?,
        vb.get_unchecked(b)?,
        eps,
    ))
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// A loaded BERT encoder.
pub struct Bert {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    max_positions: usize,
    pooling: Pooling,
}

impl Bert {
    /// Reads `config.json` and `model.safetensors` of the request's model.
    pub fn load(request: &LoadRequest) -> Result<Bert, PluginError> {
        if request.manifest.kind != ModelKind::Embed {
            return Err(PluginError::unsupported(format!(
                "the candle backend runs embedding models, not {} models",
                request.manifest.kind.as_str()
            )));
        }
        if request.device.kind == DeviceKind::Cuda {
            return Err(PluginError::unsupported(
                "the candle backend runs on the CPU only; use DEVICE=cpu or auto",
            ));
        }
        let dir = Path::new(request.model_dir.as_str());
        let cfg = Config::read(dir)?;
        let weights = dir.join("model.safetensors");
        // SAFETY: the weights file is not modified while the model is loaded.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], CDType::F32, &Device::Cpu) }
                .map_err(err("reading model.safetensors"))?;
        // Checkpoints of BertModel have no prefix; those of *ForXxx heads prefix "bert.".
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let build = || -> candle_core::Result<Bert> {
            let e = vb.pp("embeddings");
            let table = |name: &str| -> candle_core::Result<Embedding> {
                let w = e.pp(name).get_unchecked("weight")?;
                let dim = w.dim(1)?;
                Ok(Embedding::new(w, dim))
            };
            let positions = table("position_embeddings")?;
            let max_positions = positions.embeddings().dim(0)?;
            let mut layers = Vec::with_capacity(cfg.layers);
            for i in 0..cfg.layers {
                let l = vb.pp(format!("encoder.layer.{i}"));
                layers.push(Layer {
                    query: linear(&l, "attention.self.query")?,
                    key: linear(&l, "attention.self.key")?,
                    value: linear(&l, "attention.self.value")?,
                    attn_out: linear(&l, "attention.output.dense")?,
                    attn_norm: layer_norm(&l, "attention.output.LayerNorm", cfg.eps)?,
                    up: linear(&l, "intermediate.dense")?,
                    down: linear(&l, "output.dense")?,
                    out_norm: layer_norm(&l, "output.LayerNorm", cfg.eps)?,
                });
            }
            Ok(Bert {
                words: table("word_embeddings")?,
                positions,
                types: table("token_type_embeddings")?,
                embed_norm: layer_norm(&e, "LayerNorm", cfg.eps)?,
                layers,
                heads: cfg.heads,
                hidden: cfg.hidden,
                max_positions,
                pooling: request.manifest.pooling,
            })
        };
        let bert = build().map_err(err("building the model from model.safetensors"))?;
        plugin_info!(
            "candle",
            "loaded {} ({} layers, hidden {}, pooling {})",
            weights.display(),
            cfg.layers,
            cfg.hidden,
            bert.pooling.as_str()
        );
        Ok(bert)
    }

    /// Token states `[rows, seq, hidden]` of a batch.
    fn encode(&self, batch: &TokenBatch) -> candle_core::Result<Tensor> {
        let (rows, seq) = (batch.rows as usize, batch.seq_len as usize);
        let ids = |v: &[i64]| -> candle_core::Result<Tensor> {
            let v: Vec<u32> = v.iter().map(|&x| x as u32).collect();
            Tensor::from_vec(v, (rows, seq), &Device::Cpu)
        };
        let positions: Vec<u32> = (0..seq as u32).collect();
        let positions = Tensor::from_vec(positions, (1, seq), &Device::Cpu)?;
        let mut x = self
            .words
            .forward(&ids(&batch.input_ids)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?
            .add(&self.types.forward(&ids(&batch.token_type_ids)?)?)?;
        x = self.embed_norm.forward(&x)?;
        // Additive mask: 0 where attended, a large negative number on padding.
        let mask: Vec<f32> = batch
            .attention_mask
            .iter()
            .map(|&m| if m != 0 { 0.0 } else { -1e4 })
            .collect();
        let mask = Tensor::from_vec(mask, (rows, 1, 1, seq), &Device::Cpu)?;
        let head = self.hidden / self.heads;
        let scale = 1.0 / (head as f64).sqrt();
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((rows, seq, self.heads, head))?
                .transpose(1, 2)?
                .contiguous()
        };
        for l in &self.layers {
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((rows, seq, self.hidden))?;
            let attended = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + &x)?)?;
            let inner = l.up.forward(&attended)?.gelu_erf()?;
            x = l
                .out_norm
                .forward(&(l.down.forward(&inner)? + &attended)?)?;
        }
        Ok(x)
    }
}

impl Model for Bert {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: self.hidden as u32,
            device: "cpu".into(),
            dtype: DType::Fp32,
            // candle tensors are immutable values: calls share nothing mutable.
            concurrent_calls: true,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let (rows, seq) = (batch.rows as usize, batch.seq_len as usize);
        if rows == 0 {
            return Ok(EmbeddingBatch::empty(self.hidden as u32));
        }
        if seq > self.max_positions {
            return Err(PluginError::invalid_input(format!(
                "sequences of {seq} tokens are longer than the model's {} positions",
                self.max_positions
            )));
        }
        let states = self
            .encode(batch)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(err("forward"))?;
        let values = pool(
            self.pooling,
            &states,
            batch.pooling_mask(),
            rows,
            seq,
            self.hidden,
        );
        Ok(EmbeddingBatch {
            rows: rows as u32,
            dim: self.hidden as u32,
            values: values.into(),
        })
    }
}
