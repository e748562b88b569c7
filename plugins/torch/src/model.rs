//! A loaded model: the encoder, the pooling of embedders or the classification head of
//! rerankers and classifiers, on its device and precision.

use crate::clip::Clip;
use crate::deberta::{self, Deberta};
use crate::decoder::{self, Decoder};
use crate::device;
use crate::encoder::{Encoder, Family};
use crate::error::{self, from_tch};
use crate::gte::{Gte, Layout};
use crate::modernbert::{self, ModernBert};
use crate::nn::Linear;
use crate::parts::Parts;
use crate::pool::pool;
use crate::splade::MlmHead;
use crate::weights::Weights;
use ember_plugin_api::parts;
use ember_plugin_api::{
    plugin_info, DType, EmbeddingBatch, LoadRequest, LoadedModel, LogitBatch, Model, ModelKind,
    Outputs, PairBatch, PixelBatch, PluginError, Pooling, ScoreBatch, SparseBatch, SparseReduction,
    TokenBatch, TokenStates,
};
use serde_json::Value;
use std::ops::Range;
use std::path::Path;
use tch::{Device, Kind, TchError, Tensor};

/// How a reranker or classifier turns token states into its logits.
enum Head {
    /// BERT: tanh pooler on the first token, then the classifier.
    Bert { pooler: Linear, classifier: Linear },
    /// RoBERTa and MPNet: dense + tanh on the first token, then the output projection.
    Roberta { dense: Linear, out: Linear },
    /// DistilBERT: pre-classifier + ReLU on the first token, then the classifier.
    DistilBert { pre: Linear, classifier: Linear },
    /// ELECTRA: dense + GELU on the first token, then the output projection.
    Electra { dense: Linear, out: Linear },
}

impl Head {
    fn logits(&self, states: &Tensor) -> Result<Tensor, TchError> {
        let first = states.f_select(1, 0)?;
        match self {
            Head::Bert { pooler, classifier } => {
                classifier.forward(&pooler.forward(&first)?.f_tanh()?)
            }
            Head::Roberta { dense, out } => out.forward(&dense.forward(&first)?.f_tanh()?),
            Head::DistilBert { pre, classifier } => {
                classifier.forward(&pre.forward(&first)?.f_relu()?)
            }
            Head::Electra { dense, out } => out.forward(&dense.forward(&first)?.f_gelu("none")?),
        }
    }
}

/// How a decoder reranker (`*ForSequenceClassification`) scores: its `score` projection of
/// the last token that is not padding, as transformers picks it.
struct ScoreHead {
    score: Linear,
    /// `pad_token_id` of the config: tokens equal to it are not "last" (transformers' rule).
    pad_id: Option<i64>,
}

impl ScoreHead {
    fn logits(&self, states: &Tensor, ids: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let mut real = mask.f_ne(0)?;
        if let Some(pad) = self.pad_id {
            real = real.f_logical_and(&ids.f_ne(pad)?)?;
        }
        let at = Tensor::f_arange(seq, (Kind::Int64, ids.device()))?.f_unsqueeze(0)?;
        let last = at
            .f_mul(&real.f_to_kind(Kind::Int64)?)?
            .f_argmax(-1, false)?;
        let picked = states.f_index(&[
            Some(Tensor::f_arange(rows, (Kind::Int64, ids.device()))?),
            Some(last),
        ])?;
        self.score.forward(&picked)
    }
}

/// How a causal language model answering "yes" or "no" scores a formatted pair
/// (Qwen3-Reranker): the last token's logit of "yes" minus that of "no", whose sigmoid is the
/// model card's softmax probability of "yes".
struct YesNoHead {
    /// The output projection's "yes" row minus its "no" row, `[hidden, 1]`.
    direction: Tensor,
}

