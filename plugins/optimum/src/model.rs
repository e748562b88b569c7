//! The kinds of model this backend runs on ONNX graphs: embedders (token states pooled here,
//! or an already pooled output), SPLADE models (a masked-language export's `logits`, reduced
//! here to sparse weights), cross-encoders (a `logits` output, one per pair) and CLIP (a
//! combined graph with `text_embeds` and `image_embeds`, or separate text and vision graphs).

use crate::files;
use crate::graph::{self, Feed, Graph};
use ember_plugin_api::cuda::{self, Placement};
use ember_plugin_api::pooling;
use ember_plugin_api::{
    DType, EmbeddingBatch, ImageSpec, LoadRequest, LoadedModel, LogitBatch, Model, ModelKind,
    Outputs, PairBatch, PixelBatch, PluginError, Pooling, ScoreBatch, SparseBatch, SparseReduction,
    TokenBatch, TokenStates,
};

/// The graphs of a CLIP model.
enum ClipGraphs {
    /// One graph taking text and pixels together (optimum's `feature-extraction` export).
    Combined(Graph),
    /// `text_model.onnx` and `vision_model.onnx` (transformers.js layout).
    Split { text: Graph, vision: Box<Graph> },
}

enum Kind {
    Encoder {
        graph: Graph,
        output: String,
        pooling: Pooling,
        /// Whether the graph's states of positions its attention mask leaves out are what
        /// transformers computes there (BERT-family exports, whose mask only hides keys).
        unattended: bool,
    },
    /// A sequence-classification export (`logits`): a reranker (one label) or a classifier.
    Classifier { graph: Graph, output: String },
    /// A masked-language export (`logits` of every token over the vocabulary), served for a
    /// SPLADE pipeline: its logits are reduced here, never answered whole.
    MaskedLm {
        graph: Graph,
        /// The vocabulary's size, when the graph declares it.
        vocab: Option<usize>,
    },
    Clip {
        graphs: ClipGraphs,
        text_output: String,
        image_output: String,
        image: ImageSpec,
    },
}

/// A loaded ONNX model.
pub struct OnnxModel {
    kind: Kind,
    dim: usize,
    device: String,
    dtype: DType,
    /// The manifest's longest input in tokens (0: not known).
    max_tokens: usize,
}

/// The token inputs of a batch, by the names optimum exports use.
fn token_feeds(batch: &TokenBatch) -> Vec<(&'static str, Feed<'_>)> {
    let shape = vec![batch.rows as i64, batch.seq_len as i64];
    vec![
        ("input_ids", Feed::Int(shape.clone(), &batch.input_ids)),
        (
            "attention_mask",
            Feed::Int(shape.clone(), &batch.attention_mask),
        ),
        ("token_type_ids", Feed::Int(shape, &batch.token_type_ids)),
    ]
}

/// Position ids `0..seq` for every row (rows are right-padded, so each real token's position
/// is its index), for decoder exports that take `position_ids`.
fn positions(batch: &TokenBatch) -> Vec<i64> {
    let seq = batch.seq_len as i64;
    (0..batch.rows).flat_map(|_| 0..seq).collect()
}

/// The inputs of `graph` for a token batch: the token inputs, and for decoder exports the
/// position ids and an empty key/value cache (`past_key_values.*` with a past length of 0).
fn feeds_for<'a>(
    graph: &'a Graph,
    batch: &'a TokenBatch,
    positions: &'a [i64],
) -> Vec<(&'a str, Feed<'a>)> {
    let mut feeds = token_feeds(batch);
    let shape = vec![batch.rows as i64, batch.seq_len as i64];
    feeds.push(("position_ids", Feed::Int(shape, positions)));
    for (name, shape) in graph.empty_cache(batch.rows as usize) {
        feeds.push((name, Feed::Float(shape, &[])));
    }
    feeds
}

/// One-token text fed to a combined CLIP graph when only images are embedded.
const DUMMY_IDS: [i64; 1] = [0];
const DUMMY_MASK: [i64; 1] = [1];

