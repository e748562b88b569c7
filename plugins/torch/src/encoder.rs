//! Post-norm transformer encoders on libtorch: BERT, RoBERTa / XLM-RoBERTa, DistilBERT,
//! MPNet (relative position buckets) and ELECTRA (embeddings projected up to the layers). Attention goes through `scaled_dot_product_attention`
//! (fused kernels on GPU) with the padding mask; everything else acts on one token at a time
//! and runs on the live tokens only, so that a batch of mixed lengths costs its tokens, not
//! its rows times its longest row.

use crate::nn::{attend, int, Activation, Linear, Norm, Segments};
use crate::weights::Weights;
use ember_plugin_api::PluginError;
use serde_json::Value;
use tch::{Kind, TchError, Tensor};

/// The families this encoder implements: every encoder family of the SDK.
pub use ember_plugin_api::families::Encoder as Family;

/// Model types read, for messages.
pub const SUPPORTED: &str = "bert, roberta, xlm-roberta, camembert, distilbert, mpnet, electra";

struct Layer {
    /// Query, key and value in one product (`[3 * hidden, hidden]`).
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// A loaded encoder.
pub struct Encoder {
    family: Family,
    words: Tensor,
    positions: Tensor,
    /// Segment embeddings; DistilBERT and MPNet have none.
    types: Segments,
    embed_norm: Norm,
    /// ELECTRA's projection of embeddings narrower than the layers.
    project: Option<Linear>,
    layers: Vec<Layer>,
    /// MPNet's relative attention bias table `[buckets, heads]`.
    relative_bias: Option<Tensor>,
    heads: i64,
    /// Hidden size.
    pub hidden: i64,
    act: Activation,
    pad_id: i64,
    /// Position embeddings available (longest input, counting RoBERTa's offset).
    pub max_positions: i64,
}

/// MPNet's (and T5's) bucket of each relative position `memory - context`: exact below 8 in
/// either direction, logarithmic up to 128, 32 buckets in all.
fn relative_buckets(relative: &Tensor) -> Result<Tensor, TchError> {
    const BUCKETS: i64 = 16; // half of 32: one half per direction
    const EXACT: i64 = BUCKETS / 2;
    const MAX_DISTANCE: f64 = 128.0;
    let n = relative.f_neg()?;
    let ret = n.f_lt(0)?.f_to_kind(Kind::Int64)?.f_mul_scalar(BUCKETS)?;
    let n = n.f_abs()?;
    let small = n.f_lt(EXACT)?;
    let large = n
        .f_to_kind(Kind::Float)?
        .f_div_scalar(EXACT as f64)?
        .f_log()?
        .f_div_scalar((MAX_DISTANCE / EXACT as f64).ln())?
        .f_mul_scalar((BUCKETS - EXACT) as f64)?
        .f_to_kind(Kind::Int64)?
        .f_add_scalar(EXACT)?
        .f_clamp_max(BUCKETS - 1)?;
    ret.f_add(&n.f_where_self(&small, &large)?)
}

impl Encoder {
    /// Builds the encoder of `family` from its weights (prefix already set) and config.
    pub fn load(family: Family, w: &Weights, cfg: &Value) -> Result<Encoder, PluginError> {
        // DistilBERT's norms are fixed at 1e-12; the others read layer_norm_eps.
        let eps = match family {
            Family::DistilBert => 1e-12,
            _ => cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12),
        };
        let act_key = match family {
            Family::DistilBert => "activation",
            _ => "hidden_act",
        };
        let act = Activation::parse(
            act_key,
            cfg[act_key].as_str().unwrap_or("gelu"),
            &[Activation::Gelu, Activation::GeluTanh, Activation::Relu],
        )?;
        let layers = (0..int(cfg, &["num_hidden_layers", "n_layers"])?)
            .map(|i| {
                let [q, k, v, o, attn_norm, up, down, out_norm] = family.layer_names(i as usize);
                let qkv = vec![
                    Linear::load(w, &q)?,
                    Linear::load(w, &k)?,
                    Linear::load(w, &v)?,
                ];
                Ok(Layer {
                    qkv: Linear::fuse(qkv).map_err(|e| {
                        PluginError::internal(format!("fusing the attention of layer {i}: {e}"))
                    })?,
                    attn_out: Linear::load(w, &o)?,
                    attn_norm: Norm::load(w, &attn_norm, eps)?,
                    up: Linear::load(w, &up)?,
                    down: Linear::load(w, &down)?,
                    out_norm: Norm::load(w, &out_norm, eps)?,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let positions = w.get("embeddings.position_embeddings.weight")?;
        let pad_id = cfg["pad_token_id"].as_i64().unwrap_or(1);
        let table = positions.size()[0];
        let types = Segments::new(match family {
            Family::Bert | Family::Roberta | Family::Electra => {
                Some(w.get("embeddings.token_type_embeddings.weight")?)
            }
            Family::DistilBert | Family::MPNet => None,
        });
        let relative_bias = match family {
            Family::MPNet => Some(w.get("encoder.relative_attention_bias.weight")?),
            _ => None,
        };
        Ok(Encoder {
            family,
            words: w.get("embeddings.word_embeddings.weight")?,
            positions,
            types,
            embed_norm: Norm::load(w, "embeddings.LayerNorm", eps)?,
            project: match w.has("embeddings_project.weight") {
                true => Some(Linear::load(w, "embeddings_project")?),
                false => None,
            },
            layers,
            relative_bias,
            heads: int(cfg, &["num_attention_heads", "n_heads"])?,
            hidden: int(cfg, &["hidden_size", "dim"])?,
            act,
            pad_id,
            max_positions: if family.offset_positions() {
                table - pad_id - 1
            } else {
                table
            },
        })
    }

    /// Rows of the token embedding table: token ids must be below it.
    pub fn vocab_size(&self) -> i64 {
        self.words.size()[0]
    }

    /// Segments the model distinguishes; with one, segment ids are ignored (all read as 0).
    pub fn segments(&self) -> i64 {
        self.types.count()
    }

    /// Token states `[rows, seq, hidden]` for ids, segment ids and mask `[rows, seq]`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor, TchError> {
        self.forward_at(ids, types, mask, mask)
    }

    /// Token states `[rows, seq, hidden]` of the positions `computed` keeps (zero elsewhere),
    /// attention reading only the positions `mask` keeps: a computed position outside the mask
    /// reads the text without being read (ColBERT's query expansion).
    pub fn forward_at(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
        computed: &Tensor,
    ) -> Result<Tensor, TchError> {
        let (rows, seq) = ids.size2()?;
        let device = ids.device();
        let positions = if self.family.offset_positions() {
            let live = ids.f_ne(self.pad_id)?.f_to_kind(Kind::Int64)?;
            live.f_cumsum(1, Kind::Int64)?
                .f_mul(&live)?
                .f_add_scalar(self.pad_id)?
        } else {
            Tensor::f_arange(seq, (Kind::Int64, device))?.f_unsqueeze(0)?
        };
        let x = Tensor::f_embedding(&self.words, ids, -1, false, false)?.f_add(
            &Tensor::f_embedding(&self.positions, &positions, -1, false, false)?,
        )?;
        let x = self.types.add(x, types)?;
        let mut x = self.embed_norm.forward(&x)?;
        if let Some(project) = &self.project {
            x = project.forward(&x)?;
        }
        let live = mask.f_ne(0)?;
        let mask_or_bias = self.attention_mask(&live, seq)?;
        let tokens = Tokens::of(&computed.f_ne(0)?)?;
        let hidden = self.hidden;
        let head = hidden / self.heads;
        let mut x = tokens.gather(&x)?;
        for l in &self.layers {
            // [rows, seq, 3, heads, head] to three [rows, heads, seq, head].
            let qkv = tokens
                .scatter(&l.qkv.forward(&x)?)?
                .f_view([rows, seq, 3, self.heads, head])?
                .f_permute([2, 0, 3, 1, 4])?;
            let (q, k, v) = (
                qkv.f_select(0, 0)?,
                qkv.f_select(0, 1)?,
                qkv.f_select(0, 2)?,
            );
            let ctx = tokens.gather(&attend(&q, &k, &v, &mask_or_bias, None)?)?;
            // Residual sums and the activation run in place on fresh products.
            let mut projected = l.attn_out.forward(&ctx)?;
            let _ = projected.f_add_(&x)?;
            let attended = l.attn_norm.forward(&projected)?;
            let inner = self.act.apply_owned(l.up.forward(&attended)?)?;
            let mut out = l.down.forward(&inner)?;
            let _ = out.f_add_(&attended)?;
            x = l.out_norm.forward(&out)?;
        }
        tokens.scatter(&x)
    }

    /// The attention mask of `live` `[rows, seq]`: boolean, or for MPNet additive with the
    /// relative position bias of each head (bias where attended, -inf on padding).
    fn attention_mask(&self, live: &Tensor, seq: i64) -> Result<Tensor, TchError> {
        let rows = live.size()[0];
        let live = live.f_view([rows, 1, 1, seq])?;
        let Some(table) = &self.relative_bias else {
            return Ok(live);
        };
        let at = Tensor::f_arange(seq, (Kind::Int64, live.device()))?;
        let relative = at.f_unsqueeze(0)?.f_sub(&at.f_unsqueeze(1)?)?;
        let bias = Tensor::f_embedding(table, &relative_buckets(&relative)?, -1, false, false)?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?;
        bias.f_masked_fill(&live.f_logical_not()?, f64::NEG_INFINITY)
    }
}

/// The live (unpadded) tokens of a batch, to move states between the padded layout
/// `[rows, seq, width]` that attention needs and the packed one `[tokens, width]` that the
/// per-token layers run on.
struct Tokens {
    rows: i64,
    seq: i64,
    /// Flat indices of the live tokens in `rows * seq`; `None` when every token is live.
    index: Option<Tensor>,
}

impl Tokens {
    /// The live tokens of a boolean mask `[rows, seq]`.
    fn of(live: &Tensor) -> Result<Tokens, TchError> {
        let (rows, seq) = live.size2()?;
        let index = live.f_flatten(0, 1)?.f_nonzero()?.f_squeeze_dim(1)?;
        Ok(Tokens {
            rows,
            seq,
            index: (index.size()[0] < rows * seq).then_some(index),
        })
    }

    /// `[tokens, width]` of padded states `[rows, seq, width]`.
    fn gather(&self, padded: &Tensor) -> Result<Tensor, TchError> {
        let width = padded.size()[2];
        let flat = padded.f_reshape([self.rows * self.seq, width])?;
        match &self.index {
            Some(index) => flat.f_index_select(0, index),
            None => Ok(flat),
        }
    }

    /// Padded states `[rows, seq, width]` of `[tokens, width]`, zero on padding.
    fn scatter(&self, packed: &Tensor) -> Result<Tensor, TchError> {
        let width = packed.size()[1];
        let flat = match &self.index {
            Some(index) => Tensor::f_zeros(
                [self.rows * self.seq, width],
                (packed.kind(), packed.device()),
            )?
            .f_index_copy(0, index, packed)?,
            None => packed.shallow_clone(),
        };
        flat.f_view([self.rows, self.seq, width])
    }
}