impl YesNoHead {
    /// Reads the ids of "yes" and "no" from the model's `tokenizer.json` and their rows of the
    /// output projection (`lm_head.weight`, or the embeddings when they are tied).
    fn load(dir: &Path, plain: &Weights, decoder: &Decoder) -> Result<YesNoHead, PluginError> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let tokenizer: Value = serde_json::from_str(&text)
            .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
        let id = |token: &str| -> Result<i64, PluginError> {
            tokenizer["model"]["vocab"][token]
                .as_i64()
                .or_else(|| {
                    tokenizer["added_tokens"]
                        .as_array()?
                        .iter()
                        .find(|t| t["content"] == token)?["id"]
                        .as_i64()
                })
                .ok_or_else(|| {
                    PluginError::unsupported(format!(
                        "{} has no token {token:?}: a causal language model reranks by the \
                         logits of \"yes\" and \"no\" (Qwen3-Reranker)",
                        path.display()
                    ))
                })
        };
        let (yes, no) = (id("yes")?, id("no")?);
        let projection = if plain.has("lm_head.weight") {
            plain.get("lm_head.weight")?
        } else {
            decoder.embeddings().shallow_clone()
        };
        let direction = tch::no_grad(|| -> Result<Tensor, TchError> {
            projection
                .f_get(yes)?
                .f_sub(&projection.f_get(no)?)?
                .f_unsqueeze(1)
        })
        .map_err(|e| from_tch("reading the yes/no rows", e))?;
        Ok(YesNoHead { direction })
    }

    fn logits(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        pool(Pooling::LastToken, states, mask)?.f_matmul(&self.direction)
    }
}

/// A decoder reranker's head.
enum DecoderHead {
    /// `*ForSequenceClassification`.
    Score(ScoreHead),
    /// A causal language model's "yes" / "no" answer.
    YesNo(YesNoHead),
}

/// The tensors of a model (tch tensors are `Send` but not `Sync`).
enum Inner {
    /// An embedder (no head) or a reranker; a BERT masked-language model keeps its MLM head
    /// for SPLADE.
    Encoder {
        encoder: Encoder,
        head: Option<Head>,
        mlm: Option<MlmHead>,
    },
    /// A DeBERTa-v2/v3 embedder (no head) or reranker.
    Deberta {
        model: Deberta,
        head: Option<deberta::Head>,
    },
    /// A GTE or Nomic BERT embedder (no head), or a GTE reranker.
    Gte { model: Gte, head: Option<Head> },
    /// A ModernBERT embedder (no head) or reranker.
    Modern {
        model: ModernBert,
        head: Option<modernbert::Head>,
    },
    /// A decoder embedder (no head) or reranker.
    Decoder {
        decoder: Decoder,
        head: Option<DecoderHead>,
    },
    /// Text and vision towers.
    Clip(Clip),
}

impl Inner {
    /// Token states `[rows, seq, hidden]` of a text model (zero on padding for some).
    fn states(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Inner::Encoder { encoder, .. } => encoder.forward(ids, types, mask),
            Inner::Deberta { model, .. } => model.forward(ids, types, mask),
            Inner::Modern { model, .. } => model.forward(ids, mask),
            Inner::Gte { model, .. } => model.forward(ids, types, mask),
            Inner::Decoder { decoder, .. } => decoder.forward(ids, mask),
            Inner::Clip(_) => Err(TchError::Kind(
                "a CLIP text tower pools inside; its token states are not offered".into(),
            )),
        }
    }

    /// Whether the model offers its token states: text embedders do; CLIP towers (which pool
    /// inside) and models that end in a head do not.
    fn offers_states(&self, headed: bool) -> bool {
        !headed && !matches!(self, Inner::Clip(_))
    }
}

/// A model's tensors lent to the threads of a call's parts, for reading.
struct Lent<'a>(&'a Inner);

impl Lent<'_> {
    /// The tensors (a method, so that closures capture the wrapper rather than its field).
    fn get(&self) -> &Inner {
        self.0
    }
}

// SAFETY: tch leaves `Tensor` unshareable because it cannot know how a tensor is used. A forward
// pass only reads the model's tensors (its in-place ops write only activations it made), and
// libtorch reads a tensor's data and counts its references (atomically) safely from several
// threads, so the parts' forward passes may share them; the model's lock is held meanwhile.
unsafe impl Sync for Lent<'_> {}