/// The graph among the request's files whose name starts with `prefix`, of the fp16 exports
/// when `half`, else of the others.
fn onnx_files<'a>(request: &'a LoadRequest, prefix: &str, half: bool) -> Option<&'a str> {
    request.files.iter().map(|f| f.as_str()).find(|f| {
        let name = f.rsplit('/').next().unwrap_or(f);
        name.ends_with(".onnx") && name.starts_with(prefix) && files::is_half(name) == half
    })
}

impl OnnxModel {
    /// Refuses, as the caller's error, a batch longer than the model's inputs: the host
    /// truncates to the manifest's `max_input_tokens`, and a graph run past its position
    /// table fails deep inside onnxruntime as an internal error.
    fn check_length(&self, batch: &TokenBatch) -> Result<(), PluginError> {
        let seq = batch.seq_len as usize;
        if self.max_tokens > 0 && seq > self.max_tokens {
            return Err(PluginError::invalid_input(format!(
                "sequences of {seq} tokens are longer than the model's {} (max_input_tokens)",
                self.max_tokens
            )));
        }
        Ok(())
    }

    /// The classification head's logits of every row, row-major `[rows, labels]`.
    fn logits(&self, tokens: &TokenBatch) -> Result<Vec<f32>, PluginError> {
        let Kind::Classifier { graph, output } = &self.kind else {
            return Err(PluginError::unsupported(
                "this model has no classification head: it neither scores pairs nor classifies",
            ));
        };
        let rows = tokens.rows as usize;
        if rows == 0 {
            return Ok(Vec::new());
        }
        self.check_length(tokens)?;
        let positions = positions(tokens);
        let out = graph.run(feeds_for(graph, tokens, &positions), output)?;
        let labels = self.dim;
        match out.shape.as_slice() {
            [r] if *r as usize == rows && labels == 1 => {}
            [r, k] if *r as usize == rows && *k as usize == labels => {}
            other => {
                return Err(PluginError::internal(format!(
                    "{} answers logits of shape {other:?} for {rows} rows; the model's config \
                     declares {labels} labels",
                    graph.path
                )))
            }
        }
        Ok(out.data)
    }

    /// Opens the graphs of the model in `request` for its kind, on the device the preflight
    /// chose; under `DEVICE=auto`, on the CPU (with its own precision's graphs) if the GPU
    /// fails when the sessions are created, where a missing library or kernel shows.
    pub fn load(request: &LoadRequest) -> Result<Self, PluginError> {
        let placement = graph::placement(request)?;
        let (model, _) = cuda::or_cpu("optimum", request.device, placement, |on| {
            Self::load_on(request, on)
        })?;
        Ok(model)
    }

