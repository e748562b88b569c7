//! Multi-vector (late-interaction, ColBERT) pipelines: PyLate's configuration and
//! sentence-transformers' `MultiVectorEncoder` one, read into how the model's texts are
//! tokenized and how its token states become its vectors (one per kept token).

use super::dense::Head;
use crate::text::{Expansion, LateSpec};
use serde_json::Value;
use std::collections::BTreeMap;

/// A late-interaction model's pipeline after its transformer.
#[derive(Debug, Clone)]
pub struct MultiVector {
    /// How its texts are tokenized.
    pub spec: LateSpec,
    /// Its Dense modules, applied to each token's state.
    pub head: Head,
    /// Whether each token's vector is scaled to unit length (a Normalize module).
    pub normalized: bool,
    /// Whether these vectors are the model's embeddings (ColBERT), rather than an output
    /// besides its dense ones (bge-m3).
    pub primary: bool,
    /// Whether a match's score is divided by the query's vectors (`meanmaxsim`).
    pub mean: bool,
}

/// The punctuation PyLate skips in documents by default (Python's `string.punctuation`).
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Keys only PyLate's (and Stanford ColBERT's) configurations carry.
const PYLATE_KEYS: [&str; 9] = [
    "query_length",
    "document_length",
    "query_expansion",
    "do_query_expansion",
    "attend_to_expansion_tokens",
    "attend_to_mask_tokens",
    "query_prefix",
    "document_prefix",
    "skiplist_words",
];

/// The file in which Stanford ColBERT checkpoints (`HF_ColBERT`, colbert-ir/colbertv2.0)
/// keep their settings.
pub const STANFORD_METADATA: &str = "artifact.metadata";

/// Whether `config` (a `config.json`) is a Stanford ColBERT checkpoint's (`HF_ColBERT`),
/// which a model without a sentence-transformers pipeline is read as.
pub fn is_stanford(config: &Value) -> bool {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == "HF_ColBERT"))
}

/// Stanford ColBERT's `artifact.metadata` as the PyLate settings it amounts to, as
/// sentence-transformers reads it: markers `query_token_id` / `doc_token_id` (`[unused0]` /
/// `[unused1]` when missing or empty) prompted with a space after them, documents of
/// `doc_maxlen` tokens, queries always expanded to `query_maxlen` (32 when missing or 0) with
/// the mask token, attended only with `attend_to_mask_tokens`, punctuation left out of
/// documents unless `mask_punctuation` is false or null. A value of the wrong type is an
/// error naming its key.
pub fn stanford_settings(metadata: &Value) -> Result<Value, String> {
    let metadata = match metadata {
        Value::Null => &Value::Object(Default::default()),
        Value::Object(_) => metadata,
        _ => return Err("must be a JSON object".into()),
    };
    let marker = |key: &str, default: &str| match metadata.get(key) {
        None | Some(Value::Null) => Ok(format!("{default} ")),
        Some(Value::String(m)) if m.trim().is_empty() => Ok(format!("{default} ")),
        Some(Value::String(m)) => Ok(format!("{m} ")),
        Some(v) => Err(format!("{key} must name a token, got {v}")),
    };
    let flag = |key: &str, default: bool| match metadata.get(key) {
        None => Ok(default),
        Some(Value::Null) => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("{key} must be true or false, got {v}")),
    };
    let query_length = match metadata.get("query_maxlen") {
        Some(v) if v.as_u64() == Some(0) => None,
        _ => usize_of(Some(metadata), "query_maxlen")?,
    }
    .unwrap_or(32);
    let mut settings = serde_json::json!({
        "query_prefix": marker("query_token_id", "[unused0]")?,
        "document_prefix": marker("doc_token_id", "[unused1]")?,
        "query_expansion": {
            "strategy": "fixed",
            "attend": flag("attend_to_mask_tokens", false)?,
            "length": query_length,
        },
        "skiplist_words": match flag("mask_punctuation", true)? {
            true => PUNCTUATION.chars().map(|c| c.to_string()).collect(),
            false => Vec::new(),
        },
    });
    if let Some(d) = usize_of(Some(metadata), "doc_maxlen")? {
        settings["document_length"] = d.into();
    }
    Ok(settings)
}

