//! `/v1/embeddings`: text and image inputs, float, base64 or compact vectors, `dimensions`.

use super::compact::{Precision, Quantizer};
use super::fields::{object, opt_positive, opt_str, texts, truncation};
use super::{tokenized, ApiError, AppState, DeployedModel, ErrorKind, Usage};
use crate::engine::{Output, Payload};
use crate::images::{Admission, LoadError, Refusal};
use crate::text::{TextError, Truncation};
use base64::Engine as _;
use ember_plugin_api::ModelKind;
use serde::Serialize;
use serde_json::Value;

/// Output encoding of vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// Little-endian float32 bytes, base64-encoded.
    Base64,
    /// Quantised codes, as JSON integers.
    Compact(Precision),
}

impl EncodingFormat {
    /// The format called `name`: `float`, `base64`, or a compact precision.
    pub fn parse(name: &str) -> Option<EncodingFormat> {
        match name {
            "float" => Some(EncodingFormat::Float),
            "base64" => Some(EncodingFormat::Base64),
            other => Precision::parse(other).map(EncodingFormat::Compact),
        }
    }
}

/// What happens to a model's raw vector before it is answered: unit length (unless
/// `normalize` is off), then truncation to `dimensions` and unit length again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish {
    /// Whether vectors come out with unit length.
    pub normalize: bool,
    /// Keep only the first this many dimensions.
    pub dimensions: Option<usize>,
}

impl Finish {
    /// Applies the post-processing to `v`.
    pub fn apply(&self, v: &mut Vec<f32>) {
        if self.normalize {
            normalize(v);
        }
        if let Some(d) = self.dimensions {
            v.truncate(d);
            if self.normalize {
                normalize(v);
            }
        }
    }
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// Requested model, if named.
    pub model: Option<String>,
    /// Texts, in order.
    pub input: Vec<String>,
    /// Vector encoding.
    pub encoding_format: EncodingFormat,
    /// Truncate vectors to this many dimensions (then re-normalise).
    pub dimensions: Option<usize>,
    /// `text` or `image`.
    pub modality: String,
    /// The model's prompt to prepend to each text (its default when not named).
    pub prompt_name: Option<String>,
    /// What the texts are (`input_type`), mapped onto the model's prompts.
    pub input_type: Option<InputType>,
    /// Whether vectors come out with unit length (TEI's `normalize: false` leaves them raw).
    pub normalize: bool,
    /// What happens to texts longer than the model reads.
    pub truncation: Truncation,
    /// Embed only each text's first this many tokens (Cohere's `max_tokens`).
    pub max_tokens: Option<usize>,
}

/// What the texts of a request are, as clients that do not know the model's prompt names say
/// it (`input_type`: OpenAI-style `query` / `document`, Cohere's `search_query` /
/// `search_document`, `classification`, `clustering`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputType {
    /// Queries of a search.
    Query,
    /// The documents searched.
    Document,
    /// Texts to classify.
    Classification,
    /// Texts to cluster.
    Clustering,
    /// Images (Cohere's `image`): no text prompt.
    Image,
}

impl InputType {
    /// The type called `value`, or a 400 listing the accepted names.
    pub fn parse(value: &str) -> Result<InputType, ApiError> {
        Ok(match value {
            "query" | "search_query" => InputType::Query,
            "document" | "search_document" | "passage" => InputType::Document,
            "classification" => InputType::Classification,
            "clustering" => InputType::Clustering,
            "image" => InputType::Image,
            other => {
                return Err(ApiError::invalid(
                    "input_type",
                    format!(
                        "input_type '{other}' is not one of query, document, search_query, \
                         search_document, passage, classification, clustering, image"
                    ),
                ))
            }
        })
    }

    /// The prompt names that play this role, in the order they are looked for.
    fn prompt_names(self) -> &'static [&'static str] {
        match self {
            InputType::Query => &["query", "search_query"],
            InputType::Document => &["document", "passage", "search_document", "corpus"],
            InputType::Classification => &["classification"],
            InputType::Clustering => &["clustering"],
            InputType::Image => &[],
        }
    }
}

