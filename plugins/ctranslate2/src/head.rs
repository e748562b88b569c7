//! The classification head of a cross-encoder, applied in the plugin to the first token's
//! state from CTranslate2 (whose encoder spec has no classifier): a dense layer with tanh
//! (BERT's pooler, RoBERTa's `classifier.dense`) or ReLU (DistilBERT's `pre_classifier`),
//! then the projection to the labels.

use crate::checkpoint::Checkpoint;
use crate::convert::Family;
use ember_plugin_api::PluginError;

/// A dense layer on the CPU: `weight` is `[out, in]`.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Linear {
    fn load(ckpt: &Checkpoint, name: &str) -> Result<Linear, PluginError> {
        let read = |part: &str| {
            let full = format!("{name}.{part}");
            let t = ckpt.get(&full)?;
            let shape = t.shape.to_vec();
            let values = t
                .to_f32()
                .map_err(|e| PluginError::invalid_input(format!("{full}: {e}")))?;
            Ok::<_, PluginError>((shape, values))
        };
        let (shape, weight) = read("weight")?;
        let (_, bias) = read("bias")?;
        if shape.len() != 2 || bias.len() != shape[0] {
            return Err(PluginError::invalid_input(format!(
                "{name}: weight {shape:?} and bias of {} values do not form a dense layer",
                bias.len()
            )));
        }
        Ok(Linear {
            weight,
            bias,
            inputs: shape[1],
        })
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b)
            .collect()
    }
}

/// A sequence-classification head.
pub struct Head {
    dense: Linear,
    /// ReLU after the dense layer (DistilBERT); tanh otherwise.
    relu: bool,
    out: Linear,
}

impl Head {
    /// The head of a `*ForSequenceClassification` checkpoint of `family`.
    pub fn load(ckpt: &Checkpoint, family: Family) -> Result<Head, PluginError> {
        let (dense, out) = match family {
            Family::Bert => ("bert.pooler.dense", "classifier"),
            Family::Roberta => ("classifier.dense", "classifier.out_proj"),
            Family::DistilBert => ("pre_classifier", "classifier"),
        };
        let head = Head {
            dense: Linear::load(ckpt, dense)?,
            relu: family == Family::DistilBert,
            out: Linear::load(ckpt, out)?,
        };
        if head.out.inputs != head.dense.bias.len() {
            return Err(PluginError::invalid_input(
                "the classification head's layers do not chain",
            ));
        }
        Ok(head)
    }

    /// Width of the states the head reads.
    pub fn inputs(&self) -> usize {
        self.dense.inputs
    }

    /// Number of labels (logits per input).
    pub fn labels(&self) -> usize {
        self.out.bias.len()
    }

    /// Every label's logit for the first token's state `cls`.
    pub fn logits(&self, cls: &[f32]) -> Vec<f32> {
        let act = |v: &f32| if self.relu { v.max(0.0) } else { v.tanh() };
        let pooled: Vec<f32> = self.dense.forward(cls).iter().map(act).collect();
        self.out.forward(&pooled)
    }
}
