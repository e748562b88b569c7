//! `/v1/embeddings`: text and image inputs, float, base64 or compact vectors, `dimensions`.

use super::compact::Precision;
use super::fields::{object, opt_bool, opt_positive, opt_str, texts, truncation};
use super::hybrid::Wants;
use super::{encode, ApiError, AppState, DeployedModel, ErrorKind};
use crate::engine::{Output, Payload};
use crate::images::{Admission, LoadError, Refusal};
use crate::text::{TextError, Truncation};
use ember_plugin_api::ModelKind;
use serde_json::Value;

#[cfg(test)]
mod tests;
mod vectors;

pub use vectors::{
    normalize, Embedding, EmbeddingData, EmbeddingsResponse, EncodingFormat, Finish, Writer,
};

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
    /// The outputs asked for (`outputs`), when the request names them; else the model's own.
    pub outputs: Option<Wants>,
    /// Whether sparse weights come with their tokens' text (`return_tokens`).
    pub return_tokens: bool,
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
            outputs: Wants::parse(body)?,
            return_tokens: opt_bool(body, "return_tokens")?.unwrap_or(false),
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
pub(crate) fn prompt<'m>(
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
    let wants = req.outputs.unwrap_or_else(|| Wants::default_for(model));
    if wants != Wants::DENSE || Wants::default_for(model) != Wants::DENSE {
        return super::hybrid::embeddings(state, model, req, wants).await;
    }
    // Refused before the writer calibrates anything for it.
    check(model, &req)?;
    check_format(&req, req.encoding_format, "encoding_format")?;
    let writer = Writer::new(model, req.encoding_format, req.finish()).await?;
    let done = vectors(state, req).await?;
    let data = done
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData::of(index, writer.write(v)))
        .collect();
    Ok(EmbeddingsResponse::of(done.model, data, done.tokens))
}

/// Refuses `req` unless `model` can answer it as asked (modality, `dimensions`, prompts).
pub fn check(model: &DeployedModel, req: &EmbeddingsRequest) -> Result<(), ApiError> {
    let modality = modality(&req.modality)?;
    if model.manifest.sparse.is_some() {
        return Err(ApiError::invalid(
            "model",
            format!(
                "model '{}' is a SPLADE model: its embeddings are sparse vocabulary weights, \
                 answered by POST /v1/embeddings (as sparse_embedding) and POST /embed_sparse",
                model.id
            ),
        ));
    }
    if model.manifest.is_multi_vector() {
        return Err(ApiError::invalid(
            "model",
            format!(
                "model '{}' is a multi-vector (late-interaction) model: its embeddings are one \
                 vector per token, answered by POST /v1/embeddings, and POST /v1/rerank scores \
                 documents with them",
                model.id
            ),
        ));
    }
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
            let (payloads, count) = encode(model, "input", Payload::Tokens, move || {
                let texts = match max_tokens {
                    Some(n) => encoder.heads(texts, n, how == Truncation::Left)?,
                    None => texts,
                };
                match &prompt {
                    Some(p) => encoder.encode_prompted(p, &texts, pool_prompt, how),
                    None => encoder.encode_with(&texts, how),
                }
            })
            .await?;
            (payloads, count, None)
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