/// A model on libtorch.
pub struct TorchModel {
    // The host serialises calls to a model; the mutex makes sharing the tensors sound. Forward
    // calls only read the tensors, so a panic while it is held leaves them intact: it is locked
    // with `error::lock`, which ignores poisoning.
    inner: std::sync::Mutex<Inner>,
    /// The threads that run a call's parts at once, on a CPU with several intra-op threads.
    parts: Option<&'static Parts>,
    hidden: i64,
    /// Whether the model ends in a classification head (rerankers and classifiers).
    headed: bool,
    /// Logits per row of the head (rerankers: 1).
    labels: u32,
    max_positions: i64,
    /// Token ids must be below it.
    vocab: i64,
    /// Segment ids must be below it when above 1 (with one segment they are not read).
    segments: i64,
    pooling: Pooling,
    device: Device,
    kind: Kind,
    dtype: DType,
}

/// The values of `t` as a flat vector of f32 on the host.
fn to_vec(t: &Tensor) -> Result<Vec<f32>, TchError> {
    Vec::<f32>::try_from(
        &t.f_to_kind(Kind::Float)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_view(-1)?,
    )
}

/// What an architecture's loader builds: the tensors, and the facts requests are checked
/// against.
struct Built {
    inner: Inner,
    /// Width of the vectors (or of the states a reranker's head reads).
    width: i64,
    max_positions: i64,
    vocab: i64,
    segments: i64,
    /// The architecture, for the log.
    what: String,
    /// The reranker's head, for the log; `None` for embedders.
    head: Option<&'static str>,
}

/// `weights` under `prefix` when the checkpoint is a task model (its encoder's tensors start
/// with it, `probe` being one of them), else as they are.
fn unprefixed(weights: Weights, prefix: &str, probe: &str) -> Weights {
    if weights.has(&format!("{prefix}{probe}")) {
        weights.with_prefix(prefix)
    } else {
        weights
    }
}

fn build_clip(weights: Weights, cfg: &Value) -> Result<Built, PluginError> {
    let clip = tch::no_grad(|| Clip::load(&weights, cfg))?;
    Ok(Built {
        width: clip.dim,
        max_positions: clip.max_positions,
        vocab: clip.vocab_size(),
        segments: 1,
        what: "CLIP".into(),
        head: None,
        inner: Inner::Clip(clip),
    })
}

/// BERT, RoBERTa-family, DistilBERT, MPNet and ELECTRA, with their classification heads; with
/// `masked_lm`, their masked-language model's head for SPLADE.
fn build_encoder(
    family: Family,
    weights: Weights,
    cfg: &Value,
    rerank: bool,
    masked_lm: bool,
) -> Result<Built, PluginError> {
    let weights = unprefixed(
        weights,
        family.task_prefix(),
        "embeddings.word_embeddings.weight",
    );
    let encoder = tch::no_grad(|| Encoder::load(family, &weights, cfg))?;
    let words = weights.get("embeddings.word_embeddings.weight")?;
    // Heads live outside the encoder's prefix.
    let plain = weights.with_prefix("");
    // A *ForMaskedLM config over a bare encoder's weights loads as the embedder it is.
    let mlm = match masked_lm && MlmHead::present(family, &plain) {
        true => Some(tch::no_grad(|| MlmHead::load(family, &plain, words, cfg))?),
        false => None,
    };
    let head = if rerank {
        Some(match family {
            Family::Bert => Head::Bert {
                pooler: Linear::load(&plain, "bert.pooler.dense")?,
                classifier: Linear::load(&plain, "classifier")?,
            },
            Family::Roberta | Family::MPNet => Head::Roberta {
                dense: Linear::load(&plain, "classifier.dense")?,
                out: Linear::load(&plain, "classifier.out_proj")?,
            },
            Family::DistilBert => Head::DistilBert {
                pre: Linear::load(&plain, "pre_classifier")?,
                classifier: Linear::load(&plain, "classifier")?,
            },
            Family::Electra => Head::Electra {
                dense: Linear::load(&plain, "classifier.dense")?,
                out: Linear::load(&plain, "classifier.out_proj")?,
            },
        })
    } else {
        None
    };
    Ok(Built {
        width: encoder.hidden,
        max_positions: encoder.max_positions,
        vocab: encoder.vocab_size(),
        segments: encoder.segments(),
        what: format!("{family:?}"),
        head: head.as_ref().map(|_| "classification head"),
        inner: Inner::Encoder { encoder, head, mlm },
    })
}

