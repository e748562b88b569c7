//! A loaded model: a CTranslate2 encoder (converted from the checkpoint on first use, or a
//! repository already in CTranslate2's format), with pooling for embedders and the
//! classification head for rerankers.

use crate::cache;
use crate::checkpoint::Checkpoint;
use crate::compute::{self, Device};
use crate::convert::{self, Family};
use crate::ffi;
use crate::head::Head;
use crate::modelbin;
use ember_plugin_api::cuda;
use ember_plugin_api::parts;
use ember_plugin_api::pooling::pool;
use ember_plugin_api::{
    plugin_info, DType, EmbeddingBatch, LoadRequest, LoadedModel, LogitBatch, Model, ModelKind,
    Outputs, PairBatch, PluginError, Pooling, ScoreBatch, TokenBatch, TokenStates,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tokens from which a call of one row runs on every CPU thread instead of one: one text of
/// all-MiniLM-L6-v2 on a 2-core Intel Xeon took as long on two threads as on one at 256
/// tokens, 1.4x less at 512, and 2.5x to 6x longer at 64 tokens and fewer.
const LONG_ROW: usize = 256;

/// A model on CTranslate2.
pub struct Ct2Model {
    encoder: cxx::UniquePtr<ffi::Encoder>,
    head: Option<Head>,
    pooling: Pooling,
    hidden: usize,
    vocab: usize,
    /// Rows of the segment embedding table; `None` when the model has none.
    type_vocab: Option<usize>,
    max_positions: usize,
    device: Device,
    dtype: DType,
}

/// Token states of a batch: `rows * seq * hidden`.
struct States {
    values: Vec<f32>,
    seq: usize,
    lengths: Vec<usize>,
}

/// The CTranslate2 directory of a checkpoint, converting it unless already cached, and the
/// classification head when the model is a reranker. The checkpoint is only opened when it is
/// read: to convert it, or for a reranker's head.
fn converted(request: &LoadRequest, dir: &Path) -> Result<(PathBuf, Option<Head>), PluginError> {
    let files: Vec<String> = request.files.iter().map(|f| f.to_string()).collect();
    let config = ember_plugin_api::families::read_config(dir)?;
    let family = Family::of(config["model_type"].as_str().unwrap_or_default())?;
    let mut ckpt: Option<Checkpoint> = None;
    let target = cache::location(dir, &files);
    let started = Instant::now();
    let fresh = cache::get_or_convert(&target, |out| {
        let opened = ckpt.insert(Checkpoint::open(dir, &files)?);
        convert::convert(dir, opened, &config, out)
    })?;
    if fresh {
        plugin_info!(
            "ctranslate2",
            "converted {} to CTranslate2 in {} ms: {}",
            dir.display(),
            started.elapsed().as_millis(),
            target.display()
        );
    } else {
        plugin_info!(
            "ctranslate2",
            "using the CTranslate2 conversion cached in {}",
            target.display()
        );
    }
    let head = match request.manifest.kind {
        ModelKind::Rerank | ModelKind::Classify => {
            let ckpt = match ckpt {
                Some(c) => c,
                None => Checkpoint::open(dir, &files)?,
            };
            Some(Head::load(&ckpt, family)?)
        }
        _ => None,
    };
    Ok((target, head))
}

impl Ct2Model {
    /// Loads the request's model on its device and compute type.
    pub fn load(request: &LoadRequest) -> Result<Ct2Model, PluginError> {
        let dir = Path::new(request.model_dir.as_str());
        let native = request.files.iter().any(|f| f.as_str() == "model.bin");
        let (ct2_dir, head) = if native {
            if matches!(
                request.manifest.kind,
                ModelKind::Rerank | ModelKind::Classify
            ) {
                return Err(PluginError::unsupported(
                    "reranking and classification are not supported by this backend for a \
                     repository already in \
                     CTranslate2's format: its model.bin has no classification head (name the \
                     original Hugging Face checkpoint instead; it is converted at load)",
                ));
            }
            (dir.to_path_buf(), None)
        } else {
            converted(request, dir)?
        };

        let model_bin = ct2_dir.join("model.bin");
        let shapes = modelbin::read_shapes(&model_bin)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", model_bin.display())))?;
        let embeddings = shapes.get("encoder/embeddings_0/weight").ok_or_else(|| {
            PluginError::unsupported(format!(
                "{} is not a CTranslate2 encoder (no encoder/embeddings_0/weight); the \
                 ctranslate2 backend runs encoder models",
                model_bin.display()
            ))
        })?;
        let (vocab, hidden) = (embeddings[0], embeddings[1]);
        // Segment embeddings: none in DistilBERT (its encoder takes ids alone).
        let type_vocab = shapes.get("encoder/embeddings_1/weight").map(|s| s[0]);
        let max_positions = shapes
            .get("encoder/position_encodings/encodings")
            .map_or(usize::MAX, |s| s[0]);
        if let Some(h) = &head {
            if h.inputs() != hidden {
                return Err(PluginError::invalid_input(format!(
                    "the classification head reads {} values but the encoder's states have {hidden}",
                    h.inputs()
                )));
            }
            let declared = request.manifest.num_labels.max(1) as usize;
            if h.labels() != declared {
                return Err(PluginError::invalid_input(format!(
                    "the classification head has {} labels but the model's config declares \
                     {declared}",
                    h.labels()
                )));
            }
        }

        let threads = match request.intra_op_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let started = Instant::now();
        let placement = compute::placement(request.device)?;
        // Under DEVICE=auto a GPU that fails at load (cuBLAS, kernels, memory) leaves the
        // model on the CPU.
        let ((encoder, device, dtype), _) =
            cuda::or_cpu("ctranslate2", request.device, placement, |on| {
                let device = Device::from(on);
                let (compute_type, dtype) = compute::compute_type(request.dtype, device)?;
                let (name, index) = device.ct2();
                let encoder = ffi::load_encoder(
                    &ct2_dir.to_string_lossy(),
                    name,
                    index,
                    compute_type,
                    threads,
                )
                .map_err(|e| {
                    let message = format!("CTranslate2 cannot load {}: {e}", ct2_dir.display());
                    match device {
                        Device::Cpu => PluginError::invalid_input(message),
                        Device::Cuda(_) => PluginError::internal(message),
                    }
                })?;
                Ok((encoder, device, dtype))
            })?;
        plugin_info!(
            "ctranslate2",
            "loaded {} (hidden {hidden}, {}) on {} as {} with {} in {} ms",
            ct2_dir.display(),
            if head.is_some() {
                "classification head"
            } else {
                request.manifest.pooling.as_str()
            },
            device.name(),
            encoder.compute_type(),
            match device {
                Device::Cpu if encoder.has_whole() => format!(
                    "{} replica(s) of one thread (a lone row of {LONG_ROW} tokens or more: one \
                     of {threads} threads)",
                    encoder.replicas()
                ),
                Device::Cpu => format!("{} replica(s) of one thread", encoder.replicas()),
                Device::Cuda(_) => "one replica".to_string(),
            },
            started.elapsed().as_millis()
        );
        Ok(Ct2Model {
            encoder,
            head,
            pooling: request.manifest.pooling,
            hidden,
            vocab,
            type_vocab,
            max_positions,
            device,
            dtype,
        })
    }

    /// Runs the encoder on a batch, after checking every id against the model's tables.
    fn states(&self, batch: &TokenBatch) -> Result<States, PluginError> {
        batch.validate()?;
        let (rows, seq) = (batch.rows as usize, batch.seq_len as usize);
        let lengths = batch.row_lengths();
        if let Some(r) = lengths.iter().position(|&l| l == 0) {
            return Err(PluginError::invalid_input(format!("row {r} has no tokens")));
        }
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if longest > self.max_positions {
            return Err(PluginError::invalid_input(format!(
                "sequences of {longest} tokens are longer than the model's {} positions",
                self.max_positions
            )));
        }
        let ids = to_u32(&batch.input_ids, self.vocab, "token id", seq)?;
        // A model without segment embeddings reads no type ids (a pair's second segment is
        // then just more tokens, as in transformers).
        let types = match self.type_vocab {
            Some(limit) => to_u32(&batch.token_type_ids, limit, "token type id", seq)?,
            None => Vec::new(),
        };
        let lens: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
        // One part per replica at most, of about equal tokens (a CPU's replicas compute on
        // one thread each; a GPU has one replica, which takes the call whole).
        let part_ends: Vec<usize> = parts::even(&lengths, self.encoder.replicas())
            .into_iter()
            .map(|part| part.end)
            .collect();
        // A lone long row gains more from every thread than it loses to their overhead.
        let all_threads = rows == 1 && longest >= LONG_ROW;
        let mut values = vec![0f32; rows * longest * self.hidden];
        self.encoder
            .forward(
                &ids,
                &types,
                &lens,
                seq,
                &part_ends,
                all_threads,
                &mut values,
            )
            .map_err(|e| PluginError::internal(format!("CTranslate2: {e}")))?;
        Ok(States {
            values,
            seq: longest,
            lengths,
        })
    }

    /// The classification head's logits of every row, row-major `[rows, labels]`.
    fn logits(&self, batch: &TokenBatch) -> Result<Vec<f32>, PluginError> {
        let Some(head) = &self.head else {
            return Err(PluginError::unsupported(
                "this model has no classification head: it neither scores pairs nor classifies",
            ));
        };
        if batch.rows == 0 {
            return Ok(Vec::new());
        }
        let s = self.states(batch)?;
        let row = s.seq * self.hidden;
        Ok(s.values
            .chunks_exact(row)
            .flat_map(|states| head.logits(&states[..self.hidden]))
            .collect())
    }
}

/// Token ids as CTranslate2 takes them, refusing any outside `0..limit` (an id past the
/// embedding table would read out of bounds in the engine).
fn to_u32(values: &[i64], limit: usize, what: &str, seq: usize) -> Result<Vec<u32>, PluginError> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0 && (v as usize) < limit {
                Ok(v as u32)
            } else {
                Err(PluginError::invalid_input(format!(
                    "row {} position {}: {what} {v} is outside the model's 0..{limit}",
                    i / seq.max(1),
                    i % seq.max(1)
                )))
            }
        })
        .collect()
}

