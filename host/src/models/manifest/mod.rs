//! Reading a model directory's configuration files into a manifest.
//!
//! Files read: `config.json` (architecture, sizes, labels, vision config), `modules.json`
//! (the sentence-transformers pipeline: where the Pooling module lives, its Dense modules,
//! whether a Normalize module follows; any other module is refused), the Pooling module's
//! `config.json` (both the classic `pooling_mode_*_token(s)` flags and the newer
//! `pooling_mode` string, and `include_prompt`), `config_sentence_transformers.json` (prompts),
//! `sentence_bert_config.json` (`max_seq_length`) and `tokenizer_config.json`
//! (`model_max_length`, used when sentence-transformers wrote no `max_seq_length`), and for
//! CLIP-like models `preprocessor_config.json` (the image preprocessing).

use super::bge_m3::{self, Lexical};
use super::dense::{Dense, Head};
use super::multi_vector::{self, MultiVector, Sources};
use super::ModelError;
use crate::images::Preprocessor;
use crate::text::PairTemplate;
use abi_stable::std_types::{RNone, RSome, RString};
use ember_plugin_api::{ImageSpec, ModelKind, ModelManifest, Pooling, SparseReduction};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A manifest plus facts the host keeps for itself.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// What the plugin receives.
    pub abi: ModelManifest,
    /// Whether the sentence-transformers pipeline ends with a Normalize module.
    pub normalized_by_model: bool,
    /// The pipeline's Dense modules, applied by the host to the pooled vectors.
    pub head: Head,
    /// sentence-transformers' prompts, by name (`config_sentence_transformers.json`).
    pub prompts: BTreeMap<String, String>,
    /// The prompt applied when a request names none.
    pub default_prompt_name: Option<String>,
    /// Image preprocessing of CLIP-like models.
    pub preprocessor: Option<Preprocessor>,
    /// How a reranker scoring one formatted sequence reads its pairs (Qwen3-Reranker).
    pub pair_template: Option<PairTemplate>,
    /// A classifier's labels and how its logits become scores.
    pub classes: Option<Classes>,
    /// A SPLADE pipeline's reduction of its masked-language logits (`SpladePooling`): the
    /// model's embeddings are sparse vocabulary weights, not dense vectors.
    pub sparse: Option<SparseReduction>,
    /// A SPLADE model's `max_active_dims`: only its largest weights are kept.
    pub sparse_top_k: Option<usize>,
    /// A late-interaction pipeline, made from the model's token states: its embeddings (one
    /// vector per token, ColBERT), or an output besides its dense ones (bge-m3's).
    pub multi_vector: Option<MultiVector>,
    /// bge-m3's lexical head: sparse weights made from the model's token states.
    pub lexical: Option<Lexical>,
}

impl Manifest {
    /// Whether the model's embeddings are one vector per token (a ColBERT model).
    pub fn is_multi_vector(&self) -> bool {
        self.primary_multi_vector().is_some()
    }

    /// The late-interaction pipeline that makes the model's embeddings (a ColBERT model's).
    pub fn primary_multi_vector(&self) -> Option<&MultiVector> {
        self.multi_vector.as_ref().filter(|m| m.primary)
    }
}

/// A sequence classifier's labels (`id2label`) and its problem type.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    /// The label of each logit, by index.
    pub labels: Vec<String>,
    /// `problem_type: multi_label_classification`: each label scored on its own (sigmoid)
    /// instead of all of them together (softmax).
    pub multi_label: bool,
}

impl Classes {
    /// Reads `id2label` (or `num_labels`, naming them `LABEL_<i>` as transformers does) and
    /// `problem_type` from a `config.json`.
    pub fn from_config(config: &Value) -> Result<Classes, String> {
        let count = label_count(config) as usize;
        let mut labels: Vec<String> = (0..count).map(|i| format!("LABEL_{i}")).collect();
        if let Some(map) = config.get("id2label").and_then(Value::as_object) {
            for (key, label) in map {
                let index = key
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < count)
                    .ok_or_else(|| format!("id2label has key {key:?}; keys must be 0..{count}"))?;
                labels[index] = label
                    .as_str()
                    .ok_or_else(|| format!("id2label[{key:?}] is not a string"))?
                    .to_string();
            }
        }
        let multi_label = config.get("problem_type").and_then(Value::as_str)
            == Some("multi_label_classification");
        Ok(Classes {
            labels,
            multi_label,
        })
    }
}