/// DeBERTa-v2/v3, with its classification head.
fn build_deberta(weights: Weights, cfg: &Value, rerank: bool) -> Result<Built, PluginError> {
    let weights = unprefixed(weights, "deberta.", "embeddings.word_embeddings.weight");
    let model = tch::no_grad(|| Deberta::load(&weights, cfg))?;
    let head = match rerank {
        true => Some(deberta::Head::load(&weights.with_prefix(""), cfg)?),
        false => None,
    };
    Ok(Built {
        width: model.hidden,
        max_positions: model.max_positions,
        vocab: model.vocab_size(),
        segments: model.segments(),
        what: "deberta-v2".into(),
        head: head.as_ref().map(|_| "classification head"),
        inner: Inner::Deberta { model, head },
    })
}

/// ModernBERT, with its classification head.
fn build_modernbert(weights: Weights, cfg: &Value, rerank: bool) -> Result<Built, PluginError> {
    let weights = unprefixed(weights, "model.", "embeddings.tok_embeddings.weight");
    let model = tch::no_grad(|| ModernBert::load(&weights, cfg))?;
    let head = match rerank {
        true => Some(modernbert::Head::load(&weights.with_prefix(""), cfg)?),
        false => None,
    };
    Ok(Built {
        width: model.hidden,
        max_positions: model.max_positions,
        vocab: model.vocab_size(),
        segments: 1,
        what: "modernbert".into(),
        head: head.as_ref().map(|_| "classification head"),
        inner: Inner::Modern { model, head },
    })
}

/// A rotary post-norm encoder in `layout`: a GTE embedder, or reranker with BERT's head (tanh
/// pooler on the first token, then the classifier: `new.pooler.dense`, `classifier`); a Nomic
/// BERT embedder (nomic-embed-text-v1, v1.5).
fn build_gte(
    weights: Weights,
    cfg: &Value,
    rerank: bool,
    layout: Layout,
) -> Result<Built, PluginError> {
    // GTE's task models keep the encoder under `new.`; Nomic's pre-training checkpoints under
    // `bert.` (the published embedders under no prefix).
    let (prefix, what) = match layout {
        Layout::Gte => ("new.", "gte"),
        Layout::Nomic => ("bert.", "nomic_bert"),
    };
    if rerank && layout == Layout::Nomic {
        return Err(PluginError::unsupported(
            "the torch backend serves nomic_bert embedders; a nomic_bert classification head \
             is not implemented",
        ));
    }
    let weights = unprefixed(weights, prefix, "embeddings.word_embeddings.weight");
    let model = tch::no_grad(|| Gte::load(&weights, cfg, layout))?;
    let head = match rerank {
        true => {
            let plain = weights.with_prefix("");
            Some(Head::Bert {
                pooler: Linear::load(&plain, "new.pooler.dense")?,
                classifier: Linear::load(&plain, "classifier")?,
            })
        }
        false => None,
    };
    Ok(Built {
        width: model.hidden,
        max_positions: model.max_positions,
        vocab: model.vocab_size(),
        segments: model.segments(),
        what: what.into(),
        head: head.as_ref().map(|_| "classification head"),
        inner: Inner::Gte { model, head },
    })
}

/// A decoder, with a `score` head (`*ForSequenceClassification`) or, for a causal language
/// model, the yes / no head.
fn build_decoder(
    request: &LoadRequest,
    weights: Weights,
    cfg: &Value,
) -> Result<Built, PluginError> {
    let manifest = &request.manifest;
    // Bare models (Qwen3Model, as embedders are saved) have no prefix; task models "model.".
    let weights = unprefixed(weights, "model.", "embed_tokens.weight");
    let decoder = tch::no_grad(|| Decoder::load(&weights, cfg))?;
    let model_type = cfg["model_type"].as_str().unwrap_or_default();
    let head = if matches!(manifest.kind, ModelKind::Rerank | ModelKind::Classify) {
        let plain = weights.with_prefix("");
        if plain.has("score.weight") {
            Some(DecoderHead::Score(ScoreHead {
                score: Linear::load(&plain, "score")?,
                pad_id: cfg["pad_token_id"].as_i64(),
            }))
        } else if manifest.kind == ModelKind::Rerank
            && manifest.architecture.ends_with("ForCausalLM")
        {
            let dir = Path::new(request.model_dir.as_str());
            Some(DecoderHead::YesNo(YesNoHead::load(dir, &plain, &decoder)?))
        } else {
            return Err(PluginError::unsupported(format!(
                "{model_type} decoder checkpoint has no score.weight: a decoder reranker must be \
                 a *ForSequenceClassification checkpoint (one label) or a causal language \
                 model answering yes / no (Qwen3-Reranker)"
            )));
        }
    } else {
        None
    };
    Ok(Built {
        width: decoder.hidden,
        max_positions: decoder.max_positions,
        vocab: decoder.vocab_size(),
        segments: 1,
        what: model_type.into(),
        head: head.as_ref().map(|h| match h {
            DecoderHead::Score(_) => "score head",
            DecoderHead::YesNo(_) => "yes/no head",
        }),
        inner: Inner::Decoder { decoder, head },
    })
}