    /// Opens the graphs of the model in `request` on `placement`.
    fn load_on(request: &LoadRequest, placement: Placement) -> Result<Self, PluginError> {
        let manifest = &request.manifest;
        let names: Vec<&str> = request.files.iter().map(|f| f.as_str()).collect();
        let dtype = files::precision(request.dtype, placement != Placement::Cpu, &names);
        let half = dtype == DType::Fp16;
        let single = || {
            onnx_files(request, "model", half).ok_or_else(|| {
                PluginError::unsupported(
                    "no model*.onnx file among the selected files (text_model/vision_model \
                     graphs are read for CLIP models only)",
                )
            })
        };
        let (kind, dim, device) = match manifest.kind {
            ModelKind::Embed if manifest.architecture.ends_with("ForMaskedLM") => {
                let graph = Graph::open(request, single()?, placement)?;
                graph.require_inputs(&["input_ids", "attention_mask"])?;
                if !graph.output_names().contains(&"logits") {
                    return Err(PluginError::unsupported(format!(
                        "{} is the export of a masked-language model ({}) without a `logits` \
                         output; export it with optimum's fill-mask task for SPLADE",
                        graph.path, manifest.architecture
                    )));
                }
                let (_, vocab) = graph.pick_output(&["logits"])?;
                let device = graph.device.clone();
                let vocab = vocab.map(|v| v as usize);
                (
                    Kind::MaskedLm { graph, vocab },
                    manifest.hidden_size as usize,
                    device,
                )
            }
            ModelKind::Embed => {
                let graph = Graph::open(request, single()?, placement)?;
                graph.require_inputs(&["input_ids", "attention_mask"])?;
                let names = graph.output_names();
                if !names.contains(&"last_hidden_state") && names.contains(&"logits") {
                    // A text-generation export: its states never leave the graph.
                    return Err(PluginError::unsupported(format!(
                        "{} is a text-generation export (a `logits` output, no \
                         `last_hidden_state`); export the model with optimum's \
                         feature-extraction task for embeddings",
                        graph.path
                    )));
                }
                let (output, declared) = graph.pick_output(&["last_hidden_state"])?;
                if !manifest.include_prompt && !states_output(&output) {
                    return Err(PluginError::unsupported(format!(
                        "the model's pooling leaves the prompt's tokens out \
                         (include_prompt: false), which needs token states, but {} returns \
                         `{output}`; export it with a `last_hidden_state` output",
                        graph.path
                    )));
                }
                let dim = declared.map_or(manifest.hidden_size as usize, |d| d as usize);
                let device = graph.device.clone();
                let pooling = manifest.pooling;
                let unattended = KEY_MASKED.contains(&manifest.model_type.as_str());
                (
                    Kind::Encoder {
                        graph,
                        output,
                        pooling,
                        unattended,
                    },
                    dim,
                    device,
                )
            }
            ModelKind::Rerank | ModelKind::Classify => {
                if manifest.architecture.ends_with("ForCausalLM") {
                    return Err(PluginError::unsupported(format!(
                        "{} is a causal language model scored by its \"yes\" / \"no\" logits \
                         (Qwen3-Reranker); the optimum backend runs rerankers exported as \
                         sequence classifiers. Serve it with BACKEND=torch, or export its \
                         Qwen3ForSequenceClassification conversion",
                        manifest.architecture
                    )));
                }
                let graph = Graph::open(request, single()?, placement)?;
                graph.require_inputs(&["input_ids", "attention_mask"])?;
                let (output, _) = graph.pick_output(&["logits"])?;
                let device = graph.device.clone();
                let labels = manifest.num_labels.max(1) as usize;
                (Kind::Classifier { graph, output }, labels, device)
            }
            ModelKind::Clip => Self::load_clip(request, placement, half)?,
        };
        let model = OnnxModel {
            kind,
            dim,
            device,
            dtype,
            max_tokens: manifest.max_input_tokens as usize,
        };
        if let Kind::Clip { .. } = model.kind {
            // The projection size is not in the manifest: ask the graph.
            let probe = TokenBatch {
                rows: 1,
                seq_len: 1,
                input_ids: DUMMY_IDS.to_vec().into(),
                attention_mask: DUMMY_MASK.to_vec().into(),
                token_type_ids: vec![0i64].into(),
                pooling_mask: Default::default(),
            };
            let text_dim = model.embed_tokens(&probe)?.dim as usize;
            return Ok(OnnxModel {
                dim: text_dim,
                ..model
            });
        }
        Ok(model)
    }

    fn load_clip(
        request: &LoadRequest,
        placement: Placement,
        half: bool,
    ) -> Result<(Kind, usize, String), PluginError> {
        let image = request
            .manifest
            .image
            .clone()
            .into_option()
            .ok_or_else(|| {
                PluginError::invalid_input("a CLIP model needs the image spec in its manifest")
            })?;
        let split = (
            onnx_files(request, "text_model", half),
            onnx_files(request, "vision_model", half),
        );
        let graphs = match split {
            (Some(t), Some(v)) => {
                let text = Graph::open(request, t, placement)?;
                text.require_inputs(&["input_ids"])?;
                let vision = Graph::open(request, v, placement)?;
                vision.require_inputs(&["pixel_values"])?;
                ClipGraphs::Split {
                    text,
                    vision: Box::new(vision),
                }
            }
            _ => {
                let file = onnx_files(request, "model", half).ok_or_else(|| {
                    PluginError::unsupported(
                        "a CLIP model needs onnx/model.onnx (text and vision in one graph) or \
                         onnx/text_model.onnx with onnx/vision_model.onnx",
                    )
                })?;
                let graph = Graph::open(request, file, placement)?;
                graph.require_inputs(&["input_ids", "pixel_values"])?;
                ClipGraphs::Combined(graph)
            }
        };
        let (text_graph, vision_graph) = match &graphs {
            ClipGraphs::Combined(g) => (g, g),
            ClipGraphs::Split { text, vision } => (text, &**vision),
        };
        let find = |g: &Graph, name: &str| -> Result<String, PluginError> {
            let names = g.output_names();
            match (names.contains(&name), &graphs) {
                (true, _) => Ok(name.to_string()),
                // Split graphs may name their one projected output differently.
                (false, ClipGraphs::Split { .. }) => Ok(g.pick_output(&[name])?.0),
                (false, ClipGraphs::Combined(_)) => Err(PluginError::unsupported(format!(
                    "{} has no `{name}` output (outputs: {})",
                    g.path,
                    names.join(", ")
                ))),
            }
        };
        let text_output = find(text_graph, "text_embeds")?;
        let image_output = find(vision_graph, "image_embeds")?;
        let device = text_graph.device.clone();
        Ok((
            Kind::Clip {
                graphs,
                text_output,
                image_output,
                image,
            },
            0,
            device,
        ))
    }
}

