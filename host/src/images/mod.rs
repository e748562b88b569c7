//! Image inputs: where an item's bytes come from (URL, data URI, raw base64), fetching them
//! safely, admitting them within the process's image budget, decoding and the model's
//! CLIP-style preprocessing into normalised pixels.

pub mod budget;
pub mod fetch;
pub mod preprocess;
pub mod resample;
pub mod source;

pub use budget::{Admission, ImageBudget, Refusal};
pub use fetch::Fetcher;
pub use preprocess::Preprocessor;

use crate::config::ImageSettings;
use preprocess::ImageLimits;
use source::Source;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Why one image item was refused; the message is shown to the caller after "item N: ".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);

/// Why a request's images could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// The request's images were not admitted within the image budget.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Item `.0` (its index in the request) is not a usable image.
    #[error("input item {0}: {1}")]
    Item(usize, ImageError),
    /// A task of the server failed.
    #[error("image task failed: {0}")]
    Internal(String),
}

/// The process's image input service: downloads and the budget for decoding.
pub struct Images {
    fetcher: Fetcher,
    budget: ImageBudget,
    downloads_per_request: usize,
}

impl Images {
    /// The service configured by the `HTTP_CLIENT_*` and `IMAGE_*` settings.
    pub fn new(settings: &ImageSettings) -> Result<Images, String> {
        let limits = ImageLimits {
            max_pixels: settings.max_pixels,
            max_aspect_ratio: settings.max_aspect_ratio,
        };
        Ok(Images {
            fetcher: Fetcher::new(settings)?,
            budget: ImageBudget::new(
                limits,
                settings.decode_concurrency,
                settings.decode_budget_bytes,
                settings.queue_bytes,
            ),
            downloads_per_request: settings.downloads_per_request,
        })
    }

    /// Loads the items of one request for `pre`: admits their tensors first (all or none),
    /// then fetches them (at most `IMAGE_DOWNLOADS_PER_REQUEST` downloads of this request at
    /// once) and decodes them within the budget. The pixels come back in input order with the
    /// admission, which must be kept until the pixels are no longer needed.
    pub async fn load(
        self: &Arc<Self>,
        pre: Arc<Preprocessor>,
        items: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, Admission), LoadError> {
        let admission = self.budget.admit(items.len(), pre.tensor_bytes())?;
        let downloads = Arc::new(Semaphore::new(self.downloads_per_request));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, item) in items.into_iter().enumerate() {
            let images = self.clone();
            let pre = pre.clone();
            let downloads = downloads.clone();
            tasks.spawn(async move {
                let result = async {
                    let bytes = match source::parse(&item)? {
                        Source::Url(url) => images.fetcher.get(&url, &downloads).await?,
                        Source::Inline(bytes) => images.fetcher.check_size(bytes)?,
                    };
                    drop(item);
                    images.budget.preprocess(pre, bytes).await
                };
                (index, result.await)
            });
        }
        let mut done: Vec<Vec<f32>> = vec![Vec::new(); tasks.len()];
        let mut first_error: Option<(usize, ImageError)> = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((index, Ok(pixels))) => done[index] = pixels,
                Ok((index, Err(e))) => {
                    // Report the first failing item in input order, whatever order tasks end in.
                    if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                        first_error = Some((index, e));
                    }
                }
                Err(e) => return Err(LoadError::Internal(e.to_string())),
            }
        }
        match first_error {
            Some((index, e)) => Err(LoadError::Item(index, e)),
            None => Ok((done, admission)),
        }
    }
}