/// Whether a model's `config_sentence_transformers.json` and module types declare a
/// late-interaction model.
pub fn declared(st_config: Option<&Value>, modules: &[&str]) -> bool {
    let model_type = st_config
        .and_then(|c| c.get("model_type"))
        .and_then(Value::as_str);
    matches!(model_type, Some("ColBERT" | "MultiVectorEncoder"))
        || legacy(st_config)
        || modules.contains(&"MultiVectorMask")
}

/// Whether the configuration is PyLate's (markers inserted as tokens, lengths and expansion
/// at the top level).
fn legacy(st_config: Option<&Value>) -> bool {
    st_config.is_some_and(|c| PYLATE_KEYS.iter().any(|k| c.get(k).is_some()))
}

/// What a late-interaction model's configuration files say.
pub struct Sources<'a> {
    /// `config_sentence_transformers.json` (or Stanford ColBERT's settings, as
    /// [`stanford_settings`] translates them).
    pub st_config: Option<&'a Value>,
    /// The file `st_config` came from, for errors.
    pub st_file: &'a str,
    /// The transformer module's `sentence_bert_config.json`.
    pub transformer: Option<&'a Value>,
    /// The `MultiVectorMask` module's `config.json` and its path, when the pipeline has one.
    pub mask: Option<(&'a str, &'a Value)>,
    /// The model's prompts.
    pub prompts: &'a BTreeMap<String, String>,
    /// The default expansion filler: the tokenizer's mask token, else its end token.
    pub mask_token: Option<String>,
}

/// A setting's error: the file that holds it, and why.
type Blame = (String, String);

fn blame(file: &str) -> impl Fn(String) -> Blame + '_ {
    move |reason| (file.to_string(), reason)
}

fn usize_of(v: Option<&Value>, key: &str) -> Result<Option<usize>, String> {
    match v.and_then(|c| c.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(format!("{key} must be a positive integer, got {x}")),
        },
    }
}

fn words(v: &Value, key: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .and_then(|a| a.iter().map(|w| w.as_str().map(String::from)).collect())
        .ok_or_else(|| format!("{key} must be a list of strings"))
}

/// Reads sentence-transformers' `query_expansion` dictionary (null: none).
fn expansion_of(v: &Value, filler: Option<&str>) -> Result<Option<Expansion>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let fixed = match v.get("strategy").and_then(Value::as_str) {
        Some("fixed") => true,
        Some("min") => false,
        other => {
            return Err(format!(
                "query_expansion strategy {other:?}: expected \"fixed\" or \"min\""
            ))
        }
    };
    let length = usize_of(Some(v), "length")?
        .ok_or("query_expansion needs a length (classic ColBERT uses 32)")?;
    let token = match v.get("token").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => filler
            .ok_or("query_expansion names no token and the tokenizer has no mask token")?
            .to_string(),
    };
    Ok(Some(Expansion {
        length,
        fixed,
        attend: v.get("attend").and_then(Value::as_bool).unwrap_or(false),
        token,
    }))
}