impl Model for Ct2Model {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: if let Some(head) = &self.head {
                head.labels() as u32
            } else {
                self.hidden as u32
            },
            device: self.device.name().into(),
            dtype: self.dtype,
            concurrent_calls: false,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        if self.head.is_some() {
            return Err(PluginError::unsupported(
                "this model ends in a classification head: it has no embeddings",
            ));
        }
        let dim = self.hidden as u32;
        if batch.rows == 0 {
            return Ok(EmbeddingBatch::empty(dim));
        }
        let s = self.states(batch)?;
        // The pooling mask laid out on the states' sequence length (the longest row).
        let (pooled, seq) = (batch.pooling_mask(), batch.seq_len as usize);
        let mask: Vec<i64> = s
            .lengths
            .iter()
            .enumerate()
            .flat_map(|(r, &l)| {
                (0..s.seq).map(move |t| i64::from(t < l && pooled[r * seq + t] != 0))
            })
            .collect();
        let values = pool(
            self.pooling,
            &s.values,
            &mask,
            s.lengths.len(),
            s.seq,
            self.hidden,
        );
        Ok(EmbeddingBatch {
            rows: batch.rows,
            dim,
            values: values.into(),
        })
    }

    fn outputs(&self) -> Outputs {
        match self.head {
            None => Outputs::TOKEN_STATES,
            Some(_) => Outputs::NONE,
        }
    }

    fn token_states(&self, batch: &TokenBatch) -> Result<TokenStates, PluginError> {
        if self.head.is_some() {
            return Err(PluginError::unsupported(
                "this model ends in a classification head: it offers no token states",
            ));
        }
        if batch.rows == 0 {
            return Ok(TokenStates::from_rows(self.hidden, &[], Vec::new()));
        }
        let s = self.states(batch)?;
        // Row r's live tokens are the first lengths[r] of its `s.seq` states.
        let row = s.seq * self.hidden;
        let mut values = Vec::with_capacity(s.lengths.iter().sum::<usize>() * self.hidden);
        for (states, &len) in s.values.chunks_exact(row).zip(&s.lengths) {
            values.extend_from_slice(&states[..len * self.hidden]);
        }
        Ok(TokenStates::from_rows(self.hidden, &s.lengths, values))
    }

    fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
        if self.head.as_ref().is_some_and(|h| h.labels() != 1) {
            return Err(PluginError::unsupported(
                "this model is not a reranker: it has no relevance scores",
            ));
        }
        Ok(ScoreBatch {
            scores: self.logits(&batch.tokens)?.into(),
        })
    }

    fn classify_tokens(&self, batch: &TokenBatch) -> Result<LogitBatch, PluginError> {
        let labels = self.head.as_ref().map_or(0, |h| h.labels()) as u32;
        Ok(LogitBatch {
            rows: batch.rows,
            labels,
            values: self.logits(batch)?.into(),
        })
    }
}