/// Model types whose exports' attention masks hide keys only, so that a position the mask
/// leaves out still reads the others, as transformers computes it (ColBERT's unattended
/// query expansion). Others (ModernBERT's exports) are not offered unattended states.
const KEY_MASKED: [&str; 7] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "mpnet",
    "electra",
];

/// Most logits one masked-language run may return (64 Mi floats, 256 MiB).
const LOGITS_PER_RUN: usize = 64 << 20;

/// Rows `first..end` of a batch, as a batch of their own.
fn rows_of_batch(batch: &TokenBatch, first: usize, end: usize) -> TokenBatch {
    let s = batch.seq_len as usize;
    let cut = |v: &[i64]| v[first * s..end * s].to_vec().into();
    TokenBatch {
        rows: (end - first) as u32,
        seq_len: batch.seq_len,
        input_ids: cut(&batch.input_ids),
        attention_mask: cut(&batch.attention_mask),
        token_type_ids: cut(&batch.token_type_ids),
        pooling_mask: Default::default(),
    }
}

/// SPLADE's weights of one row from its tokens' logits (`vocab` each): `log(1 + relu(x))`
/// (twice `log1p` when asked), reduced per entry by max or sum; the non-zero entries, ids
/// ascending.
fn reduce<'a>(
    tokens: impl Iterator<Item = &'a [f32]>,
    vocab: usize,
    reduction: SparseReduction,
) -> (Vec<u32>, Vec<f32>) {
    let mut acc = vec![0f32; vocab];
    for logits in tokens {
        for (a, &x) in acc.iter_mut().zip(logits) {
            let mut w = x.max(0.0).ln_1p();
            if reduction.log1p_twice {
                w = w.ln_1p();
            }
            *a = if reduction.sum { *a + w } else { a.max(w) };
        }
    }
    acc.iter()
        .enumerate()
        .filter(|(_, w)| **w > 0.0)
        .map(|(i, w)| (i as u32, *w))
        .unzip()
}

/// Whether a graph output named `output` is token states (not a pooled embedding).
fn states_output(output: &str) -> bool {
    matches!(output, "last_hidden_state" | "token_embeddings")
}

/// Checks that a graph output holds one row of `dim` values per input.
fn rows_of(shape: &[i64], data: Vec<f32>, rows: usize) -> Result<EmbeddingBatch, PluginError> {
    match shape {
        [r, d] if *r as usize == rows && data.len() == rows * *d as usize => Ok(EmbeddingBatch {
            rows: rows as u32,
            dim: *d as u32,
            values: data.into(),
        }),
        other => Err(PluginError::internal(format!(
            "unexpected output shape {other:?} for {rows} inputs"
        ))),
    }
}

