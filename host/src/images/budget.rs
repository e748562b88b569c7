//! The process-wide bounds on image work: how many images are decoded at once, how many
//! bytes of decoded pixels are held at once, and how many bytes of preprocessed tensors are
//! admitted (being made, waiting in a queue or in a batch). Memory is admitted before it is
//! spent: a request's tensors are admitted all or nothing before any of its images is
//! decoded, and each decode waits until the bytes its header says it needs are free.

use super::preprocess::{self, ImageLimits, Preprocessor};
use super::ImageError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Semaphore permits count KiB, so that budgets of terabytes fit `acquire_many`'s `u32`.
const UNIT: u64 = 1024;

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Why a request's images were not admitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The request alone needs more than the whole budget: it can never be admitted (413).
    #[error("{0}")]
    Never(String),
    /// The budget is taken by other requests now; retrying later may succeed (429).
    #[error("{0}")]
    NotNow(String),
}

/// Bounds on image decoding and preprocessed tensors, shared by all requests.
pub struct ImageBudget {
    limits: ImageLimits,
    decodes: Semaphore,
    decode_bytes: Semaphore,
    decode_budget: u64,
    queued: Arc<Semaphore>,
    queued_budget: u64,
}

/// Tensor bytes admitted for one request's images; given back when dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ImageBudget {
    /// A budget of `decodes` concurrent decodes, `decode_budget` bytes of decoded pixels and
    /// `queued_budget` bytes of admitted tensors, checking each image against `limits`.
    pub fn new(
        limits: ImageLimits,
        decodes: usize,
        decode_budget: u64,
        queued_budget: u64,
    ) -> ImageBudget {
        ImageBudget {
            limits,
            decodes: Semaphore::new(decodes.max(1)),
            decode_bytes: Semaphore::new(units(decode_budget) as usize),
            decode_budget,
            queued: Arc::new(Semaphore::new(units(queued_budget) as usize)),
            queued_budget,
        }
    }

    /// Admits the tensors of `items` images of `tensor_bytes` each, all or none, at once.
    pub fn admit(&self, items: usize, tensor_bytes: u64) -> Result<Admission, Refusal> {
        let need = tensor_bytes.saturating_mul(items as u64);
        if need > self.queued_budget {
            return Err(Refusal::Never(format!(
                "{items} images need {} of preprocessed pixels; at most {} are admitted at once \
                 (IMAGE_QUEUE_BYTES): send fewer images per request",
                mib(need),
                mib(self.queued_budget)
            )));
        }
        match self.queued.clone().try_acquire_many_owned(units(need)) {
            Ok(permit) => Ok(Admission {
                _permit: Some(permit),
            }),
            Err(_) => Err(Refusal::NotNow(format!(
                "the image queue is full ({} of preprocessed pixels admitted, \
                 IMAGE_QUEUE_BYTES); retry later",
                mib(self.queued_budget)
            ))),
        }
    }

    /// Checks an image's header, waits for a decode slot and the bytes its decoding needs,
    /// then decodes and preprocesses it on a blocking thread.
    pub async fn preprocess(
        &self,
        pre: Arc<Preprocessor>,
        bytes: Vec<u8>,
    ) -> Result<Vec<f32>, ImageError> {
        let probe = preprocess::probe(&bytes, self.limits)?;
        if probe.decode_bytes > self.decode_budget {
            return Err(ImageError(format!(
                "decoding this image needs {}; at most {} of decoded pixels are held at once \
                 (IMAGE_DECODE_BUDGET_BYTES)",
                mib(probe.decode_bytes),
                mib(self.decode_budget)
            )));
        }
        let shutting_down = |_| ImageError("the server is shutting down".into());
        let _memory = self
            .decode_bytes
            .acquire_many(units(probe.decode_bytes))
            .await
            .map_err(shutting_down)?;
        let _slot = self.decodes.acquire().await.map_err(shutting_down)?;
        tokio::task::spawn_blocking(move || pre.run(&bytes, &probe))
            .await
            .map_err(|e| ImageError(format!("image decoding failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budget(queued: u64) -> ImageBudget {
        let limits = ImageLimits {
            max_pixels: 1 << 24,
            max_aspect_ratio: 10.0,
        };
        ImageBudget::new(limits, 2, 64 << 20, queued)
    }

    #[test]
    fn admission_is_all_or_nothing_and_given_back() {
        let b = budget(10 << 20);
        let first = b.admit(6, 1 << 20).unwrap();
        assert!(matches!(b.admit(6, 1 << 20), Err(Refusal::NotNow(_))));
        let e = b.admit(11, 1 << 20).unwrap_err();
        assert!(
            matches!(&e, Refusal::Never(m) if m.contains("IMAGE_QUEUE_BYTES")),
            "{e:?}"
        );
        drop(first);
        assert!(b.admit(10, 1 << 20).is_ok());
    }

    #[tokio::test]
    async fn preprocess_checks_the_header_first() {
        let b = budget(10 << 20);
        let pre = Arc::new(
            Preprocessor::from_config(&json!({
                "size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16},
            }))
            .unwrap(),
        );
        let png = |w, h| {
            let mut out = std::io::Cursor::new(Vec::new());
            image::RgbImage::new(w, h)
                .write_to(&mut out, image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        let e = b.preprocess(pre.clone(), png(200, 8)).await.unwrap_err();
        assert!(e.0.contains("IMAGE_MAX_ASPECT_RATIO"), "{e}");
        let px = b.preprocess(pre, png(40, 20)).await.unwrap();
        assert_eq!(px.len(), 3 * 16 * 16);
    }
}