/// Reads the pipeline of a late-interaction model whose Dense modules are `head` and whose
/// pipeline ends in a Normalize module when `normalized`; an error names the file and the
/// setting that is wrong.
pub fn read(src: Sources<'_>, head: Head, normalized: bool) -> Result<MultiVector, Blame> {
    let st_file = src.st_file;
    const TRANSFORMER: &str = "sentence_bert_config.json";
    let st = src.st_config;
    let filler = src.mask_token.as_deref();
    let prompt = |name: &str| src.prompts.get(name).cloned().unwrap_or_default();
    let spec = if legacy(st) {
        // PyLate: the markers are prefixes of the prompts; expansion is on unless turned off,
        // to `query_length` tokens (32 by default), not read by the text unless configured so.
        let c = st.unwrap_or(&Value::Null);
        let marker = |key: &str, name: &str| {
            let m = c.get(key).and_then(Value::as_str).unwrap_or_default();
            let p = prompt(name);
            format!("{m}{}", p.strip_prefix(m).unwrap_or(&p))
        };
        let mut query_length = usize_of(st, "query_length").map_err(blame(st_file))?;
        let expansion = match c.get("query_expansion") {
            Some(e) => expansion_of(e, filler).map_err(blame(st_file))?,
            None if c.get("do_query_expansion").and_then(Value::as_bool) == Some(false) => None,
            None => Some(Expansion {
                length: query_length.take().unwrap_or(32),
                fixed: true,
                attend: ["attend_to_expansion_tokens", "attend_to_mask_tokens"]
                    .iter()
                    .find_map(|k| c.get(*k).and_then(Value::as_bool))
                    .unwrap_or(false),
                token: filler
                    .ok_or_else(|| {
                        blame(st_file)(
                            "query expansion is on, but the tokenizer has no mask token".into(),
                        )
                    })?
                    .to_string(),
            }),
        };
        let skiplist = match c.get("skiplist_words") {
            Some(v) if !v.is_null() => words(v, "skiplist_words").map_err(blame(st_file))?,
            _ => PUNCTUATION.chars().map(String::from).collect(),
        };
        LateSpec {
            query_prefix: marker("query_prefix", "query"),
            document_prefix: marker("document_prefix", "document"),
            whole_markers: true,
            query_length,
            document_length: usize_of(st, "document_length").map_err(blame(st_file))?,
            expansion,
            skiplist,
            skip_queries: false,
            skip_documents: true,
            skip_first: false,
            max_positions: None,
        }
    } else {
        let t = src.transformer;
        let expansion = match t.and_then(|t| t.get("query_expansion")) {
            Some(e) => expansion_of(e, filler).map_err(blame(TRANSFORMER))?,
            None => None,
        };
        let (mut skiplist, mut tasks) = (Vec::new(), vec!["document".to_string()]);
        if let Some((file, m)) = src.mask {
            let bad = blame(file);
            if m.get("keep_only_token_ids").is_some_and(|k| !k.is_null()) {
                return Err(bad(
                    "keep_only_token_ids (image-patch documents) is not supported".into(),
                ));
            }
            if let Some(w) = m.get("skiplist_words").filter(|w| !w.is_null()) {
                skiplist = words(w, "skiplist_words").map_err(&bad)?;
            }
            match m.get("skiplist_tasks") {
                None | Some(Value::Null) => {}
                Some(Value::String(one)) => tasks = vec![one.clone()],
                Some(v) => tasks = words(v, "skiplist_tasks").map_err(&bad)?,
            }
        } else if expansion.is_some() {
            return Err(blame("modules.json")(
                "query_expansion is set but no MultiVectorMask module follows the transformer, \
                 so the expansion would not be scored"
                    .into(),
            ));
        }
        // As encode_document does, the first of these prompts the model defines.
        let document = ["document", "passage", "corpus"]
            .into_iter()
            .map(prompt)
            .find(|p| !p.is_empty())
            .unwrap_or_default();
        LateSpec {
            query_prefix: prompt("query"),
            document_prefix: document,
            whole_markers: false,
            query_length: usize_of(t, "query_length").map_err(blame(TRANSFORMER))?,
            document_length: usize_of(t, "document_length").map_err(blame(TRANSFORMER))?,
            expansion,
            skiplist,
            skip_queries: tasks.iter().any(|t| t == "query"),
            skip_documents: tasks.iter().any(|t| t == "document"),
            skip_first: false,
            max_positions: None,
        }
    };
    Ok(MultiVector {
        spec,
        head,
        // PyLate's pipelines normalise each token's vector without saying so.
        normalized: normalized || legacy(st),
        primary: true,
        mean: st
            .and_then(|c| c.get("similarity_fn_name"))
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("meanmaxsim")),
    })
}

