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
    /// Leading tokens pooling leaves out: the prompt's (and the special token before it) when
    /// the model's pooling excludes the prompt, else 0.
    pub unpooled: usize,
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
            unpooled: 0,
        }
    }
}

/// How a reranker that scores one formatted sequence (not a tokenizer pair) reads a query and
/// a document: Qwen3-Reranker's chat template around `<Instruct>: … <Query>: … <Document>: …`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairTemplate {
    /// Tokens before the formatted pair (added as they are, never truncated).
    pub prefix: String,
    /// Tokens after it.
    pub suffix: String,
    /// The task instruction written into every pair.
    pub instruction: String,
}

impl PairTemplate {
    /// The template of the Qwen3-Reranker model card, with its default instruction.
    pub fn qwen3_reranker() -> PairTemplate {
        PairTemplate {
            prefix: "<|im_start|>system\nJudge whether the Document meets the requirements based \
                     on the Query and the Instruct provided. Note that the answer can only be \
                     \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
                .into(),
            suffix: "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n".into(),
            instruction: "Given a web search query, retrieve relevant passages that answer the \
                          query"
                .into(),
        }
    }

    fn body(&self, query: &str, document: &str) -> String {
        format!(
            "<Instruct>: {}\n<Query>: {query}\n<Document>: {document}",
            self.instruction
        )
    }
}

/// A template with its prefix and suffix tokenized once.
struct Framed {
    template: PairTemplate,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    /// The tokenizer truncating the formatted pair to what the prefix and suffix leave.
    body: Tokenizer,
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
    /// Pairs formatted into one sequence, when the model scores them that way.
    framed: Option<Framed>,
}

impl TextEncoder {
    /// Loads `tokenizer.json` from `dir`; padding is removed (the engine pads per batch).
    /// With `template`, pairs are formatted into one sequence as it says.
    pub fn load(
        dir: &Path,
        max_len: usize,
        template: Option<PairTemplate>,
    ) -> Result<Self, TextError> {
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
        let framed = match template {
            Some(template) => {
                let ids = |text: &str| {
                    tokenizer
                        .encode_fast(text, false)
                        .map(|e| e.get_ids().to_vec())
                        .map_err(|e| TextError::Load(format!("pair template: {e}")))
                };
                let (prefix, suffix) = (ids(&template.prefix)?, ids(&template.suffix)?);
                let room = max_len.saturating_sub(prefix.len() + suffix.len());
                if room == 0 {
                    return Err(TextError::Load(format!(
                        "the pair template takes {} tokens, all of the {max_len} the model reads",
                        prefix.len() + suffix.len()
                    )));
                }
                let mut body = tokenizer.clone();
                body.with_truncation(Some(TruncationParams {
                    max_length: room,
                    strategy: TruncationStrategy::LongestFirst,
                    direction: TruncationDirection::Right,
                    stride: 0,
                }))
                .map_err(|e| TextError::Load(format!("truncation: {e}")))?;
                Some(Framed {
                    template,
                    prefix,
                    suffix,
                    body,
                })
            }
            None => None,
        };
        truncate(&mut tokenizer, TruncationStrategy::LongestFirst)?;
        truncate(&mut pair_tokenizer, TruncationStrategy::OnlySecond)?;
        Ok(TextEncoder {
            tokenizer,
            pair_tokenizer,
            max_len,
            pad_id,
            framed,
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
        if let Some(f) = &self.framed {
            // As the model card does: the formatted pair tokenized (and truncated) alone,
            // between the template's prefix and suffix.
            return documents
                .iter()
                .enumerate()
                .map(|(index, doc)| {
                    let body = f
                        .body
                        .encode_fast(f.template.body(query, doc), true)
                        .map_err(|e| TextError::Encode {
                            index,
                            reason: e.to_string(),
                        })?;
                    let ids: Vec<i64> = f
                        .prefix
                        .iter()
                        .chain(body.get_ids())
                        .chain(&f.suffix)
                        .map(|&i| i as i64)
                        .collect();
                    Ok(Tokens {
                        type_ids: vec![0; ids.len()],
                        ids,
                        unpooled: 0,
                    })
                })
                .collect();
        }
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

    /// Tokenizes texts with `prompt` in front of each, as sentence-transformers does; unless
    /// `pool_prompt`, the prompt's tokens are marked to be left out of pooling (blocking).
    pub fn encode_prompted(
        &self,
        prompt: &str,
        texts: &[String],
        pool_prompt: bool,
    ) -> Result<Vec<Tokens>, TextError> {
        let prompted: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let mut tokens = self.encode(&prompted)?;
        if !pool_prompt && !prompt.is_empty() {
            let n = self.prompt_length(prompt)?;
            for t in &mut tokens {
                t.unpooled = n.min(t.len());
            }
        }
        Ok(tokens)
    }

    /// How many leading tokens a prompt takes, as sentence-transformers counts them: the
    /// prompt tokenized alone with special tokens, less a trailing special token (so `[CLS]`
    /// and the prompt of `[CLS] prompt text [SEP]`).
    pub fn prompt_length(&self, prompt: &str) -> Result<usize, TextError> {
        let enc = self
            .tokenizer
            .encode_fast(prompt, true)
            .map_err(|e| TextError::Encode {
                index: 0,
                reason: format!("the prompt: {e}"),
            })?;
        let n = enc.len();
        let added = self.tokenizer.get_added_tokens_decoder();
        let trailing_special = n > 0
            && (enc.get_special_tokens_mask()[n - 1] == 1
                || added.get(&enc.get_ids()[n - 1]).is_some_and(|t| t.special));
        Ok(n - usize::from(trailing_special))
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
