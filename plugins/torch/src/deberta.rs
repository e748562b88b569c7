//! DeBERTa-v2 / v3 on libtorch: a post-norm encoder with disentangled attention. Each layer's
//! scores add to the content-to-content term the content-to-position (`c2p`) and
//! position-to-content (`p2c`) terms, read from relative-position embeddings at log-bucketed
//! relative distances, all scaled by sqrt(head size x the number of terms), as transformers
//! computes them. The mxbai-rerank v1 cross-encoders and many others are DeBERTa-v3.

use crate::nn::{int, Activation, Linear, Norm, Segments};
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// The activations DeBERTa configs may name.
const GELUS: &[Activation] = &[Activation::Gelu, Activation::GeluTanh];

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// The relative embeddings projected as keys (c2p) and as queries (p2c), `[heads,
    /// 2 * span, head_dim]`: fixed by the weights, so projected once at load.
    pos_key: Option<Tensor>,
    pos_query: Option<Tensor>,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// A loaded DeBERTa-v2/v3 encoder.
pub struct Deberta {
    words: Tensor,
    /// Absolute positions added to the input (`position_biased_input`; off in v3).
    positions: Option<Tensor>,
    /// Segment embeddings (`type_vocab_size` > 0; none in v3).
    types: Segments,
    embed_proj: Option<Linear>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    span: i64,
    buckets: i64,
    max_relative: i64,
    c2p: bool,
    p2c: bool,
    heads: i64,
    act: Activation,
    /// Hidden size.
    pub hidden: i64,
    /// Positions the model was trained for.
    pub max_positions: i64,
}

/// transformers' `make_log_bucket_position`: distances within `buckets / 2` as they are,
/// longer ones on a log scale up to `max_position`, computed in float32.
fn log_buckets(relative: &Tensor, buckets: i64, max_position: i64) -> Result<Tensor, TchError> {
    let mid = buckets / 2;
    let sign = relative.f_sign()?.f_to_kind(Kind::Float)?;
    let near = relative.f_lt(mid)?.f_logical_and(&relative.f_gt(-mid)?)?;
    let abs_pos = relative
        .f_abs()?
        .f_masked_fill(&near, mid - 1)?
        .f_to_kind(Kind::Float)?;
    let log_pos = abs_pos
        .f_div_scalar(mid as f64)?
        .f_log()?
        .f_div_scalar(((max_position - 1) as f32 / mid as f32).ln() as f64)?
        .f_mul_scalar((mid - 1) as f64)?
        .f_ceil()?
        .f_add_scalar(mid as f64)?;
    let small = abs_pos.f_le(mid as f64)?;
    relative
        .f_to_kind(Kind::Float)?
        .f_where_self(&small, &log_pos.f_mul(&sign)?)?
        .f_to_kind(Kind::Int64)
}