impl EmbeddingsRequest {
    /// Validates a JSON body, naming the field (and item index) of the first problem.
    pub fn parse(body: &Value, max_items: usize) -> Result<Self, ApiError> {
        let body = object(body)?;
        let input = texts(body, "input", max_items)?;
        let encoding_format = match opt_str(body, "encoding_format")? {
            None => EncodingFormat::Float,
            Some(name) => EncodingFormat::parse(&name).ok_or_else(|| {
                ApiError::invalid(
                    "encoding_format",
                    format!(
                        "encoding_format must be one of float, base64, int8, uint8, binary, \
                         ubinary; got '{name}'"
                    ),
                )
            })?,
        };
        let dimensions = opt_positive(body, "dimensions")?;
        let modality = opt_str(body, "modality")?.unwrap_or_else(|| "text".into());
        Ok(EmbeddingsRequest {
            model: opt_str(body, "model")?,
            input,
            encoding_format,
            dimensions,
            modality,
            prompt_name: opt_str(body, "prompt_name")?,
            input_type: opt_str(body, "input_type")?
                .map(|t| InputType::parse(&t))
                .transpose()?,
            normalize: true,
            truncation: truncation(body)?,
            max_tokens: None,
        })
    }

    /// The post-processing its vectors get.
    pub fn finish(&self) -> Finish {
        Finish {
            normalize: self.normalize,
            dimensions: self.dimensions,
        }
    }
}

/// A vector as the response carries it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Embedding {
    /// JSON numbers, written in float32's shortest round-trip form.
    Float(Vec<f32>),
    /// Little-endian float32 bytes, base64-encoded.
    Base64(String),
    /// Quantised codes (`int8`, `uint8`, `binary`, `ubinary`).
    Codes(Vec<i16>),
}

/// One embedding in a response.
#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: &'static str,
    /// Numbers, or a base64 string of little-endian float32.
    pub embedding: Embedding,
    /// Position in the input.
    pub index: usize,
}

/// The OpenAI embeddings response.
#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    /// One entry per input, in order.
    pub data: Vec<EmbeddingData>,
    /// The model that answered.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// How finished vectors are written into a response.
pub enum Writer {
    /// JSON numbers.
    Float,
    /// Little-endian float32 bytes, base64-encoded.
    Base64,
    /// Quantised codes.
    Codes(Quantizer),
}

impl Writer {
    /// The writer of `format` for `model`'s vectors finished by `finish` (calibrating the
    /// model's int8/uint8 ranges on first use).
    pub async fn new(
        model: &DeployedModel,
        format: EncodingFormat,
        finish: Finish,
    ) -> Result<Writer, ApiError> {
        Ok(match format {
            EncodingFormat::Float => Writer::Float,
            EncodingFormat::Base64 => Writer::Base64,
            EncodingFormat::Compact(p) => {
                Writer::Codes(Quantizer::calibrated(model, p, |v| finish.apply(v)).await?)
            }
        })
    }

    /// `v` as the response carries it.
    pub fn write(&self, v: Vec<f32>) -> Embedding {
        match self {
            Writer::Float => Embedding::Float(v),
            Writer::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Writer::Codes(q) => Embedding::Codes(q.codes(&v)),
        }
    }
}

/// What the inputs of a request are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Modality {
    Text,
    Image,
}

fn modality(name: &str) -> Result<Modality, ApiError> {
    match name {
        "text" => Ok(Modality::Text),
        "image" => Ok(Modality::Image),
        "audio" => Err(ApiError::new(
            ErrorKind::NotImplemented,
            "audio modality is not yet implemented; supported modalities: 'text', 'image'",
        )),
        other => Err(ApiError::invalid(
            "modality",
            format!(
                "invalid modality '{other}'; supported modalities: 'text', 'image', 'audio' \
                 (not yet implemented)"
            ),
        )),
    }
}

/// Fetches or decodes every image item and preprocesses it for `model`; the admission keeps
/// the pixels' place in the image budget until the batch is computed.
async fn load_images(
    state: &AppState,
    model: &DeployedModel,
    items: Vec<String>,
) -> Result<(Vec<Payload>, Admission), ApiError> {
    let pre = model
        .manifest
        .preprocessor
        .clone()
        .ok_or_else(|| model.lacks("image_embed", "modality"))?;
    let (height, width) = pre.output_size();
    let (pixels, admission) = state
        .images
        .load(std::sync::Arc::new(pre), items)
        .await
        .map_err(|e| match e {
            LoadError::Refused(Refusal::Never(m)) => ApiError::new(ErrorKind::TooLarge, m),
            LoadError::Refused(Refusal::NotNow(m)) => ApiError::new(ErrorKind::Overloaded, m),
            LoadError::Item(..) => ApiError::invalid("input", e.to_string()),
            LoadError::Internal(_) => ApiError::new(ErrorKind::Internal, e.to_string()),
        })?;
    let payloads = pixels
        .into_iter()
        .map(|values| Payload::Pixels {
            height,
            width,
            values,
        })
        .collect();
    Ok((payloads, admission))
}

