//! The liar backend and its model (exported by this crate and by the liar30 test plugin).

use ember_plugin_api::{
    Backend, DType, DeviceKind, EmbeddingBatch, LoadRequest, LoadedModel, Model, ModelKind,
    PluginError, PluginInfo, TokenBatch,
};
use safetensors::{Dtype, SafeTensors};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The liar backend.
pub struct Liar;

/// The way a model breaks the contract.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lie {
    Honest,
    Constant,
    Unmasked,
    Promptful,
    Nan,
    Int8,
    Noisy,
    Racy,
    Overrun,
    States,
    /// Sparse weights that ignore the reduction asked for.
    Sparse,
}

impl Lie {
    fn parse(s: &str) -> Result<Lie, PluginError> {
        Ok(match s {
            "honest" => Lie::Honest,
            "constant" => Lie::Constant,
            "unmasked" => Lie::Unmasked,
            "promptful" => Lie::Promptful,
            "nan" => Lie::Nan,
            "int8" => Lie::Int8,
            "noisy" => Lie::Noisy,
            "racy" => Lie::Racy,
            "overrun" => Lie::Overrun,
            "states" => Lie::States,
            "sparse" => Lie::Sparse,
            other => {
                return Err(PluginError::invalid_input(format!(
                    "EMBER_LIAR={other:?}: expected honest, constant, unmasked, promptful, nan, \
                     int8, noisy, racy, overrun, states or sparse"
                )))
            }
        })
    }
}

/// A table of `dim` floats per vocabulary entry, and the lie to tell.
pub struct LiarModel {
    table: Vec<f32>,
    vocab: usize,
    dim: usize,
    lie: Lie,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    record: Option<Mutex<std::fs::File>>,
}

impl LiarModel {
    /// The table's row of token `id`.
    fn row(&self, id: i64) -> Result<&[f32], PluginError> {
        let i = usize::try_from(id)
            .ok()
            .filter(|i| *i < self.vocab)
            .ok_or_else(|| {
                PluginError::invalid_input(format!(
                    "token id {id} is outside the vocabulary ({} entries)",
                    self.vocab
                ))
            })?;
        Ok(&self.table[i * self.dim..(i + 1) * self.dim])
    }

    /// The static embedding of row `r` over the positions `mask` keeps (all when `None`).
    fn mean(
        &self,
        batch: &TokenBatch,
        r: usize,
        mask: Option<&[i64]>,
    ) -> Result<Vec<f32>, PluginError> {
        let seq = batch.seq_len as usize;
        let mut out = vec![0f32; self.dim];
        let mut count = 0f32;
        for t in 0..seq {
            if mask.is_some_and(|m| m[r * seq + t] == 0) {
                continue;
            }
            let row = self.row(batch.input_ids[r * seq + t])?;
            out.iter_mut().zip(row).for_each(|(o, x)| *o += x);
            count += 1.0;
        }
        out.iter_mut().for_each(|o| *o /= count.max(1.0));
        Ok(out)
    }
}

impl Model for LiarModel {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: self.dim as u32,
            device: "cpu".into(),
            dtype: if self.lie == Lie::Int8 {
                DType::Int8
            } else {
                DType::Fp32
            },
            concurrent_calls: true,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let (rows, seq) = (batch.rows as usize, batch.seq_len as usize);
        if batch.input_ids.len() != rows * seq || batch.attention_mask.len() != rows * seq {
            return Err(PluginError::invalid_input(format!(
                "a {rows}x{seq} batch needs {} ids and mask values, got {} and {}",
                rows * seq,
                batch.input_ids.len(),
                batch.attention_mask.len()
            )));
        }
        if self.lie == Lie::Overrun && seq > 1024 {
            return Err(PluginError::internal(format!(
                "forward: indices element out of data bounds, idx={seq}"
            )));
        }
        if let Some(file) = &self.record {
            let kept = batch.attention_mask.iter().filter(|m| **m != 0).count();
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            writeln!(file, "{rows} {seq} {kept}")
                .and_then(|_| file.flush())
                .map_err(|e| PluginError::internal(format!("EMBER_LIAR_RECORD: {e}")))?;
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let overlapped = if self.lie == Lie::Racy {
            let others = self.in_flight.fetch_add(1, Ordering::SeqCst);
            // Long enough for calls from several threads to overlap.
            std::thread::sleep(std::time::Duration::from_millis(20));
            others > 0 || self.in_flight.load(Ordering::SeqCst) > 1
        } else {
            false
        };
        let mut values = Vec::with_capacity(rows * self.dim);
        for r in 0..rows {
            let mut v = match self.lie {
                Lie::Constant => (0..self.dim).map(|i| 1.0 + i as f32).collect(),
                Lie::Unmasked => self.mean(batch, r, None)?,
                Lie::Promptful => self.mean(batch, r, Some(&batch.attention_mask))?,
                _ => self.mean(batch, r, Some(batch.pooling_mask()))?,
            };
            let rms = (v.iter().map(|x| x * x).sum::<f32>() / self.dim.max(1) as f32).sqrt();
            match self.lie {
                Lie::Noisy => v
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x += 1e-2 * rms * (((call + i) % 5) as f32 - 2.0)),
                Lie::Racy if overlapped => v.iter_mut().for_each(|x| *x = -*x + rms),
                _ => {}
            }
            values.extend(v);
        }
        if self.lie == Lie::Nan {
            if let Some(last) = values.last_mut() {
                *last = f32::NAN;
            }
        }
        if self.lie == Lie::Racy {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(EmbeddingBatch {
            rows: batch.rows,
            dim: self.dim as u32,
            values: values.into(),
        })
    }