impl Deberta {
    /// Builds the encoder from its weights (prefix already set) and config.
    pub fn load(w: &Weights, cfg: &Value) -> Result<Deberta, PluginError> {
        if cfg["conv_kernel_size"].as_i64().unwrap_or(0) > 0 {
            return Err(PluginError::unsupported(
                "DeBERTa-v2 checkpoints with a convolution layer (conv_kernel_size) are not \
                 implemented by the torch backend",
            ));
        }
        if !cfg["relative_attention"].as_bool().unwrap_or(false) {
            return Err(PluginError::unsupported(
                "DeBERTa without relative_attention is not implemented by the torch backend",
            ));
        }
        let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-7);
        let act = Activation::parse(
            "hidden_act",
            cfg["hidden_act"].as_str().unwrap_or("gelu"),
            GELUS,
        )?;
        let att_types: Vec<String> = match &cfg["pos_att_type"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            // Old configs write "p2c|c2p".
            Value::String(s) => s.split('|').map(|t| t.trim().to_lowercase()).collect(),
            _ => Vec::new(),
        };
        let (c2p, p2c) = (
            att_types.iter().any(|t| t == "c2p"),
            att_types.iter().any(|t| t == "p2c"),
        );
        let share_att_key = cfg["share_att_key"].as_bool().unwrap_or(false);
        let max_positions = int(cfg, &["max_position_embeddings"])?;
        let max_relative = match cfg["max_relative_positions"].as_i64().unwrap_or(-1) {
            m if m < 1 => max_positions,
            m => m,
        };
        let buckets = cfg["position_buckets"].as_i64().unwrap_or(-1);
        let span = if buckets > 0 { buckets } else { max_relative };
        let relative = w.get("encoder.rel_embeddings.weight")?;
        let norm_rel = cfg["norm_rel_ebd"]
            .as_str()
            .unwrap_or("none")
            .to_lowercase()
            .split('|')
            .any(|t| t.trim() == "layer_norm");
        let relative = if norm_rel {
            let norm = Norm::load(w, "encoder.LayerNorm", eps)?;
            tch::no_grad(|| norm.forward(&relative))
                .map_err(|e| crate::error::from_tch("normalising relative embeddings", e))?
        } else {
            relative
        };
        let relative = relative
            .f_narrow(0, 0, (2 * span).min(relative.size()[0]))
            .map_err(|e| crate::error::from_tch("slicing relative embeddings", e))?;
        let heads = int(cfg, &["num_attention_heads"])?;
        let hidden = int(cfg, &["hidden_size"])?;
        // [2 * span, hidden] -> [heads, 2 * span, head_dim]
        let project = |proj: &Linear| -> Result<Tensor, PluginError> {
            tch::no_grad(|| {
                proj.forward(&relative)?
                    .f_view([-1, heads, hidden / heads])?
                    .f_transpose(0, 1)
            })
            .map_err(|e| crate::error::from_tch("projecting relative embeddings", e))
        };
        let layers = (0..int(cfg, &["num_hidden_layers"])?)
            .map(|i| {
                let p = |s: &str| format!("encoder.layer.{i}.{s}");
                let query = Linear::load(w, &p("attention.self.query_proj"))?;
                let key = Linear::load(w, &p("attention.self.key_proj"))?;
                // Shared keys project the relative embeddings with the content projections.
                let positional = |wanted: bool, own: &str, shared: &Linear| match wanted {
                    false => Ok(None),
                    true if share_att_key => project(shared).map(Some),
                    true => project(&Linear::load(w, &p(own))?).map(Some),
                };
                Ok(Layer {
                    pos_key: positional(c2p, "attention.self.pos_key_proj", &key)?,
                    pos_query: positional(p2c, "attention.self.pos_query_proj", &query)?,
                    query,
                    key,
                    value: Linear::load(w, &p("attention.self.value_proj"))?,
                    attn_out: Linear::load(w, &p("attention.output.dense"))?,
                    attn_norm: Norm::load(w, &p("attention.output.LayerNorm"), eps)?,
                    up: Linear::load(w, &p("intermediate.dense"))?,
                    down: Linear::load(w, &p("output.dense"))?,
                    out_norm: Norm::load(w, &p("output.LayerNorm"), eps)?,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;

        let optional = |name: &str| -> Result<Option<Tensor>, PluginError> {
            if w.has(name) {
                Ok(Some(w.get(name)?))
            } else {
                Ok(None)
            }
        };
        let position_biased = cfg["position_biased_input"].as_bool().unwrap_or(true);
        Ok(Deberta {
            words: w.get("embeddings.word_embeddings.weight")?,
            positions: match position_biased {
                true => Some(w.get("embeddings.position_embeddings.weight")?),
                false => None,
            },
            types: Segments::new(optional("embeddings.token_type_embeddings.weight")?),
            embed_proj: match w.has("embeddings.embed_proj.weight") {
                true => Some(Linear::load(w, "embeddings.embed_proj")?),
                false => None,
            },
            embed_norm: Norm::load(w, "embeddings.LayerNorm", eps)?,
            layers,
            span,
            buckets,
            max_relative,
            c2p,
            p2c,
            heads,
            act,
            hidden,
            max_positions,
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.words.size()[0]
    }

    /// Segments the model distinguishes (1 when it has no segment embeddings).
    pub fn segments(&self) -> i64 {
        self.types.count()
    }

    /// Token states `[rows, seq, hidden]` for ids, segment ids and mask `[rows, seq]`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let kind = self.words.kind();
        let mut x = Tensor::f_embedding(&self.words, ids, -1, false, false)?;
        let at = Tensor::f_arange(seq, (Kind::Int64, device))?;
        if let Some(p) = &self.positions {
            x = x.f_add(&Tensor::f_embedding(
                p,
                &at.f_unsqueeze(0)?,
                -1,
                false,
                false,
            )?)?;
        }
        x = self.types.add(x, types)?;
        if let Some(proj) = &self.embed_proj {
            x = proj.forward(&x)?;
        }
        let live = mask.f_ne(0)?;
        let mut x = self
            .embed_norm
            .forward(&x)?
            .f_mul(&live.f_unsqueeze(-1)?.f_to_kind(kind)?)?;

        // Relative positions (query - key), bucketed, and their indices into the relative
        // embeddings for each term.
        let relative = at.f_unsqueeze(1)?.f_sub(&at.f_unsqueeze(0)?)?;
        let relative = if self.buckets > 0 && self.max_relative > 0 {
            log_buckets(&relative, self.buckets, self.max_relative)?
        } else {
            relative
        };
        let top = 2 * self.span - 1;
        let c2p_index = relative.f_add_scalar(self.span)?.f_clamp(0, top)?;
        let p2c_index = relative.f_neg()?.f_add_scalar(self.span)?.f_clamp(0, top)?;
        let expand = |index: &Tensor| index.f_expand([rows, self.heads, seq, seq], false);
        let (c2p_index, p2c_index) = (expand(&c2p_index)?, expand(&p2c_index)?);

        let head = self.hidden / self.heads;
        let terms = 1 + i64::from(self.c2p) + i64::from(self.p2c);
        let scale = ((head * terms) as f32).sqrt() as f64;
        let split = |t: Tensor| t.f_view([rows, seq, self.heads, head])?.f_transpose(1, 2);
        let padding = live.f_logical_not()?.f_view([rows, 1, 1, seq])?;
        for l in &self.layers {
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let mut scores = q.f_matmul(&k.f_transpose(-1, -2)?.f_div_scalar(scale)?)?;
            if let Some(pos_key) = &l.pos_key {
                let c2p = q
                    .f_matmul(&pos_key.f_transpose(-1, -2)?)?
                    .f_gather(-1, &c2p_index, false)?;
                scores = scores.f_add(&c2p.f_div_scalar(scale)?)?;
            }
            if let Some(pos_query) = &l.pos_query {
                let p2c = k
                    .f_matmul(&pos_query.f_transpose(-1, -2)?)?
                    .f_gather(-1, &p2c_index, false)?
                    .f_transpose(-1, -2)?;
                scores = scores.f_add(&p2c.f_div_scalar(scale)?)?;
            }
            let probs = scores
                .f_masked_fill(&padding, f64::NEG_INFINITY)?
                .f_softmax(-1, kind)?;
            let ctx = probs
                .f_matmul(&v)?
                .f_transpose(1, 2)?
                .f_reshape([rows, seq, self.hidden])?;
            let attended = l.attn_norm.forward(&l.attn_out.forward(&ctx)?.f_add(&x)?)?;
            let inner = self.act.apply(&l.up.forward(&attended)?)?;
            x = l
                .out_norm
                .forward(&l.down.forward(&inner)?.f_add(&attended)?)?;
        }
        Ok(x)
    }
}

/// `DebertaV2ForSequenceClassification`'s head: the context pooler (dense and activation on
/// the first token), then the classifier.
pub struct Head {
    dense: Linear,
    act: Activation,
    classifier: Linear,
}

impl Head {
    /// Reads `pooler.dense` and `classifier` (no prefix).
    pub fn load(w: &Weights, cfg: &Value) -> Result<Head, PluginError> {
        let act = Activation::parse(
            "pooler_hidden_act",
            cfg["pooler_hidden_act"].as_str().unwrap_or("gelu"),
            GELUS,
        )?;
        Ok(Head {
            dense: Linear::load(w, "pooler.dense")?,
            act,
            classifier: Linear::load(w, "classifier")?,
        })
    }

    /// The logits `[rows, labels]` of token states.
    pub fn logits(&self, states: &Tensor) -> Result<Tensor, TchError> {
        let pooled = self
            .act
            .apply(&self.dense.forward(&states.f_select(1, 0)?)?)?;
        self.classifier.forward(&pooled)
    }
}
