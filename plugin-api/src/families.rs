//! Hugging Face encoder checkpoints as their `config.json` and weights lay them out: which
//! `model_type`s form which encoder family, where the encoder sits inside task models, how
//! positions are numbered and what each layer's weights are called. Every backend that reads
//! safetensors checkpoints needs this; it lives here so that each does not learn it again.

use crate::PluginError;
use serde_json::Value;
use std::path::Path;

/// Post-norm BERT-style encoder families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// `bert` (MiniLM, bge, e5, gte v1).
    Bert,
    /// `roberta`, `xlm-roberta`, `camembert`: positions count from the padding index.
    Roberta,
    /// `distilbert`: BERT's layout under other names, no segment embeddings.
    DistilBert,
    /// `mpnet`: RoBERTa-style positions plus a relative position bias on every attention.
    MPNet,
    /// `electra`: BERT's layout, its embeddings possibly narrower than the layers and
    /// projected up (`embeddings_project`).
    Electra,
}

/// The `model_type`s of decoder (generator) families, for messages of encoder-only backends.
pub const DECODER_TYPES: &[&str] = &[
    "qwen2",
    "qwen3",
    "llama",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi",
    "phi3",
    "falcon",
    "gpt2",
    "gpt_neox",
    "gpt_bigcode",
    "mixtral",
    "olmo",
    "cohere",
];

impl Encoder {
    /// The family of a `config.json` `model_type`, if it is one of these encoders.
    pub fn of(model_type: &str) -> Option<Encoder> {
        match model_type {
            "bert" => Some(Encoder::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Encoder::Roberta),
            "distilbert" => Some(Encoder::DistilBert),
            "mpnet" => Some(Encoder::MPNet),
            "electra" => Some(Encoder::Electra),
            _ => None,
        }
    }

    /// The prefix of the encoder's weights inside a task model
    /// (`BertForSequenceClassification` keeps them under `bert.`).
    pub fn task_prefix(self) -> &'static str {
        match self {
            Encoder::Bert => "bert.",
            Encoder::Roberta => "roberta.",
            Encoder::DistilBert => "distilbert.",
            Encoder::MPNet => "mpnet.",
            Encoder::Electra => "electra.",
        }
    }

    /// Whether position ids count from the padding index (RoBERTa's scheme).
    pub fn offset_positions(self) -> bool {
        matches!(self, Encoder::Roberta | Encoder::MPNet)
    }

    /// Whether the embeddings add segment (token type) embeddings.
    pub fn has_segments(self) -> bool {
        matches!(self, Encoder::Bert | Encoder::Roberta | Encoder::Electra)
    }

    /// The prefix of the layers' weights (`encoder.layer`, or DistilBERT's `transformer.layer`),
    /// followed by `.{index}.`.
    pub fn layer_stack(self) -> &'static str {
        match self {
            Encoder::DistilBert => "transformer.layer",
            _ => "encoder.layer",
        }
    }

    /// The names of a layer's weights under `{layer_stack}.{i}.`: query, key, value, attention
    /// output, attention norm, feed-forward up and down, output norm.
    pub fn layer_parts(self) -> [&'static str; 8] {
        match self {
            Encoder::Bert | Encoder::Roberta | Encoder::Electra => [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
            Encoder::DistilBert => [
                "attention.q_lin",
                "attention.k_lin",
                "attention.v_lin",
                "attention.out_lin",
                "sa_layer_norm",
                "ffn.lin1",
                "ffn.lin2",
                "output_layer_norm",
            ],
            Encoder::MPNet => [
                "attention.attn.q",
                "attention.attn.k",
                "attention.attn.v",
                "attention.attn.o",
                "attention.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
        }
    }

    /// The full names of layer `i`'s weights, in [`Encoder::layer_parts`] order.
    pub fn layer_names(self, i: usize) -> [String; 8] {
        let stack = self.layer_stack();
        self.layer_parts().map(|n| format!("{stack}.{i}.{n}"))
    }
}

/// Whether a `model_type` is a decoder (generator) family.
pub fn is_decoder(model_type: &str) -> bool {
    DECODER_TYPES.contains(&model_type)
}

/// A model directory's `config.json`, parsed; errors name the file.
pub fn read_config(dir: &Path) -> Result<Value, PluginError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| PluginError::invalid_input(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_map_to_families_and_weight_names() {
        assert_eq!(Encoder::of("xlm-roberta"), Some(Encoder::Roberta));
        assert_eq!(Encoder::of("qwen3"), None);
        assert!(is_decoder("qwen3") && !is_decoder("bert"));
        assert_eq!(
            Encoder::DistilBert.layer_names(2)[0],
            "transformer.layer.2.attention.q_lin"
        );
        assert_eq!(
            Encoder::Bert.layer_names(0)[7],
            "encoder.layer.0.output.LayerNorm"
        );
        assert!(Encoder::MPNet.offset_positions() && !Encoder::MPNet.has_segments());
        assert_eq!(Encoder::of("electra"), Some(Encoder::Electra));
        assert!(!Encoder::Electra.offset_positions() && Encoder::Electra.has_segments());
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ember-families-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read_config(&dir).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        std::fs::write(dir.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
        assert_eq!(read_config(&dir).unwrap()["model_type"], "bert");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