/// Labels of a sequence classifier: `id2label`'s size, else `num_labels`, else 1.
fn label_count(config: &Value) -> u64 {
    config
        .get("id2label")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .map(|m| m.len() as u64)
        .or_else(|| uint(config, "num_labels"))
        .unwrap_or(1)
}

fn read_json(name: &str, dir: &Path, file: &str) -> Result<Option<Value>, ModelError> {
    let path = dir.join(file);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Config {
        name: name.into(),
        file: file.into(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Config {
            name: name.into(),
            file: file.into(),
            reason: format!("invalid JSON: {e}"),
        })
}

fn uint(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// The `architectures` a config lists.
fn architectures_of(config: &Value) -> Vec<&str> {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Decides the model kind the way Infinity does: a sequence classifier with one label is a
/// reranker, with more a classifier; a config with a vision tower is CLIP-like, anything
/// else an embedder.
pub fn kind_of(config: &Value) -> ModelKind {
    let archs = architectures_of(config);
    let classifier = archs
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"));
    if classifier && label_count(config) <= 1 {
        ModelKind::Rerank
    } else if classifier {
        ModelKind::Classify
    } else if config.get("vision_config").is_some() {
        ModelKind::Clip
    } else {
        ModelKind::Embed
    }
}

/// Reads a Pooling module config in either of sentence-transformers' two formats.
pub fn pooling_of(pool: &Value) -> Result<Pooling, String> {
    if let Some(mode) = pool.get("pooling_mode").and_then(Value::as_str) {
        return match mode {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            "max" => Ok(Pooling::Max),
            "lasttoken" => Ok(Pooling::LastToken),
            "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
            other => Err(format!(
                "pooling_mode {other:?} is not supported (cls, mean, max, lasttoken, \
                 mean_sqrt_len_tokens are)"
            )),
        };
    }
    let on = |k: &str| pool.get(k).and_then(Value::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_max_tokens", Pooling::Max),
        ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
        ("pooling_mode_lasttoken", Pooling::LastToken),
    ];
    let chosen: Vec<Pooling> = modes
        .iter()
        .filter(|(k, _)| on(k))
        .map(|(_, p)| *p)
        .collect();
    if on("pooling_mode_weightedmean_tokens") {
        return Err("weighted-mean pooling is not supported".into());
    }
    match chosen.as_slice() {
        [one] => Ok(*one),
        [] => Err("no pooling mode is enabled".into()),
        _ => Err("several pooling modes at once (concatenated vectors) are not supported".into()),
    }
}

/// Reads a `SpladePooling` config (sentence-transformers' defaults where it is silent: max
/// over the tokens, relu).
pub fn splade_of(pool: &Value) -> Result<SparseReduction, String> {
    let sum = match pool.get("pooling_strategy").and_then(Value::as_str) {
        None | Some("max") => false,
        Some("sum") => true,
        Some(other) => return Err(format!("pooling_strategy {other:?}: expected max or sum")),
    };
    let log1p_twice = match pool.get("activation_function").and_then(Value::as_str) {
        None | Some("relu") => false,
        Some("log1p_relu") => true,
        Some(other) => {
            return Err(format!(
                "activation_function {other:?}: expected relu or log1p_relu"
            ))
        }
    };
    Ok(SparseReduction { sum, log1p_twice })
}

/// Reads the manifest of the model in `dir`; `name` is used in messages.
pub fn read(name: &str, dir: &Path) -> Result<Manifest, ModelError> {
    let err = |file: &str, reason: String| ModelError::Config {
        name: name.into(),
        file: file.into(),
        reason,
    };
    let config = read_json(name, dir, "config.json")?
        .ok_or_else(|| err("config.json", "missing (every model needs one)".into()))?;
    // Qwen3-Reranker is published as a causal language model that answers "yes" or "no":
    // without a sentence-transformers pipeline (which makes Qwen3-Embedding an embedder),
    // it is a reranker scored on those two tokens, its pairs in the model card's template.
    let lm_reranker = architectures_of(&config).contains(&"Qwen3ForCausalLM")
        && !dir.join("modules.json").is_file();
    let kind = if lm_reranker {
        ModelKind::Rerank
    } else {
        kind_of(&config)
    };
    let pair_template = lm_reranker.then(PairTemplate::qwen3_reranker);
    let text_config = config.get("text_config").unwrap_or(&config);
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    // sentence-transformers pipeline: pooling, Dense modules and normalisation. A module
    // ember does not implement is refused: skipping it would give wrong vectors silently.
    let mut pooling = Pooling::Mean;
    let mut normalized_by_model = false;
    let mut dense = Vec::new();
    let mut pooling_reads_prompt = true;
    let mut sparse = None;
    // The module before the current one, to check that SPLADE's modules come as a pair.
    let mut previous = "";
    let st_config = read_json(name, dir, "config_sentence_transformers.json")?;
    // A late-interaction pipeline's Dense modules map each token's state, and its
    // MultiVectorMask says which tokens keep a vector.
    let mut late = false;
    let mut late_mask = None;
    // A cross-encoder's head is part of its transformer (sequence classification).
    let pipeline = match kind {
        ModelKind::Rerank | ModelKind::Classify => None,
        _ => read_json(name, dir, "modules.json")?,
    };
    // Stanford ColBERT (colbert-ir/colbertv2.0) has no pipeline: its settings are in
    // artifact.metadata (defaults where it is missing, as sentence-transformers reads it) and
    // its projection is among the checkpoint's weights.
    let stanford = match multi_vector::is_stanford(&config) && pipeline.is_none() {
        false => None,
        true => {
            let metadata = read_json(name, dir, multi_vector::STANFORD_METADATA)?;
            late = true;
            dense.push(Dense::from_checkpoint(dir, "linear.weight").map_err(|(f, r)| err(&f, r))?);
            let settings =
                multi_vector::stanford_settings(metadata.as_ref().unwrap_or(&Value::Null))
                    .map_err(|r| err(multi_vector::STANFORD_METADATA, r))?;
            Some(settings)
        }
    };
    if let Some(modules) = pipeline {
        let list = modules
            .as_array()
            .ok_or_else(|| err("modules.json", "expected a list of modules".into()))?;
        let types: Vec<&str> = list
            .iter()
            .filter_map(|m| m.get("type").and_then(Value::as_str))
            .map(|t| t.rsplit('.').next().unwrap_or_default())
            .collect();
        late = multi_vector::declared(st_config.as_ref(), &types);
        for m in list {
            let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
            let path = m.get("path").and_then(Value::as_str).unwrap_or_default();
            if normalized_by_model {
                return Err(err(
                    "modules.json",
                    format!(
                        "module {ty} ({path}) follows Normalize; ember supports Normalize as \
                         the last module only"
                    ),
                ));
            }
            let module = ty.rsplit('.').next().unwrap_or_default();
            let misplaced = match (previous, module) {
                ("SpladePooling", _) => Some("follows SpladePooling, which must be last"),
                ("MLMTransformer", m) if m != "SpladePooling" => {
                    Some("follows MLMTransformer, whose logits only SpladePooling reads")
                }
                (p, "SpladePooling") if p != "MLMTransformer" && p != "Transformer" => {
                    Some("must follow the (MLM) transformer directly")
                }
                _ => None,
            };
            if let Some(why) = misplaced {
                return Err(err(
                    "modules.json",
                    format!("module {ty} ({path}) {why}: a SPLADE pipeline is an MLMTransformer and a SpladePooling"),
                ));
            }
            previous = module;
            match module {
                // A SPLADE model's transformer returns its masked-language logits.
                "Transformer" | "MLMTransformer" => {}
                "SpladePooling" => {
                    let file = format!("{path}/config.json");
                    let pool = read_json(name, dir, &file)?.unwrap_or(Value::Null);
                    sparse = Some(splade_of(&pool).map_err(|r| err(&file, r))?);
                }
                // CLIP-like models run their towers as a whole, as CLIPModel does.
                "CLIPModel" if kind == ModelKind::Clip => {}
                "Pooling" if late => {
                    return Err(err(
                        "modules.json",
                        format!(
                            "module {ty} ({path}) pools a late-interaction model's tokens, \
                             whose vectors are one per token"
                        ),
                    ))
                }
                "MultiVectorMask" if late => {
                    let file = format!("{path}/config.json");
                    let config = read_json(name, dir, &file)?.unwrap_or(Value::Null);
                    late_mask = Some((file, config));
                }
                "Pooling" => {
                    let file = format!("{path}/config.json");
                    let pool = read_json(name, dir, &file)?
                        .ok_or_else(|| err(&file, "missing (named by modules.json)".into()))?;
                    pooling = pooling_of(&pool).map_err(|r| err(&file, r))?;
                    pooling_reads_prompt = pool
                        .get("include_prompt")
                        .and_then(Value::as_bool)
                        .unwrap_or(true);
                }
                "Dense" => {
                    let stream = match late {
                        true => "token_embeddings",
                        false => "sentence_embedding",
                    };
                    dense.push(Dense::read(name, dir, path, stream)?)
                }
                "Normalize" => normalized_by_model = true,
                _ => {
                    return Err(err(
                        "modules.json",
                        format!(
                            "module {ty:?} ({path}) is not one ember implements (Transformer, \
                             Pooling, Dense, Normalize, MLMTransformer, SpladePooling, \
                             MultiVectorMask); serving \
                             the model without it would give wrong vectors"
                        ),
                    ))
                }
            }
        }
    }

    // Prompts prepended to the texts, as SentenceTransformer.encode(prompt_name=...) does.
    let mut prompts: BTreeMap<String, String> = st_config
        .as_ref()
        .and_then(|c| c.get("prompts"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let sparse_top_k = match st_config.as_ref().and_then(|c| c.get("max_active_dims")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(k) if k > 0 => Some(k as usize),
            _ => {
                return Err(err(
                    "config_sentence_transformers.json",
                    format!("max_active_dims must be a positive integer, got {v}"),
                ))
            }
        },
    };
    let default_prompt_name = st_config
        .as_ref()
        .and_then(|c| c.get("default_prompt_name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let file = "config_sentence_transformers.json";
    if let Some(d) = &default_prompt_name {
        if !prompts.contains_key(d) {
            return Err(err(
                file,
                format!("default_prompt_name {d:?} is not among its prompts"),
            ));
        }
    }
    // Pooling that leaves the prompt's tokens out (include_prompt: false) matters only when
    // there is a prompt to leave out; plugins are told so only then.
    let include_prompt = pooling_reads_prompt || prompts.values().all(|p| p.is_empty());

    // Longest input: sentence-transformers' max_seq_length, else the tokenizer's
    // model_max_length, capped by the position embeddings.
    // (GPT-2's key names, as Nomic BERT's config uses them, after transformers' own.)
    let positions = uint(text_config, "max_position_embeddings")
        .or_else(|| uint(text_config, "n_positions"))
        .map(|p| {
            // RoBERTa-family models (and MPNet) reserve two positions for the padding offset.
            if matches!(
                model_type.as_str(),
                "roberta" | "xlm-roberta" | "camembert" | "mpnet"
            ) {
                p.saturating_sub(2)
            } else {
                p
            }
        });
    let st_model = read_json(name, dir, "sentence_bert_config.json")?;
    let st_max = st_model.as_ref().and_then(|v| uint(v, "max_seq_length"));
    let tokenizer_config = read_json(name, dir, "tokenizer_config.json")?;
    let tok_max = tokenizer_config
        .as_ref()
        .and_then(|v| uint(v, "model_max_length"))
        .filter(|&v| v < 1_000_000);
    let special = read_json(name, dir, "special_tokens_map.json")?;
    let token = |key: &str| {
        multi_vector::special_token(&[tokenizer_config.as_ref(), special.as_ref()], key)
    };
    let (lexical, extra_vectors) = match kind {
        ModelKind::Embed if !late && sparse.is_none() => {
            let special = ["cls_token", "eos_token", "pad_token", "unk_token"]
                .into_iter()
                .filter_map(token)
                .collect();
            bge_m3::read(dir, special).map_err(|(file, r)| err(&file, r))?
        }
        _ => (None, None),
    };
    let mask_token = token("mask_token").or_else(|| token("eos_token"));
    if stanford.is_some() && mask_token.is_none() {
        return Err(err(
            "tokenizer_config.json",
            "names no mask token (nor special_tokens_map.json), which a Stanford ColBERT \
             checkpoint expands its queries with"
                .into(),
        ));
    }
    let multi_vector = match late {
        false => extra_vectors,
        true => {
            let mut mv = multi_vector::read(
                Sources {
                    st_config: stanford.as_ref().or(st_config.as_ref()),
                    st_file: match stanford {
                        Some(_) => multi_vector::STANFORD_METADATA,
                        None => "config_sentence_transformers.json",
                    },
                    transformer: st_model.as_ref(),
                    mask: late_mask.as_ref().map(|(f, c)| (f.as_str(), c)),
                    prompts: &prompts,
                    mask_token,
                },
                Head(std::mem::take(&mut dense)),
                normalized_by_model,
            )
            .map_err(|(file, r)| err(&file, r))?;
            mv.spec.max_positions = positions.map(|p| p as usize);
            // The markers are the model's query and document prompts.
            for (side, prefix) in [
                ("query", &mv.spec.query_prefix),
                ("document", &mv.spec.document_prefix),
            ] {
                if !prefix.is_empty() {
                    prompts.insert(side.to_string(), prefix.clone());
                }
            }
            Some(mv)
        }
    };
    let mut max_input_tokens = st_max
        .or(tok_max)
        .or(positions)
        .unwrap_or(512)
        .min(positions.unwrap_or(u64::MAX));
    // A late-interaction model's side lengths override max_seq_length, as
    // sentence-transformers applies them (GTE-ModernColBERT: 299, and documents of 300).
    if let Some(s) = multi_vector.as_ref().filter(|m| m.primary).map(|m| &m.spec) {
        let sides = [
            s.query_length,
            s.document_length,
            s.expansion.as_ref().map(|e| e.length),
        ];
        let longest = sides.into_iter().flatten().max().unwrap_or(0) as u64;
        max_input_tokens = max_input_tokens
            .max(longest)
            .min(positions.unwrap_or(u64::MAX));
    }

    let hidden_size = uint(text_config, "hidden_size")
        .or_else(|| uint(text_config, "d_model"))
        .or_else(|| uint(text_config, "dim"))
        .or_else(|| uint(text_config, "n_embd"))
        .unwrap_or(0);
    let classes = match kind {
        ModelKind::Classify => {
            Some(Classes::from_config(&config).map_err(|r| err("config.json", r))?)
        }
        _ => None,
    };
    let num_labels = match (kind, &classes) {
        (ModelKind::Rerank, _) => 1,
        (_, Some(c)) => c.labels.len() as u32,
        _ => 0,
    };
    let preprocessor = match kind {
        ModelKind::Clip => {
            let file = "preprocessor_config.json";
            let pre = read_json(name, dir, file)?.ok_or_else(|| {
                err(
                    file,
                    "missing (CLIP-like models need their image preprocessing)".into(),
                )
            })?;
            Some(Preprocessor::from_config(&pre).map_err(|r| err(file, r))?)
        }
        _ => None,
    };
    let image = match &preprocessor {
        Some(p) => {
            let (height, width) = p.output_size();
            let (mean, std) = p.normalization();
            RSome(ImageSpec {
                height,
                width,
                mean,
                std,
            })
        }
        None => RNone,
    };
    let architecture = config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(Manifest {
        abi: ModelManifest {
            name: RString::from(name),
            kind,
            architecture: architecture.into(),
            model_type: model_type.into(),
            pooling,
            max_input_tokens: max_input_tokens as u32,
            hidden_size: hidden_size as u32,
            num_labels,
            include_prompt,
            image,
        },
        normalized_by_model,
        head: Head(dense),
        prompts,
        default_prompt_name,
        pair_template,
        preprocessor,
        classes,
        sparse,
        sparse_top_k,
        multi_vector,
        lexical,
    })
}

#[cfg(test)]
mod tests;
