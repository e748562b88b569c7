//! Tokenization with the model's `tokenizer.json`, truncated to the model's max length.

use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Why a tokenizer could not be loaded or an input not tokenized.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// `tokenizer.json` missing or unreadable.
    #[error("tokenizer: {0}")]
    Load(String),
    /// The tokenizer failed on an input.
    #[error("item {index}: cannot tokenize: {reason}")]
    Encode { index: usize, reason: String },
}

/// One tokenized input, special tokens included.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<i64>,
    /// Segment ids.
    pub type_ids: Vec<i64>,
}

impl Tokens {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl From<&tokenizers::Encoding> for Tokens {
    fn from(enc: &tokenizers::Encoding) -> Tokens {
        Tokens {
            ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
            type_ids: enc.get_type_ids().iter().map(|&i| i as i64).collect(),
        }
    }
}

/// A model's tokenizer with truncation set to its max input length.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    /// The same tokenizer truncating only the second sequence (the document of a pair).
    pair_tokenizer: Tokenizer,
    /// Longest sequence produced, special tokens included.
    pub max_len: usize,
    /// Id of the padding token.
    pub pad_id: i64,
}

impl TextEncoder {
    /// Loads `tokenizer.json` from `dir`; padding is removed (the engine pads per batch).
    pub fn load(dir: &Path, max_len: usize) -> Result<Self, TextError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TextError::Load(format!(
                "{} is missing (ember reads the fast tokenizer file)",
                path.display()
            )));
        }
        let mut tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| TextError::Load(format!("{}: {e}", path.display())))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>", "<|endoftext|>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
            })
            .unwrap_or(0) as i64;
        tokenizer.with_padding(None);
        let truncate = |t: &mut Tokenizer, strategy| {
            t.with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map(|_| ())
            .map_err(|e| TextError::Load(format!("truncation: {e}")))
        };
        let mut pair_tokenizer = tokenizer.clone();
        truncate(&mut tokenizer, TruncationStrategy::LongestFirst)?;
        truncate(&mut pair_tokenizer, TruncationStrategy::OnlySecond)?;
        Ok(TextEncoder {
            tokenizer,
            pair_tokenizer,
            max_len,
            pad_id,
        })
    }

    /// Tokenizes `query` with each document as the model's tokenizer pairs them, truncating
    /// the document; when the query alone is too long, both sides are truncated
    /// (longest first). Blocking.
    pub fn encode_pairs(
        &self,
        query: &str,
        documents: &[String],
    ) -> Result<Vec<Tokens>, TextError> {
        documents
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                let enc = self
                    .pair_tokenizer
                    .encode_fast((query, doc.as_str()), true)
                    .or_else(|_| self.tokenizer.encode_fast((query, doc.as_str()), true))
                    .map_err(|e| TextError::Encode {
                        index,
                        reason: e.to_string(),
                    })?;
                Ok(Tokens::from(&enc))
            })
            .collect()
    }

    /// Tokenizes texts (blocking; call from a blocking thread for large batches).
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Tokens>, TextError> {
        texts
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let enc = self.tokenizer.encode_fast(t.as_str(), true).map_err(|e| {
                    TextError::Encode {
                        index,
                        reason: e.to_string(),
                    }
                })?;
                Ok(Tokens::from(&enc))
            })
            .collect()
    }
}