    fn outputs(&self) -> ember_plugin_api::Outputs {
        ember_plugin_api::Outputs::TOKEN_STATES.with(ember_plugin_api::Outputs::SPARSE)
    }

    /// A masked-language head of the table: each token's logit is positive for its own id
    /// alone (`4 |first value| + 0.1`), so a row's weights sit on its token ids.
    fn sparse(
        &self,
        batch: &TokenBatch,
        reduction: ember_plugin_api::SparseReduction,
    ) -> Result<ember_plugin_api::SparseBatch, PluginError> {
        let honest = self.lie != Lie::Sparse;
        let seq = batch.seq_len as usize;
        let mut rows = Vec::with_capacity(batch.rows as usize);
        for r in 0..batch.rows as usize {
            let mut weights = std::collections::BTreeMap::<u32, f32>::new();
            for t in r * seq..(r + 1) * seq {
                if batch.attention_mask[t] == 0 {
                    continue;
                }
                let id = batch.input_ids[t];
                let mut w = (4.0 * self.row(id)?[0].abs() + 0.1).ln_1p();
                if reduction.log1p_twice && honest {
                    w = w.ln_1p();
                }
                let e = weights.entry(id as u32).or_insert(0.0);
                *e = if reduction.sum && honest {
                    *e + w
                } else {
                    e.max(w)
                };
            }
            rows.push(weights.into_iter().unzip());
        }
        Ok(ember_plugin_api::SparseBatch::from_rows(rows))
    }

    fn token_states(
        &self,
        batch: &TokenBatch,
    ) -> Result<ember_plugin_api::TokenStates, PluginError> {
        let scale = if self.lie == Lie::States { 2.0 } else { 1.0 };
        let mut values = Vec::new();
        for (t, id) in batch.input_ids.iter().enumerate() {
            if batch.attention_mask[t] != 0 {
                values.extend(self.row(*id)?.iter().map(|x| x * scale));
            }
        }
        Ok(ember_plugin_api::TokenStates::from_rows(
            self.dim,
            &batch.row_lengths(),
            values,
        ))
    }
}

impl Backend for Liar {
    fn info() -> Result<PluginInfo, PluginError> {
        Ok(PluginInfo {
            name: "liar".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            runtime: "pure Rust".into(),
            kinds: vec![ModelKind::Embed].into(),
            devices: vec![DeviceKind::Cpu].into(),
            dtypes: vec![DType::Auto, DType::Fp32, DType::Int8].into(),
        })
    }

    fn select_files(listing: &[String], _dtype: DType) -> Result<Vec<String>, PluginError> {
        match listing.iter().find(|f| *f == "model.safetensors") {
            Some(f) => Ok(vec![f.clone()]),
            None => Err(PluginError::unsupported(
                "the liar backend reads model.safetensors",
            )),
        }
    }

    fn load(request: &LoadRequest) -> Result<Box<dyn Model>, PluginError> {
        let lie = Lie::parse(&std::env::var("EMBER_LIAR").unwrap_or_else(|_| "honest".into()))?;
        let path = std::path::Path::new(request.model_dir.as_str()).join("model.safetensors");
        let bytes = std::fs::read(&path)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let t = tensors
            .tensor("embeddings.word_embeddings.weight")
            .map_err(|e| PluginError::unsupported(format!("{}: {e}", path.display())))?;
        if t.dtype() != Dtype::F32 || t.shape().len() != 2 {
            return Err(PluginError::unsupported(
                "word embeddings must be a 2-D float32 tensor",
            ));
        }
        let (vocab, dim) = (t.shape()[0], t.shape()[1]);
        let mut table: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if lie == Lie::Int8 {
            // Error in the weights, as quantisation makes it (pooling stays exact).
            for row in table.chunks_mut(dim.max(1)) {
                let rms = (row.iter().map(|x| x * x).sum::<f32>() / dim.max(1) as f32).sqrt();
                row.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x += 0.08 * rms * ((i * 7919 % 13) as f32 - 6.0) / 6.0);
            }
        }
        let record = match std::env::var("EMBER_LIAR_RECORD") {
            Ok(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        PluginError::invalid_input(format!("EMBER_LIAR_RECORD={path}: {e}"))
                    })?,
            )),
            Err(_) => None,
        };
        Ok(Box::new(LiarModel {
            record,
            table,
            vocab,
            dim,
            lie,
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        }))
    }
}
