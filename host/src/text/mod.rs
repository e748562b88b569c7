//! Tokenization with the model's `tokenizer.json`, truncated to the model's max length.

mod inspect;
mod late;
mod pairs;

pub use late::{Expansion, LateEncoder, LateSpec, Side};

pub use inspect::TokenInfo;
use pairs::Framed;
pub use pairs::PairTemplate;

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
    /// An input is longer than the model reads, and truncation was turned off.
    #[error(
        "item {index} is longer than the model's maximum of {max} tokens ({len} tokens; \
         truncation is turned off: shorten it, or allow truncation)"
    )]
    TooLong {
        /// Its position in the request.
        index: usize,
        /// Most tokens the model reads.
        max: usize,
        /// Its tokens, special tokens included.
        len: usize,
    },
}

/// What happens to an input longer than the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Its end is cut off (the default, as sentence-transformers does).
    #[default]
    Right,
    /// Its beginning is cut off (special tokens kept).
    Left,
    /// It is refused with an error naming it.
    Refuse,
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
    /// Trailing tokens attention does not read but whose states are asked for (ColBERT's
    /// query expansion), else 0.
    pub unattended: usize,
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
            unattended: 0,
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
    /// Pairs formatted into one sequence, when the model scores them that way.
    framed: Option<Framed>,
    /// The tokenizer truncating on the left, made on first use.
    left: std::sync::OnceLock<Tokenizer>,
    /// The pair tokenizer truncating the document's beginning, made on first use.
    left_pair: std::sync::OnceLock<Tokenizer>,
    /// The tokenizer that never truncates, made on first use: it measures an input refused
    /// for its length.
    whole: std::sync::OnceLock<Tokenizer>,
}

/// `t` truncating at the start instead of the end.
fn leftward(t: &Tokenizer) -> Tokenizer {
    let mut t = t.clone();
    let mut params = t.get_truncation().cloned().unwrap_or_default();
    params.direction = TruncationDirection::Left;
    // The parameters were accepted once with the other direction.
    let _ = t.with_truncation(Some(params));
    t
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
            left: std::sync::OnceLock::new(),
            left_pair: std::sync::OnceLock::new(),
            whole: std::sync::OnceLock::new(),
        })
    }

    /// A copy that reads at most `max_len` tokens (which may be more than this one reads: the
    /// caller checks it against the model's positions) and keeps each of `markers` whole, as
    /// one special token; pairs are not formatted.
    pub fn derived(&self, max_len: usize, markers: &[String]) -> Result<TextEncoder, TextError> {
        let mut tokenizer = self.tokenizer.clone();
        let special: Vec<tokenizers::AddedToken> = markers
            .iter()
            .map(|m| tokenizers::AddedToken::from(m.as_str(), true).normalized(false))
            .collect();
        tokenizer.add_special_tokens(&special);
        let mut pair_tokenizer = tokenizer.clone();
        for (t, strategy) in [
            (&mut tokenizer, TruncationStrategy::LongestFirst),
            (&mut pair_tokenizer, TruncationStrategy::OnlySecond),
        ] {
            t.with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| TextError::Load(format!("truncation: {e}")))?;
        }
        Ok(TextEncoder {
            tokenizer,
            pair_tokenizer,
            max_len,
            pad_id: self.pad_id,
            framed: None,
            left: std::sync::OnceLock::new(),
            left_pair: std::sync::OnceLock::new(),
            whole: std::sync::OnceLock::new(),
        })
    }

    /// The text of token `id` as the vocabulary writes it (`##ing`, `▁word`), if it has one.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// The id of `token` in the vocabulary (added tokens included), if it has one.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.tokenizer.token_to_id(token).map(i64::from)
    }

    /// Whether `token` is in the vocabulary but splits into several pieces when tokenized (as
    /// `[unused0]` does on a BERT tokenizer, unless it is registered as a special token).
    pub fn splits(&self, token: &str) -> bool {
        self.tokenizer.token_to_id(token).is_some()
            && self
                .tokenizer
                .encode_fast(token, false)
                .map_or(true, |e| e.get_tokens() != [token])
    }

    /// Tokenizes texts with `prompt` in front of each, as sentence-transformers does; unless
    /// `pool_prompt`, the prompt's tokens are marked to be left out of pooling (blocking).
    pub fn encode_prompted(
        &self,
        prompt: &str,
        texts: &[String],
        pool_prompt: bool,
        truncation: Truncation,
    ) -> Result<Vec<Tokens>, TextError> {
        let prompted: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let mut tokens = self.encode_with(&prompted, truncation)?;
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
        self.encode_with(texts, Truncation::Right)
    }

    /// The tokenizer that truncates an over-long text at its start, made on first use.
    fn left_tokenizer(&self) -> &Tokenizer {
        self.left.get_or_init(|| leftward(&self.tokenizer))
    }

    /// Tokens of an input without truncation, special tokens included.
    fn untruncated<'s>(&self, input: impl Into<tokenizers::EncodeInput<'s>>) -> usize {
        let whole = self.whole.get_or_init(|| {
            let mut t = self.tokenizer.clone();
            // Turning truncation off cannot fail (only its parameters are checked).
            let _ = t.with_truncation(None);
            t
        });
        whole.encode_fast(input, true).map_or(0, |e| e.len())
    }

    /// The error for item `index`, `len` tokens long.
    fn too_long(&self, index: usize, len: usize) -> TextError {
        TextError::TooLong {
            index,
            max: self.max_len,
            len,
        }
    }

    /// Tokenizes texts, truncating over-long ones as `truncation` says (blocking).
    pub fn encode_with(
        &self,
        texts: &[String],
        truncation: Truncation,
    ) -> Result<Vec<Tokens>, TextError> {
        let tokenizer = match truncation {
            Truncation::Left => self.left_tokenizer(),
            _ => &self.tokenizer,
        };
        texts
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let enc =
                    tokenizer
                        .encode_fast(t.as_str(), true)
                        .map_err(|e| TextError::Encode {
                            index,
                            reason: e.to_string(),
                        })?;
                if refused(&enc, truncation) {
                    return Err(self.too_long(index, self.untruncated(t.as_str())));
                }
                Ok(Tokens::from(&enc))
            })
            .collect()
    }
}

/// Whether an encoding the tokenizer had to truncate is refused (`Truncation::Refuse`).
fn refused(enc: &tokenizers::Encoding, truncation: Truncation) -> bool {
    truncation == Truncation::Refuse && !enc.get_overflowing().is_empty()
}