impl Model for OnnxModel {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: self.dim as u32,
            device: self.device.clone().into(),
            dtype: self.dtype,
            concurrent_calls: false,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let rows = batch.rows as usize;
        let seq = batch.seq_len as usize;
        if rows == 0 {
            return Ok(EmbeddingBatch::empty(self.dim as u32));
        }
        self.check_length(batch)?;
        match &self.kind {
            Kind::Encoder {
                graph,
                output,
                pooling,
                ..
            } => {
                let positions = positions(batch);
                let out = graph.run(feeds_for(graph, batch, &positions), output)?;
                match out.shape.as_slice() {
                    // Token states: pool them here.
                    [r, s, h] if *r as usize == rows && *s as usize == seq => {
                        let values = pooling::pool(
                            *pooling,
                            &out.data,
                            batch.pooling_mask(),
                            rows,
                            seq,
                            *h as usize,
                        );
                        rows_of(&[rows as i64, *h], values, rows)
                    }
                    // Already pooled (exports with a sentence_embedding output).
                    _ if batch.has_pooling_mask() => Err(PluginError::unsupported(format!(
                        "{} pools inside the graph, so it cannot leave the prompt's tokens \
                         out of pooling",
                        graph.path
                    ))),
                    _ => rows_of(&out.shape, out.data, rows),
                }
            }
            Kind::Clip {
                graphs,
                text_output,
                image,
                ..
            } => {
                if batch.has_pooling_mask() {
                    return Err(PluginError::unsupported(
                        "a CLIP text tower pools its own way; it takes no pooling mask",
                    ));
                }
                let mut feeds = token_feeds(batch);
                let graph = match graphs {
                    ClipGraphs::Split { text, .. } => text,
                    ClipGraphs::Combined(g) => {
                        // The combined graph needs an image too: one blank one.
                        let zeros = vec![0f32; 3 * (image.height * image.width) as usize];
                        let shape = vec![1, 3, image.height as i64, image.width as i64];
                        let out = g.run(
                            feeds
                                .drain(..)
                                .chain([("pixel_values", Feed::Float(shape, &zeros))])
                                .collect(),
                            text_output,
                        )?;
                        return rows_of(&out.shape, out.data, rows);
                    }
                };
                let out = graph.run(feeds, text_output)?;
                rows_of(&out.shape, out.data, rows)
            }
            Kind::Classifier { .. } => Err(PluginError::unsupported(
                "this model ends in a classification head: it has no embeddings",
            )),
            Kind::MaskedLm { .. } => Err(PluginError::unsupported(
                "this is a masked-language export: it answers sparse weights, not embeddings",
            )),
        }
    }

    fn outputs(&self) -> Outputs {
        match &self.kind {
            Kind::MaskedLm { .. } => Outputs::SPARSE,
            // The graph computes every position, attention reading the masked ones only.
            Kind::Encoder {
                output,
                unattended: true,
                ..
            } if states_output(output) => Outputs::TOKEN_STATES.with(Outputs::UNATTENDED_STATES),
            Kind::Encoder { output, .. } if states_output(output) => Outputs::TOKEN_STATES,
            _ => Outputs::NONE,
        }
    }

    fn token_states(&self, batch: &TokenBatch) -> Result<TokenStates, PluginError> {
        let Kind::Encoder {
            graph,
            output,
            unattended,
            ..
        } = &self.kind
        else {
            return Err(PluginError::unsupported(
                "this model offers no token states (CLIP graphs and classifiers do not)",
            ));
        };
        let beyond = batch
            .pooling_mask()
            .iter()
            .zip(batch.attention_mask.iter())
            .any(|(&p, &a)| p != 0 && a == 0);
        if beyond && !unattended {
            return Err(PluginError::invalid_input(
                "token states of unattended positions (a pooling mask beyond the attention \
                 mask) are offered for BERT-family exports only",
            ));
        }
        if !states_output(output) {
            return Err(PluginError::unsupported(format!(
                "{} returns `{output}`, pooled inside the graph: it offers no token states",
                graph.path
            )));
        }
        let lengths = batch.state_lengths();
        if batch.rows == 0 {
            return Ok(TokenStates::from_rows(self.dim, &lengths, Vec::new()));
        }
        self.check_length(batch)?;
        let (rows, seq) = (batch.rows as usize, batch.seq_len as usize);
        let positions = positions(batch);
        let out = graph.run(feeds_for(graph, batch, &positions), output)?;
        let hidden = match out.shape.as_slice() {
            [r, s, h] if *r as usize == rows && *s as usize == seq => *h as usize,
            other => {
                return Err(PluginError::internal(format!(
                    "{} returned `{output}` of shape {other:?} for {rows} rows of {seq} tokens",
                    graph.path
                )))
            }
        };
        let values = out
            .data
            .chunks_exact(hidden)
            .zip(batch.pooling_mask().iter())
            .filter(|(_, m)| **m != 0)
            .flat_map(|(state, _)| state.iter().copied())
            .collect();
        Ok(TokenStates::from_rows(hidden, &lengths, values))
    }

    fn sparse(
        &self,
        batch: &TokenBatch,
        reduction: SparseReduction,
    ) -> Result<SparseBatch, PluginError> {
        let Kind::MaskedLm { graph, vocab } = &self.kind else {
            return Err(PluginError::unsupported(
                "this model is not a masked-language export: it produces no sparse weights",
            ));
        };
        let (rows, seq) = (batch.rows as usize, batch.seq_len as usize);
        if rows == 0 {
            return Ok(SparseBatch::from_rows(Vec::new()));
        }
        self.check_length(batch)?;
        // The logits of a run are rows x seq x vocab floats: rows go through in groups that
        // keep them within LOGITS_PER_RUN.
        let per_run = (LOGITS_PER_RUN / (seq.max(1) * vocab.unwrap_or(32_000).max(1))).max(1);
        let mut out = Vec::with_capacity(rows);
        for first in (0..rows).step_by(per_run) {
            let part = rows_of_batch(batch, first, (first + per_run).min(rows));
            let positions = positions(&part);
            let logits = graph.run(feeds_for(graph, &part, &positions), "logits")?;
            let n = part.rows as usize;
            let v = match logits.shape.as_slice() {
                [r, s, v] if *r as usize == n && *s as usize == seq && *v > 0 => *v as usize,
                other => {
                    return Err(PluginError::internal(format!(
                        "{} answered logits of shape {other:?} for {n} rows of {seq} tokens",
                        graph.path
                    )))
                }
            };
            for r in 0..n {
                let mask = &part.attention_mask[r * seq..(r + 1) * seq];
                let rows = logits.data[r * seq * v..(r + 1) * seq * v].chunks_exact(v);
                out.push(reduce(
                    rows.zip(mask).filter(|(_, m)| **m != 0).map(|(l, _)| l),
                    v,
                    reduction,
                ));
            }
        }
        Ok(SparseBatch::from_rows(out))
    }

    fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
        if self.dim != 1 {
            return Err(PluginError::unsupported(
                "this model is not a reranker: it has no relevance scores",
            ));
        }
        Ok(ScoreBatch {
            scores: self.logits(&batch.tokens)?.into(),
        })
    }

    fn classify_tokens(&self, batch: &TokenBatch) -> Result<LogitBatch, PluginError> {
        Ok(LogitBatch {
            rows: batch.rows,
            labels: self.dim as u32,
            values: self.logits(batch)?.into(),
        })
    }

    fn embed_pixels(&self, batch: &PixelBatch) -> Result<EmbeddingBatch, PluginError> {
        let Kind::Clip {
            graphs,
            image_output,
            image,
            ..
        } = &self.kind
        else {
            return Err(PluginError::unsupported(
                "this model has no vision tower: it cannot embed images",
            ));
        };
        let rows = batch.rows as usize;
        if rows == 0 {
            return Ok(EmbeddingBatch::empty(self.dim as u32));
        }
        if (batch.channels, batch.height, batch.width) != (3, image.height, image.width) {
            return Err(PluginError::invalid_input(format!(
                "images must be 3x{}x{}, got {}x{}x{}",
                image.height, image.width, batch.channels, batch.height, batch.width
            )));
        }
        let shape = vec![rows as i64, 3, batch.height as i64, batch.width as i64];
        let mut feeds = vec![("pixel_values", Feed::Float(shape, &batch.values))];
        let graph = match graphs {
            ClipGraphs::Split { vision, .. } => vision,
            ClipGraphs::Combined(g) => {
                feeds.push(("input_ids", Feed::Int(vec![1, 1], &DUMMY_IDS)));
                feeds.push(("attention_mask", Feed::Int(vec![1, 1], &DUMMY_MASK)));
                g
            }
        };
        let out = graph.run(feeds, image_output)?;
        rows_of(&out.shape, out.data, rows)
    }
}