/// The tokenizer's special token `key` (`mask_token`, `cls_token`, ...), as
/// `tokenizer_config.json` or `special_tokens_map.json` name it (a string, or an object with
/// its `content`).
pub fn special_token(configs: &[Option<&Value>], key: &str) -> Option<String> {
    configs.iter().flatten().find_map(|c| {
        let m = c.get(key)?;
        m.as_str()
            .or_else(|| m.get("content").and_then(Value::as_str))
            .map(String::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sources<'a>(
        st: Option<&'a Value>,
        t: Option<&'a Value>,
        m: Option<&'a Value>,
        p: &'a BTreeMap<String, String>,
    ) -> Sources<'a> {
        Sources {
            st_config: st,
            st_file: "config_sentence_transformers.json",
            transformer: t,
            mask: m.map(|m| ("2_MultiVectorMask/config.json", m)),
            prompts: p,
            mask_token: Some("[MASK]".into()),
        }
    }

    #[test]
    fn stanford_metadata_reads_as_sentence_transformers_reads_it() {
        let prompts = BTreeMap::new();
        let read_meta = |meta: Value| {
            let settings = stanford_settings(&meta).map_err(|e| (STANFORD_METADATA.into(), e))?;
            let mut src = sources(Some(&settings), None, None, &prompts);
            src.st_file = STANFORD_METADATA;
            read(src, Head::default(), false)
        };
        // colbertv2.0's own values.
        let mv = read_meta(serde_json::json!({
            "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 32,
            "doc_maxlen": 180, "mask_punctuation": true, "attend_to_mask_tokens": false,
            "similarity": "cosine", "dim": 128}))
        .unwrap();
        let s = &mv.spec;
        assert_eq!(
            (s.query_prefix.as_str(), s.document_prefix.as_str()),
            ("[unused0] ", "[unused1] ")
        );
        assert!(s.whole_markers && mv.normalized && mv.primary && !mv.mean);
        assert_eq!((s.query_length, s.document_length), (None, Some(180)));
        let e = s.expansion.as_ref().unwrap();
        assert_eq!(
            (e.length, e.fixed, e.attend, e.token.as_str()),
            (32, true, false, "[MASK]")
        );
        assert!(s.skip_documents && !s.skip_queries && s.skiplist.contains(&"?".to_string()));
        // No metadata at all: the same defaults, documents as long as the model reads.
        let mv = read_meta(Value::Null).unwrap();
        assert_eq!(mv.spec.query_prefix, "[unused0] ");
        assert_eq!(mv.spec.expansion.as_ref().unwrap().length, 32);
        assert_eq!(mv.spec.document_length, None);
        // As the reference's `or`: empty markers and a zero query length take the defaults.
        let mv = read_meta(serde_json::json!({"doc_token_id": "", "query_maxlen": 0})).unwrap();
        assert_eq!(mv.spec.document_prefix, "[unused1] ");
        assert_eq!(mv.spec.expansion.as_ref().unwrap().length, 32);
        // A null mask_punctuation is false there, so nothing is skipped.
        let mv = read_meta(serde_json::json!({"mask_punctuation": null})).unwrap();
        assert!(mv.spec.skiplist.is_empty());
        let (_, e) = read_meta(serde_json::json!([1, 2])).unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        // Punctuation kept, expansion attended.
        let mv = read_meta(
            serde_json::json!({"mask_punctuation": false, "attend_to_mask_tokens": true}),
        )
        .unwrap();
        assert!(mv.spec.skiplist.is_empty() && mv.spec.expansion.unwrap().attend);
        // A bad value blames artifact.metadata.
        let (file, e) = read_meta(serde_json::json!({"doc_maxlen": "long"})).unwrap_err();
        assert_eq!(file, STANFORD_METADATA);
        assert!(e.contains("doc_maxlen") && e.contains("long"), "{e}");
        let (_, e) = read_meta(serde_json::json!({"query_token_id": 1})).unwrap_err();
        assert!(e.contains("query_token_id"), "{e}");
    }

    #[test]
    fn pylate_defaults_follow_the_reference_loader() {
        let st = json!({"model_type": "ColBERT", "query_prefix": "[unused0]",
            "document_prefix": "[unused1]", "query_length": 32, "document_length": 180,
            "attend_to_expansion_tokens": false});
        let prompts = BTreeMap::new();
        let mv = read(
            sources(Some(&st), None, None, &prompts),
            Head::default(),
            false,
        )
        .unwrap();
        let s = &mv.spec;
        assert_eq!(
            (s.query_prefix.as_str(), s.document_prefix.as_str()),
            ("[unused0]", "[unused1]")
        );
        let e = s.expansion.as_ref().unwrap();
        assert_eq!(
            (e.length, e.fixed, e.attend, e.token.as_str()),
            (32, true, false, "[MASK]")
        );
        assert_eq!((s.query_length, s.document_length), (None, Some(180)));
        assert_eq!(s.skiplist.len(), 32);
        assert!(s.skip_documents && !s.skip_queries && s.whole_markers && mv.normalized);
        assert!(declared(Some(&st), &["Transformer", "Dense"]));
        assert!(!declared(
            Some(&json!({"prompts": {}})),
            &["Transformer", "Pooling"]
        ));

        let off = json!({"query_prefix": "[Q] ", "do_query_expansion": false, "query_length": 20});
        let mv = read(
            sources(Some(&off), None, None, &prompts),
            Head::default(),
            false,
        )
        .unwrap();
        assert!(mv.spec.expansion.is_none());
        assert_eq!(mv.spec.query_length, Some(20));
    }

    #[test]
    fn native_settings_come_from_the_modules() {
        let st = json!({"model_type": "MultiVectorEncoder"});
        let t = json!({"document_length": 64,
            "query_expansion": {"strategy": "min", "attend": true, "length": 16}});
        let m = json!({"skiplist_words": [".", ","], "skiplist_tasks": ["query", "document"]});
        let prompts = BTreeMap::from([("query".to_string(), "[Q] ".to_string())]);
        let mv = read(
            sources(Some(&st), Some(&t), Some(&m), &prompts),
            Head::default(),
            true,
        )
        .unwrap();
        let s = &mv.spec;
        assert_eq!(s.query_prefix, "[Q] ");
        assert_eq!(s.document_prefix, "");
        let e = s.expansion.as_ref().unwrap();
        assert_eq!((e.length, e.fixed, e.attend), (16, false, true));
        assert!(s.skip_queries && s.skip_documents && !s.whole_markers);
        let (file, e) = read(
            sources(Some(&st), Some(&t), None, &prompts),
            Head::default(),
            true,
        )
        .unwrap_err();
        assert!(
            e.contains("MultiVectorMask") && file == "modules.json",
            "{e}"
        );
        let bad = json!({"query_expansion": {"strategy": "fixed"}});
        let (file, e) = read(
            sources(Some(&st), Some(&bad), Some(&m), &prompts),
            Head::default(),
            true,
        )
        .unwrap_err();
        assert!(
            e.contains("length") && file == "sentence_bert_config.json",
            "{e}"
        );
    }

    #[test]
    fn the_mask_token_is_read_in_either_form() {
        let a = json!({"mask_token": "[MASK]"});
        let b = json!({"mask_token": {"content": "<mask>", "lstrip": true}});
        assert_eq!(
            special_token(&[None, Some(&a)], "mask_token").as_deref(),
            Some("[MASK]")
        );
        assert_eq!(
            special_token(&[Some(&b), Some(&a)], "mask_token").as_deref(),
            Some("<mask>")
        );
        assert_eq!(special_token(&[None], "mask_token"), None);
    }
}
