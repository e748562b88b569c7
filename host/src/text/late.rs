//! Tokenization for late-interaction (ColBERT) models: each text marked as a query or a
//! document, cut to that side's length, queries expanded with mask tokens, and the tokens whose
//! vectors the model drops (its skiplist) marked.

use super::{TextEncoder, TextError, Tokens, Truncation};
use std::collections::HashSet;

/// Which side of a late-interaction match a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A search query.
    Query,
    /// A searched document.
    Document,
}

impl Side {
    /// `query` or `document`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Query => "query",
            Side::Document => "document",
        }
    }
}

/// ColBERT's query expansion: queries shorter than `length` tokens are filled up to it with
/// `token` (the mask token), whose vectors count in the match.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    /// The width queries are filled up to.
    pub length: usize,
    /// Whether that width is also the longest query (`fixed`), or only the shortest (`min`).
    pub fixed: bool,
    /// Whether the text's tokens read the filler (`attend`); classic ColBERT's do not.
    pub attend: bool,
    /// The filler token.
    pub token: String,
}

/// How a late-interaction model tokenizes, as its sentence-transformers or PyLate
/// configuration says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LateSpec {
    /// Text prepended to queries (PyLate's `query_prefix`, e.g. `[unused0]`).
    pub query_prefix: String,
    /// Text prepended to documents.
    pub document_prefix: String,
    /// Whether prefixes that are one vocabulary entry but split when tokenized are made
    /// special tokens, so that they stay whole (PyLate's markers, which it inserts as tokens).
    pub whole_markers: bool,
    /// Longest query in tokens, when shorter than the model reads.
    pub query_length: Option<usize>,
    /// Longest document in tokens, when shorter than the model reads.
    pub document_length: Option<usize>,
    /// Query expansion, when the model uses it.
    pub expansion: Option<Expansion>,
    /// Tokens whose vectors are dropped (punctuation, for PyLate's models).
    pub skiplist: Vec<String>,
    /// Whether the skiplist applies to queries.
    pub skip_queries: bool,
    /// Whether the skiplist applies to documents.
    pub skip_documents: bool,
    /// Whether the first token (`[CLS]` / `<s>`) has no vector (bge-m3's ColBERT head).
    pub skip_first: bool,
    /// Most positions the model has (its position table): the side lengths may exceed its
    /// `max_seq_length`, as sentence-transformers lets them, but not this.
    pub max_positions: Option<usize>,
}

impl LateSpec {
    /// Which of a `side` text's tokens (`ids`) keep their vector: all but those in `skip`
    /// (on the sides the skiplist applies to), and the first when the model says so.
    pub fn kept(&self, side: Side, ids: &[i64], skip: &HashSet<i64>) -> Vec<bool> {
        let skips = match side {
            Side::Query => self.skip_queries,
            Side::Document => self.skip_documents,
        };
        ids.iter()
            .enumerate()
            .map(|(i, id)| !(skips && skip.contains(id) || i == 0 && self.skip_first))
            .collect()
    }
}

/// A late-interaction model's tokenizer for both sides.
pub struct LateEncoder {
    spec: LateSpec,
    query: TextEncoder,
    document: TextEncoder,
    /// The expansion filler's id.
    filler: i64,
    /// Ids of the skiplist's tokens.
    skip: HashSet<i64>,
}

impl LateEncoder {
    /// The markers of `spec` that `base` must keep whole but splits: as sentence-transformers'
    /// MultiVectorEncoder registers a legacy marker, the prefix itself, else its first word,
    /// when it is one vocabulary entry that tokenizing splits.
    pub fn markers(base: &TextEncoder, spec: &LateSpec) -> Vec<String> {
        let mut markers: Vec<String> = Vec::new();
        if spec.whole_markers {
            for prefix in [&spec.query_prefix, &spec.document_prefix] {
                let first = prefix.split_whitespace().next().unwrap_or_default();
                if let Some(c) = [prefix.as_str(), first]
                    .into_iter()
                    .find(|c| !c.is_empty() && base.token_id(c).is_some())
                {
                    if base.splits(c) && !markers.iter().any(|m| m == c) {
                        markers.push(c.to_string());
                    }
                }
            }
        }
        markers
    }