/// The prompt to prepend: the one `name`d; else the one the model defines for `input_type`
/// (none when it defines none for it: its default is not meant for that kind of text); else
/// the model's default. A name the model does not define is refused, listing the ones it does.
fn prompt<'m>(
    model: &'m DeployedModel,
    name: Option<&str>,
    input_type: Option<InputType>,
) -> Result<Option<&'m str>, ApiError> {
    let manifest = &model.manifest;
    if let (None, Some(t)) = (name, input_type) {
        return Ok(t
            .prompt_names()
            .iter()
            .find_map(|n| manifest.prompts.get(*n))
            .map(String::as_str));
    }
    let Some(name) = name.or(manifest.default_prompt_name.as_deref()) else {
        return Ok(None);
    };
    match manifest.prompts.get(name) {
        Some(p) => Ok(Some(p.as_str())),
        None if manifest.prompts.is_empty() => Err(ApiError::invalid(
            "prompt_name",
            format!(
                "prompt_name '{name}': model '{}' defines no prompts",
                model.id
            ),
        )),
        None => Err(ApiError::invalid(
            "prompt_name",
            format!(
                "prompt_name '{name}' is not one of model '{}''s prompts: {}",
                model.id,
                manifest
                    .prompts
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The API error for a tokenization failure of the inputs under `param`, naming the item
/// (`input[3]`): 413 for an input too long to take untruncated, else 400.
pub fn text_error(param: &str, e: TextError) -> ApiError {
    match e {
        TextError::TooLong { index, max, len } => ApiError {
            kind: ErrorKind::TooLarge,
            ..ApiError::invalid(
                param,
                format!(
                    "{param}[{index}] is longer than the model's maximum of {max} tokens \
                     ({len} tokens; truncation is turned off: shorten it, or allow truncation)"
                ),
            )
        },
        TextError::Encode { index, reason } => ApiError::invalid(
            param,
            format!("{param}[{index}]: cannot tokenize: {reason}"),
        ),
        TextError::Load(_) => ApiError::invalid(param, e.to_string()),
    }
}

/// A request's finished vectors, in input order.
pub struct Vectors<'a> {
    /// The model that computed them.
    pub model: &'a DeployedModel,
    /// One per input, after the request's post-processing.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read (zero for images).
    pub tokens: usize,
}

/// Computes embeddings for a validated request.
pub async fn embeddings(
    state: &AppState,
    req: EmbeddingsRequest,
) -> Result<EmbeddingsResponse, ApiError> {
    let model = state.model(req.model.as_deref())?;
    // Refused before the writer calibrates anything for it.
    check(model, &req)?;
    check_format(&req, req.encoding_format, "encoding_format")?;
    let writer = Writer::new(model, req.encoding_format, req.finish()).await?;
    let done = vectors(state, req).await?;
    let data = done
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            embedding: writer.write(v),
            index,
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list",
        data,
        model: done.model.id.clone(),
        usage: Usage::of(done.tokens),
    })
}

/// Refuses `req` unless `model` can answer it as asked (modality, `dimensions`, prompts).
pub fn check(model: &DeployedModel, req: &EmbeddingsRequest) -> Result<(), ApiError> {
    let modality = modality(&req.modality)?;
    if let Some(d) = req.dimensions {
        if d > model.dim {
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "dimensions must be at most {} for model '{}', got {d}",
                    model.dim, model.id
                ),
            ));
        }
    }
    match modality {
        Modality::Text
            if matches!(
                model.manifest.abi.kind,
                ModelKind::Rerank | ModelKind::Classify
            ) =>
        {
            Err(model.lacks("embed", "model"))
        }
        Modality::Image if model.manifest.abi.kind != ModelKind::Clip => {
            Err(model.lacks("image_embed", "modality"))
        }
        Modality::Image if req.prompt_name.is_some() => Err(ApiError::invalid(
            "prompt_name",
            "prompt_name applies to text inputs, not images",
        )),
        _ => Ok(()),
    }
}