impl TorchModel {
    /// Loads the request's model on its device.
    pub fn load(request: &LoadRequest) -> Result<TorchModel, PluginError> {
        let manifest = &request.manifest;
        let dir = Path::new(request.model_dir.as_str());
        let cfg = ember_plugin_api::families::read_config(dir)?;
        let device = device::device(request.device)?;
        let (kind, dtype) = device::kind(request.dtype, device)?;
        if device == Device::Cpu {
            crate::heap::keep_freed_memory();
        }
        if request.intra_op_threads > 0 {
            tch::set_num_threads(request.intra_op_threads as i32);
        }
        let files: Vec<String> = request.files.iter().map(|f| f.to_string()).collect();
        let weights = Weights::read(dir, &files, device, kind)?;
        let rerank = matches!(manifest.kind, ModelKind::Rerank | ModelKind::Classify);
        let model_type = cfg["model_type"].as_str().unwrap_or_default();
        let built = if manifest.kind == ModelKind::Clip {
            build_clip(weights, &cfg)?
        } else if decoder::implements(model_type) {
            build_decoder(request, weights, &cfg)?
        } else if model_type == "modernbert" {
            build_modernbert(weights, &cfg, rerank)?
        } else if model_type == "deberta-v2" {
            build_deberta(weights, &cfg, rerank)?
        } else if model_type == "new" {
            build_gte(weights, &cfg, rerank, Layout::Gte)?
        } else if model_type == "nomic_bert" {
            build_gte(weights, &cfg, rerank, Layout::Nomic)?
        } else {
            let family = Family::of(model_type).ok_or_else(|| {
                PluginError::unsupported(format!(
                    "the torch backend does not implement model_type {model_type:?}; \
                     supported: {}, modernbert, deberta-v2, new (GTE), nomic_bert, {}, clip",
                    crate::encoder::SUPPORTED,
                    decoder::SUPPORTED
                ))
            })?;
            let masked_lm = manifest.architecture.ends_with("ForMaskedLM");
            build_encoder(family, weights, &cfg, rerank, masked_lm)?
        };
        let parts = match device {
            Device::Cpu => Parts::shared(tch::get_num_threads().max(1) as usize)
                .map_err(PluginError::internal)?,
            _ => None,
        };
        if device == Device::Cpu {
            // The checkpoint's tensors are gone now (the weights the layers laid out for the
            // CPU, and those no layer used): give their pages back rather than keep them as
            // free heap.
            crate::heap::return_free_memory();
        }
        plugin_info!(
            "torch",
            "loaded {} ({}, width {}, {}) on {} in {}",
            dir.display(),
            built.what,
            built.width,
            built.head.unwrap_or(manifest.pooling.as_str()),
            device::name(device),
            dtype.as_str()
        );
        Ok(TorchModel {
            hidden: built.width,
            headed: built.head.is_some(),
            labels: manifest.num_labels.max(1),
            max_positions: built.max_positions,
            vocab: built.vocab,
            segments: built.segments,
            inner: std::sync::Mutex::new(built.inner),
            parts,
            pooling: manifest.pooling,
            device,
            kind,
            dtype,
        })
    }