    /// The tokenizer of `spec` made from the model's own, `base`, which already keeps the
    /// markers whole (registered as [`LateEncoder::markers`] says).
    pub fn new(base: &TextEncoder, spec: LateSpec) -> Result<LateEncoder, TextError> {
        let query_cap = match &spec.expansion {
            Some(e) if e.fixed => e.length,
            Some(e) => spec.query_length.map_or(base.max_len, |q| q.max(e.length)),
            None => spec.query_length.unwrap_or(base.max_len),
        };
        let document_cap = spec.document_length.unwrap_or(base.max_len);
        let floor = spec.expansion.as_ref().map_or(0, |e| e.length);
        if let Some(p) = spec.max_positions {
            if let Some((what, n)) = [
                ("query length", query_cap),
                ("query expansion length", floor),
                ("document length", document_cap),
            ]
            .into_iter()
            .find(|(_, n)| *n > p)
            {
                return Err(TextError::Load(format!(
                    "the {what} of {n} tokens is more than the model's {p} positions"
                )));
            }
        }
        let query = base.derived(query_cap, &[])?;
        let document = base.derived(document_cap, &[])?;
        let filler = match &spec.expansion {
            Some(e) => query.token_id(&e.token).ok_or_else(|| {
                TextError::Load(format!(
                    "the query expansion token {:?} is not in the vocabulary",
                    e.token
                ))
            })?,
            None => 0,
        };
        // As the model does: a skiplist word that is not one vocabulary entry is left out.
        let skip = spec
            .skiplist
            .iter()
            .filter_map(|w| document.token_id(w))
            .collect();
        Ok(LateEncoder {
            spec,
            query,
            document,
            filler,
            skip,
        })
    }

    /// Longest text of `side` in tokens.
    pub fn max_len(&self, side: Side) -> usize {
        match side {
            Side::Query => self.query.max_len,
            Side::Document => self.document.max_len,
        }
    }

    /// The model's base tokenizer for `side` (to cut texts to a number of tokens).
    pub fn encoder(&self, side: Side) -> &TextEncoder {
        match side {
            Side::Query => &self.query,
            Side::Document => &self.document,
        }
    }

    /// Tokenizes texts as `side`: marked, cut to the side's length, queries expanded
    /// (blocking); with each text's real tokens (the expansion's filler left out).
    pub fn encode(
        &self,
        side: Side,
        texts: &[String],
        truncation: Truncation,
    ) -> Result<Vec<(Tokens, usize)>, TextError> {
        let (encoder, prefix) = match side {
            Side::Query => (&self.query, &self.spec.query_prefix),
            Side::Document => (&self.document, &self.spec.document_prefix),
        };
        let mut tokens = match prefix.is_empty() {
            true => encoder.encode_with(texts, truncation)?,
            false => encoder.encode_prompted(prefix, texts, true, truncation)?,
        };
        let real: Vec<usize> = tokens.iter().map(Tokens::len).collect();
        if let (Side::Query, Some(e)) = (side, &self.spec.expansion) {
            for t in &mut tokens {
                let fill = e.length.saturating_sub(t.len());
                t.ids.extend(std::iter::repeat_n(self.filler, fill));
                t.type_ids.extend(std::iter::repeat_n(0, fill));
                if !e.attend {
                    t.unattended = fill;
                }
            }
        }
        Ok(tokens.into_iter().zip(real).collect())
    }

    /// Which of a `side` text's tokens keep their vector (see [`LateSpec::kept`]).
    pub fn kept(&self, side: Side, tokens: &Tokens) -> Vec<bool> {
        self.spec.kept(side, &tokens.ids, &self.skip)
    }
}
