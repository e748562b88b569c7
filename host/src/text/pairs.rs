//! Query–document pairs: as the tokenizer pairs them, or formatted into one sequence by a
//! reranker's template.

use super::{leftward, refused, TextEncoder, TextError, Tokens, Truncation};
use tokenizers::Tokenizer;

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
pub(super) struct Framed {
    pub(super) template: PairTemplate,
    pub(super) prefix: Vec<u32>,
    pub(super) suffix: Vec<u32>,
    /// The tokenizer truncating the formatted pair to what the prefix and suffix leave.
    pub(super) body: Tokenizer,
}

impl TextEncoder {
    /// Tokenizes `query` with each document as the model's tokenizer pairs them, truncating
    /// the document (at its end, or with `Truncation::Left` at its start, as transformers'
    /// `truncation_side="left"` does); when the query alone is too long, both sides are
    /// truncated (longest first); with `Truncation::Refuse`, a pair that would be truncated is
    /// an error. Pairs formatted into one sequence by a template are always cut at the
    /// document's end (the instruction comes first). Blocking.
    pub fn encode_pairs(
        &self,
        query: &str,
        documents: &[String],
        truncation: Truncation,
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
                    if refused(&body, truncation) {
                        let body = self.untruncated(f.template.body(query, doc));
                        let len = f.prefix.len() + body + f.suffix.len();
                        return Err(self.too_long(index, len));
                    }
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
                        unattended: 0,
                    })
                })
                .collect();
        }
        let (pair, whole) = match truncation {
            Truncation::Left => (
                self.left_pair
                    .get_or_init(|| leftward(&self.pair_tokenizer)),
                self.left_tokenizer(),
            ),
            _ => (&self.pair_tokenizer, &self.tokenizer),
        };
        documents
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                let enc = pair
                    .encode_fast((query, doc.as_str()), true)
                    .or_else(|_| whole.encode_fast((query, doc.as_str()), true))
                    .map_err(|e| TextError::Encode {
                        index,
                        reason: e.to_string(),
                    })?;
                if refused(&enc, truncation) {
                    let len = self.untruncated((query, doc.as_str()));
                    return Err(self.too_long(index, len));
                }
                Ok(Tokens::from(&enc))
            })
            .collect()
    }

    /// Tokenizes two texts as the model's tokenizer pairs them, truncating the longer one first
    /// (transformers' `truncation=True`, as sequence classifiers read pairs), at its end or
    /// with `Truncation::Left` its start; errors name item `index`. Blocking.
    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        truncation: Truncation,
        index: usize,
    ) -> Result<Tokens, TextError> {
        let tokenizer = match truncation {
            Truncation::Left => self.left_tokenizer(),
            _ => &self.tokenizer,
        };
        let enc = tokenizer
            .encode_fast((first, second), true)
            .map_err(|e| TextError::Encode {
                index,
                reason: e.to_string(),
            })?;
        if refused(&enc, truncation) {
            return Err(self.too_long(index, self.untruncated((first, second))));
        }
        Ok(Tokens::from(&enc))
    }
}