    /// Runs `run` without gradients on the rows of a call whose rows hold `tokens` live
    /// tokens each: on the CPU cut into parts that run at once (see `parts`), else whole.
    /// The results come in the rows' order, one per part.
    fn in_parts<T: Send>(
        &self,
        inner: &Inner,
        tokens: &[usize],
        run: impl Fn(&Inner, Range<usize>) -> Result<T, TchError> + Sync,
    ) -> Result<Vec<T>, TchError> {
        let whole = || tch::no_grad(|| run(inner, 0..tokens.len())).map(|one| vec![one]);
        let Some(threads) = self.parts else {
            return whole();
        };
        let plan = threads.plan(tokens);
        if plan.len() < 2 {
            return whole();
        }
        let lent = Lent(inner);
        threads
            .run(&plan, |rows| tch::no_grad(|| run(lent.get(), rows)))
            .into_iter()
            .collect()
    }

    /// Refuses batches the model cannot index: sequences longer than its positions, token or
    /// segment ids outside its tables (which on CUDA would be a device-side assert, after
    /// which the device is unusable).
    fn check(&self, batch: &TokenBatch) -> Result<(), PluginError> {
        let seq = batch.seq_len as i64;
        if seq > self.max_positions {
            return Err(PluginError::invalid_input(format!(
                "sequences of {seq} tokens are longer than the model's {} positions",
                self.max_positions
            )));
        }
        if let Some(id) = batch
            .input_ids
            .iter()
            .find(|&&id| !(0..self.vocab).contains(&id))
        {
            return Err(PluginError::invalid_input(format!(
                "token id {id} is outside the model's vocabulary of {} tokens",
                self.vocab
            )));
        }
        if self.segments > 1 {
            if let Some(id) = batch
                .token_type_ids
                .iter()
                .find(|&&id| !(0..self.segments).contains(&id))
            {
                return Err(PluginError::invalid_input(format!(
                    "segment id {id} is outside the model's {} segments",
                    self.segments
                )));
            }
        }
        Ok(())
    }

    /// Ids, segment ids, attention mask and pooling mask of a batch on the device.
    fn inputs(&self, batch: &TokenBatch) -> Result<(Tensor, Tensor, Tensor, Tensor), TchError> {
        let (rows, seq) = (batch.rows as i64, batch.seq_len as i64);
        let t = |v: &[i64]| {
            Tensor::f_from_slice(v)?
                .f_view([rows, seq])?
                .f_to_device(self.device)
        };
        let mask = t(&batch.attention_mask)?;
        let pooled = if batch.has_pooling_mask() {
            t(&batch.pooling_mask)?
        } else {
            mask.shallow_clone()
        };
        Ok((
            t(&batch.input_ids)?,
            t(&batch.token_type_ids)?,
            mask,
            pooled,
        ))
    }

    /// The head's logits of every row, row-major `[rows, labels]`.
    fn head_logits(&self, batch: &TokenBatch, what: &str) -> Result<Vec<f32>, PluginError> {
        if !self.headed {
            return Err(PluginError::unsupported(
                "this model has no classification head: it neither scores pairs nor classifies",
            ));
        }
        if batch.rows == 0 {
            return Ok(Vec::new());
        }
        self.check(batch)?;
        let inner = error::lock(&self.inner);
        let values = self
            .in_parts(&inner, &batch.row_lengths(), |inner, rows| {
                let (ids, types, mask, _) = self.inputs(&parts::rows(batch, rows))?;
                let logits = match inner {
                    Inner::Encoder {
                        encoder,
                        head: Some(head),
                        ..
                    } => head.logits(&encoder.forward(&ids, &types, &mask)?)?,
                    Inner::Decoder {
                        decoder,
                        head: Some(head),
                    } => {
                        let states = decoder.forward(&ids, &mask)?;
                        match head {
                            DecoderHead::Score(h) => h.logits(&states, &ids, &mask)?,
                            DecoderHead::YesNo(h) => h.logits(&states, &mask)?,
                        }
                    }
                    Inner::Modern {
                        model,
                        head: Some(head),
                    } => head.logits(&model.forward(&ids, &mask)?, &mask)?,
                    Inner::Deberta {
                        model,
                        head: Some(head),
                    } => head.logits(&model.forward(&ids, &types, &mask)?)?,
                    Inner::Gte {
                        model,
                        head: Some(head),
                    } => head.logits(&model.forward(&ids, &types, &mask)?)?,
                    _ => return Err(TchError::Kind("a head model without its head".into())),
                };
                to_vec(&logits)
            })
            .map_err(|e| from_tch(what, e))?
            .concat();
        if values.len() != batch.rows as usize * self.labels as usize {
            return Err(PluginError::internal(format!(
                "the classification head has {} outputs per row, but the model's config \
                 declares {} labels",
                values.len() / batch.rows as usize,
                self.labels
            )));
        }
        Ok(values)
    }
}

