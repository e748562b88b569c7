//! A text's tokens as TEI's `/tokenize` and `/decode` show them.

use super::{TextEncoder, TextError};

/// One token of a tokenized text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// Its id.
    pub id: u32,
    /// Its text: the slice of the input it covers, or the special token itself.
    pub text: String,
    /// Whether the tokenizer added it (`[CLS]`, `</s>`, ...).
    pub special: bool,
    /// Byte offsets of the text it covers (none for added special tokens).
    pub span: Option<(usize, usize)>,
}

impl TextEncoder {
    /// The tokens of `text` as the model's tokenizer splits it, with their byte offsets
    /// (none for special tokens), truncated to the model's maximum.
    pub fn tokenize(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenInfo>, TextError> {
        // `encode` tracks byte offsets (`encode_fast` does not).
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| TextError::Encode {
                index: 0,
                reason: e.to_string(),
            })?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .zip(enc.get_special_tokens_mask())
            .zip(enc.get_tokens())
            .map(|(((&id, &(start, stop)), &special), token)| {
                if special == 1 {
                    TokenInfo {
                        id,
                        text: token.clone(),
                        special: true,
                        span: None,
                    }
                } else {
                    let bytes = text.as_bytes().get(start..stop).unwrap_or_default();
                    TokenInfo {
                        id,
                        text: String::from_utf8_lossy(bytes).into_owned(),
                        special: false,
                        span: Some((start, stop)),
                    }
                }
            })
            .collect())
    }

    /// Each text cut to its first `n` tokens, or its last `n` when `from_end`, special tokens
    /// not counted (Cohere's `max_tokens` and `max_tokens_per_doc`); shorter texts are kept
    /// whole (blocking).
    pub fn heads(
        &self,
        texts: Vec<String>,
        n: usize,
        from_end: bool,
    ) -> Result<Vec<String>, TextError> {
        // A tokenizer that truncates on the side that is kept: its offsets still cover the
        // kept tokens when the text is longer than the model reads.
        let tokenizer = if from_end {
            self.left_tokenizer()
        } else {
            &self.tokenizer
        };
        texts
            .into_iter()
            .enumerate()
            .map(|(index, text)| {
                let enc =
                    tokenizer
                        .encode(text.as_str(), false)
                        .map_err(|e| TextError::Encode {
                            index,
                            reason: e.to_string(),
                        })?;
                let offsets = enc.get_offsets();
                if offsets.len() <= n {
                    return Ok(text);
                }
                // Where the kept tokens begin or end, moved to a character boundary inside
                // them (a byte-level token may begin inside a character).
                let cut = if from_end {
                    let at = offsets[offsets.len() - n].0.min(text.len());
                    (at..=text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(text.len())
                } else {
                    let at = offsets[n].0.min(text.len());
                    (0..=at)
                        .rev()
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(0)
                };
                Ok(if from_end {
                    text[cut..].trim_start().to_string()
                } else {
                    text[..cut].trim_end().to_string()
                })
            })
            .collect()
    }

    /// The text of token ids (blocking).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TextError> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| TextError::Encode {
                index: 0,
                reason: e.to_string(),
            })
    }
}