/// Refuses `format` for `req`'s inputs where it cannot be computed faithfully: int8/uint8
/// ranges are calibrated on texts, and a CLIP model's image vectors lie elsewhere in its space.
pub fn check_format(
    req: &EmbeddingsRequest,
    format: EncodingFormat,
    param: &str,
) -> Result<(), ApiError> {
    match format {
        EncodingFormat::Compact(p @ (Precision::Int8 | Precision::Uint8))
            if req.modality == "image" =>
        {
            Err(ApiError::invalid(
                param,
                format!(
                    "{param}: {} is calibrated on texts and not offered for images; use \
                     float, base64, binary or ubinary",
                    p.name()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Computes the finished vectors of a validated request (its `encoding_format` aside).
pub async fn vectors(state: &AppState, req: EmbeddingsRequest) -> Result<Vectors<'_>, ApiError> {
    let model = state.model(req.model.as_deref())?;
    check(model, &req)?;
    let modality = modality(&req.modality)?;
    let finish = req.finish();
    let (payloads, prompt_tokens, images_admitted) = match modality {
        Modality::Text => {
            let encoder = model.encoder.clone();
            let prompt =
                prompt(model, req.prompt_name.as_deref(), req.input_type)?.map(str::to_string);
            let pool_prompt = model.manifest.abi.include_prompt;
            let texts = req.input;
            let how = req.truncation;
            let max_tokens = req.max_tokens;
            let tokens = tokenized(&model.id, move || {
                let texts = match max_tokens {
                    Some(n) => encoder.heads(texts, n, how == Truncation::Left)?,
                    None => texts,
                };
                match &prompt {
                    Some(p) => encoder.encode_prompted(p, &texts, pool_prompt, how),
                    None => encoder.encode_with(&texts, how),
                }
            })
            .await?
            .map_err(|e| text_error("input", e))?;
            let count: usize = tokens.iter().map(|t| t.len()).sum();
            (
                tokens.into_iter().map(Payload::Tokens).collect(),
                count,
                None,
            )
        }
        Modality::Image => {
            // Queue places first, so that no pixels are computed for items the queue refuses;
            // images count no tokens.
            let places = model.engine.reserve(req.input.len())?;
            let (payloads, admission) = load_images(state, model, req.input).await?;
            (payloads, 0, Some((places, admission)))
        }
    };
    let outputs = match images_admitted {
        Some((places, admission)) => {
            let outputs = places.run(payloads).await?;
            drop(admission);
            outputs
        }
        None => model.engine.run(payloads).await?,
    };
    let mut vectors = Vec::with_capacity(outputs.len());
    for out in outputs {
        let Output::Vector(mut v) = out else {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "the model returned a score where a vector was expected",
            ));
        };
        finish.apply(&mut v);
        vectors.push(v);
    }
    Ok(Vectors {
        model,
        vectors,
        tokens: prompt_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<EmbeddingsRequest, ApiError> {
        EmbeddingsRequest::parse(&v, 4)
    }

    #[test]
    fn accepts_string_and_list_inputs() {
        let r = parse(json!({"input": "hi", "model": "m"})).unwrap();
        assert_eq!(r.input, vec!["hi"]);
        assert_eq!(r.encoding_format, EncodingFormat::Float);
        let r = parse(json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}))
            .unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
        assert_eq!(r.dimensions, Some(8));
    }

    #[test]
    fn input_types_of_openai_and_cohere_clients_are_read() {
        for (given, want) in [
            ("query", InputType::Query),
            ("search_query", InputType::Query),
            ("document", InputType::Document),
            ("search_document", InputType::Document),
            ("clustering", InputType::Clustering),
            ("image", InputType::Image),
        ] {
            let r = parse(json!({"input": "a", "input_type": given})).unwrap();
            assert_eq!(r.input_type, Some(want), "{given}");
        }
        assert_eq!(parse(json!({"input": "a"})).unwrap().input_type, None);
        let e = parse(json!({"input": "a", "input_type": "summary"})).unwrap_err();
        assert_eq!((e.status(), e.param.as_deref()), (400, Some("input_type")));
        assert!(e.message.contains("'summary'"), "{}", e.message);
    }

    #[test]
    fn errors_name_field_and_index() {
        let e = parse(json!({"input": ["a", 3]})).unwrap_err();
        assert_eq!((e.status(), e.param.as_deref()), (400, Some("input")));
        assert!(e.message.contains("input[1]"), "{}", e.message);
        let e = parse(json!({"input": "a", "encoding_format": "hex"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
        let e = parse(json!({"input": "a", "dimensions": 0})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("dimensions"));
        let e = parse(json!({"input": []})).unwrap_err();
        assert!(e.message.contains("empty"));
        let e = parse(json!({"input": vec!["a"; 5]})).unwrap_err();
        assert_eq!(e.status(), 413);
        let e = parse(json!(["a"])).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("body"));
        let e = parse(json!({"input": "a", "model": 5})).unwrap_err();
        assert!(e.message.contains("model must be a string"));
    }

    #[test]
    fn base64_is_little_endian_float32() {
        let Embedding::Base64(v) = Writer::Base64.write(vec![1.0, -2.5]) else {
            panic!("expected base64")
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn normalize_handles_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
