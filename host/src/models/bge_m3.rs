//! bge-m3's extra heads, as FlagEmbedding saves them beside the transformer: `sparse_linear.pt`
//! (one lexical weight per token: `relu(w · state + b)`) and `colbert_linear.pt` (one vector
//! per token after the first: `W state + b`, then unit length). Both read the token states the
//! dense embedding pools, so one forward pass gives all three outputs.

use super::dense::{Dense, Head};
use super::multi_vector::MultiVector;
use crate::text::LateSpec;
use std::path::Path;
use std::sync::Arc;

/// The file of the lexical (sparse) head.
pub const SPARSE_FILE: &str = "sparse_linear.pt";
/// The file of the multi-vector (ColBERT) head.
pub const COLBERT_FILE: &str = "colbert_linear.pt";

/// bge-m3's lexical head: each token's weight, the largest per token id kept.
#[derive(Debug, Clone)]
pub struct Lexical {
    // Shared by the manifest and each request's copy.
    weight: Arc<[f32]>,
    bias: f32,
    /// Tokens whose weights are never answered (FlagEmbedding's `unused_tokens`: the
    /// tokenizer's cls, eos, pad and unk tokens), by name.
    pub special: Vec<String>,
    /// Their ids, once [`Lexical::resolve`] found them in the tokenizer.
    skip: Vec<i64>,
}

impl Lexical {
    /// Width of the states it reads.
    pub fn width(&self) -> usize {
        self.weight.len()
    }

    /// Finds the special tokens' ids with `id_of` (the model's tokenizer).
    pub fn resolve(&mut self, id_of: impl Fn(&str) -> Option<i64>) {
        self.skip = self.special.iter().filter_map(|t| id_of(t)).collect();
    }

    /// A text's weights from its token states (`[tokens, width]`) and ids: per id the largest
    /// positive `relu(w · state + b)`, special ids left out; ids ascending.
    pub fn weights(&self, states: &[f32], ids: &[i64]) -> (Vec<u32>, Vec<f32>) {
        let mut best = std::collections::BTreeMap::<u32, f32>::new();
        for (state, &id) in states.chunks_exact(self.width().max(1)).zip(ids) {
            if self.skip.contains(&id) {
                continue;
            }
            let w = state
                .iter()
                .zip(self.weight.iter())
                .map(|(s, w)| s * w)
                .sum::<f32>()
                + self.bias;
            if w > 0.0 {
                let e = best.entry(id as u32).or_insert(0.0);
                *e = e.max(w);
            }
        }
        best.into_iter().unzip()
    }
}

/// A linear layer as read: its shape `[out, in]`, weight and bias, as float32.
struct Linear {
    shape: Vec<usize>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

/// A `torch.save`d `nn.Linear` state dict.
fn linear(path: &Path) -> Result<Linear, String> {
    let read = |t: &candle_core::Tensor| {
        t.to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())
    };
    let tensors = candle_core::pickle::read_all(path).map_err(|e| e.to_string())?;
    let find = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let weight = find("weight").ok_or("has no `weight` tensor")?;
    let shape = weight.dims().to_vec();
    if shape.len() != 2 {
        return Err(format!("weight is {shape:?}, expected [out, in]"));
    }
    let bias = find("bias").map(read).transpose()?;
    if bias.as_ref().is_some_and(|b| b.len() != shape[0]) {
        return Err(format!("bias does not have {} values", shape[0]));
    }
    Ok(Linear {
        weight: read(weight)?,
        shape,
        bias,
    })
}

/// bge-m3's heads in `dir`, where present: the lexical head, and the multi-vector pipeline
/// (each token after the first, projected, at unit length); an error names the file.
pub fn read(
    dir: &Path,
    special: Vec<String>,
) -> Result<(Option<Lexical>, Option<MultiVector>), (String, String)> {
    // The head in `file`, if the model has it; an error names the file.
    let head = |file: &str| match dir.join(file) {
        path if path.is_file() => linear(&path).map(Some).map_err(|e| (file.to_string(), e)),
        _ => Ok(None),
    };
    let lexical = match head(SPARSE_FILE)? {
        None => None,
        Some(Linear {
            shape,
            weight,
            bias,
        }) => {
            if shape[0] != 1 {
                return Err((
                    SPARSE_FILE.into(),
                    format!("weight is {shape:?}; the lexical head writes one weight"),
                ));
            }
            Some(Lexical {
                weight: weight.into(),
                bias: bias.map_or(0.0, |b| b[0]),
                special,
                skip: Vec::new(),
            })
        }
    };
    let colbert = head(COLBERT_FILE)?.map(|l| MultiVector {
        spec: LateSpec {
            skip_first: true,
            ..LateSpec::default()
        },
        head: Head(vec![Dense::linear(
            COLBERT_FILE,
            l.shape[1],
            l.shape[0],
            l.weight,
            l.bias,
        )]),
        normalized: true,
        primary: false,
        // FlagEmbedding's colbert_score divides by the query's vectors.
        mean: true,
    });
    Ok((lexical, colbert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_weights_keep_each_ids_best_positive_weight() {
        let mut lex = Lexical {
            weight: vec![1.0, -1.0].into(),
            bias: 0.5,
            special: vec!["<s>".into()],
            skip: vec![],
        };
        lex.resolve(|t| (t == "<s>").then_some(0));
        // Token states of ids 0 (special), 7, 9, 7: weights 3.5, 1.5, -0.5 (dropped), 2.5.
        let states = [3.0, 0.0, 2.0, 1.0, 0.0, 1.0, 2.0, 0.0];
        let (ids, weights) = lex.weights(&states, &[0, 7, 9, 7]);
        assert_eq!(ids, [7]);
        assert_eq!(weights, [2.5]);
    }
}