impl Model for TorchModel {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: if self.headed {
                self.labels
            } else {
                self.hidden as u32
            },
            device: device::name(self.device).into(),
            dtype: self.dtype,
            concurrent_calls: false,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        if self.headed {
            return Err(PluginError::unsupported(
                "this model ends in a classification head: it has no embeddings",
            ));
        }
        let dim = self.hidden as u32;
        if batch.rows == 0 {
            return Ok(EmbeddingBatch::empty(dim));
        }
        self.check(batch)?;
        let inner = error::lock(&self.inner);
        if matches!(&*inner, Inner::Clip(_)) && batch.has_pooling_mask() {
            return Err(PluginError::unsupported(
                "a CLIP text tower pools its own way; it takes no pooling mask",
            ));
        }
        let values = self
            .in_parts(&inner, &batch.row_lengths(), |inner, rows| {
                let (ids, types, mask, pooled) = self.inputs(&parts::rows(batch, rows))?;
                match inner {
                    Inner::Clip(clip) => to_vec(&clip.text(&ids, &mask)?),
                    text => to_vec(&pool(
                        self.pooling,
                        &text.states(&ids, &types, &mask)?,
                        &pooled,
                    )?),
                }
            })
            .map_err(|e| from_tch("embedding tokens", e))?
            .concat();
        Ok(EmbeddingBatch {
            rows: batch.rows,
            dim,
            values: values.into(),
        })
    }

    fn outputs(&self) -> Outputs {
        let inner = error::lock(&self.inner);
        let states = match inner.offers_states(self.headed) {
            true => Outputs::TOKEN_STATES,
            false => Outputs::NONE,
        };
        match &*inner {
            Inner::Encoder { mlm: Some(_), .. } => states
                .with(Outputs::SPARSE)
                .with(Outputs::UNATTENDED_STATES),
            Inner::Encoder { .. } | Inner::Modern { .. } if !self.headed => {
                states.with(Outputs::UNATTENDED_STATES)
            }
            _ => states,
        }
    }

    fn sparse(
        &self,
        batch: &TokenBatch,
        reduction: SparseReduction,
    ) -> Result<SparseBatch, PluginError> {
        let inner = error::lock(&self.inner);
        let Inner::Encoder { mlm: Some(_), .. } = &*inner else {
            return Err(PluginError::unsupported(
                "this model has no masked-language head (the torch backend reads those of \
                 BERT, DistilBERT, RoBERTa-family and MPNet *ForMaskedLM checkpoints): it \
                 produces no sparse weights",
            ));
        };
        if batch.rows == 0 {
            return Ok(SparseBatch::from_rows(Vec::new()));
        }
        self.check(batch)?;
        let rows = self
            .in_parts(&inner, &batch.row_lengths(), |inner, rows| {
                let Inner::Encoder {
                    encoder,
                    mlm: Some(mlm),
                    ..
                } = inner
                else {
                    return Err(TchError::Kind("a SPLADE model without its head".into()));
                };
                let part = parts::rows(batch, rows);
                let (ids, types, mask, _) = self.inputs(&part)?;
                let weights =
                    mlm.splade(&encoder.forward(&ids, &types, &mask)?, &mask, reduction)?;
                // (row, id) of every non-zero weight, in row-major order.
                let at = weights.f_nonzero()?;
                let values =
                    weights.f_index(&[Some(at.f_select(1, 0)?), Some(at.f_select(1, 1)?)])?;
                let cells = Vec::<i64>::try_from(&at.f_to_device(Device::Cpu)?.f_reshape(-1)?)?;
                let mut rows: Vec<(Vec<u32>, Vec<f32>)> =
                    vec![Default::default(); part.rows as usize];
                for (cell, value) in cells.chunks_exact(2).zip(to_vec(&values)?) {
                    let row = &mut rows[cell[0] as usize];
                    row.0.push(cell[1] as u32);
                    row.1.push(value);
                }
                Ok(rows)
            })
            .map_err(|e| from_tch("computing sparse weights", e))?
            .concat();
        Ok(SparseBatch::from_rows(rows))
    }

    fn token_states(&self, batch: &TokenBatch) -> Result<TokenStates, PluginError> {
        let inner = error::lock(&self.inner);
        if !inner.offers_states(self.headed) {
            return Err(PluginError::unsupported(
                "this model offers no token states (CLIP towers and models that end in a \
                 classification head do not)",
            ));
        }
        let hidden = self.hidden as usize;
        if batch.rows == 0 {
            return Ok(TokenStates::from_rows(hidden, &[], Vec::new()));
        }
        self.check(batch)?;
        // Positions the pooling mask keeps beyond the attention mask: BERT-family encoders
        // compute them on request, ModernBERT computes every position; the others' states
        // there are not what transformers computes.
        let unattended = batch.has_pooling_mask()
            && batch
                .pooling_mask
                .iter()
                .zip(batch.attention_mask.iter())
                .any(|(&p, &a)| p != 0 && a == 0);
        if unattended && !matches!(&*inner, Inner::Encoder { .. } | Inner::Modern { .. }) {
            return Err(PluginError::invalid_input(
                "token states of unattended positions (a pooling mask beyond the attention \
                 mask) are computed for BERT-family and ModernBERT encoders only",
            ));
        }
        let lengths = batch.state_lengths();
        let values = self
            .in_parts(&inner, &batch.row_lengths(), |inner, rows| {
                let (ids, types, mask, at) = self.inputs(&parts::rows(batch, rows))?;
                let states = match inner {
                    Inner::Encoder { encoder, .. } => {
                        encoder.forward_at(&ids, &types, &mask, &at)?
                    }
                    other => other.states(&ids, &types, &mask)?,
                };
                let live = at.f_flatten(0, 1)?.f_nonzero()?.f_squeeze_dim(1)?;
                to_vec(
                    &states
                        .f_reshape([-1, self.hidden])?
                        .f_index_select(0, &live)?,
                )
            })
            .map_err(|e| from_tch("computing token states", e))?
            .concat();
        Ok(TokenStates::from_rows(hidden, &lengths, values))
    }

    fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
        if self.labels != 1 {
            return Err(PluginError::unsupported(
                "this model is not a reranker: it has no relevance scores",
            ));
        }
        let logits = self.head_logits(&batch.tokens, "scoring pairs")?;
        Ok(ScoreBatch {
            scores: logits.into(),
        })
    }

    fn classify_tokens(&self, batch: &TokenBatch) -> Result<LogitBatch, PluginError> {
        let logits = self.head_logits(batch, "classifying")?;
        Ok(LogitBatch {
            rows: batch.rows,
            labels: self.labels,
            values: logits.into(),
        })
    }

    fn embed_pixels(&self, batch: &PixelBatch) -> Result<EmbeddingBatch, PluginError> {
        let inner = error::lock(&self.inner);
        let Inner::Clip(_) = &*inner else {
            return Err(PluginError::unsupported(
                "this model has no vision tower: it cannot embed images",
            ));
        };
        let dim = self.hidden as u32;
        if batch.rows == 0 {
            return Ok(EmbeddingBatch::empty(dim));
        }
        let image = [
            batch.channels as i64,
            batch.height as i64,
            batch.width as i64,
        ];
        let size = image.iter().product::<i64>() as usize;
        let values = self
            .in_parts(&inner, &vec![1; batch.rows as usize], |inner, rows| {
                let Inner::Clip(clip) = inner else {
                    return Err(TchError::Kind("a CLIP model without its towers".into()));
                };
                let shape = [rows.len() as i64, image[0], image[1], image[2]];
                let pixels =
                    Tensor::f_from_slice(&batch.values[rows.start * size..rows.end * size])?
                        .f_view(shape)?
                        .f_to_device(self.device)?
                        .f_to_kind(self.kind)?;
                to_vec(&clip.image(&pixels)?)
            })
            .map_err(|e| from_tch("embedding images", e))?
            .concat();
        Ok(EmbeddingBatch {
            rows: batch.rows,
            dim,
            values: values.into(),
        })
    }
}
