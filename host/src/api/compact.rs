//! Compact vectors: `int8`, `uint8`, `binary` and `ubinary`, computed as sentence-transformers'
//! `quantize_embeddings` computes them. `binary`/`ubinary` pack the signs of the components
//! into bytes. `int8`/`uint8` map each dimension's range onto 256 buckets; ember calibrates
//! those ranges once per model on a fixed corpus (`calibration.txt`) rather than on the
//! request's own vectors, so that a vector's codes do not depend on what it was sent with,
//! and a single query can be quantised at all.

use super::{text_error, ApiError, DeployedModel, ErrorKind};
use crate::engine::{Output, Payload};
use crate::text::Truncation;
use std::sync::Arc;

/// The calibration corpus: 100 short texts of varied kinds, one per line.
pub const CALIBRATION: &str = include_str!("calibration.txt");

/// Most items per engine call while calibrating (fewer when the queue holds fewer), so that
/// calibrating never takes the whole queue from the requests waiting behind it.
const CALIBRATION_CHUNK: usize = 8;

/// A compact precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// One signed byte per dimension, -128..=127.
    Int8,
    /// One unsigned byte per dimension, 0..=255.
    Uint8,
    /// Signs packed eight to a byte, as signed bytes (-128..=127).
    Binary,
    /// Signs packed eight to a byte, as unsigned bytes (0..=255).
    Ubinary,
}

impl Precision {
    /// The precision called `name` (`int8`, `uint8`, `binary`, `ubinary`).
    pub fn parse(name: &str) -> Option<Precision> {
        Some(match name {
            "int8" => Precision::Int8,
            "uint8" => Precision::Uint8,
            "binary" => Precision::Binary,
            "ubinary" => Precision::Ubinary,
            _ => return None,
        })
    }

    /// Its name in requests and responses.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Uint8 => "uint8",
            Precision::Binary => "binary",
            Precision::Ubinary => "ubinary",
        }
    }
}

/// Each dimension's bucket start and width, from the minimum and maximum of a set of vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    start: Vec<f32>,
    step: Vec<f32>,
}

impl Ranges {
    /// The ranges of `vectors` (all of one length), as `quantize_embeddings` derives them.
    pub fn of(vectors: &[Vec<f32>]) -> Ranges {
        let dim = vectors.first().map_or(0, Vec::len);
        let mut min = vec![f32::INFINITY; dim];
        let mut max = vec![f32::NEG_INFINITY; dim];
        for v in vectors {
            for ((lo, hi), x) in min.iter_mut().zip(&mut max).zip(v) {
                *lo = lo.min(*x);
                *hi = hi.max(*x);
            }
        }
        let step = min
            .iter()
            .zip(&max)
            .map(|(lo, hi)| {
                let step = (hi - lo) / 255.0;
                if step == 0.0 {
                    1.0
                } else {
                    step
                }
            })
            .collect();
        Ranges { start: min, step }
    }
}

/// How a request's vectors become codes: a precision, and its ranges where it needs them.
#[derive(Debug, Clone)]
pub struct Quantizer {
    precision: Precision,
    ranges: Option<Ranges>,
}

impl Quantizer {
    /// A quantizer that needs no ranges (`binary`, `ubinary`); `None` for `int8`/`uint8`.
    pub fn packed(precision: Precision) -> Option<Quantizer> {
        matches!(precision, Precision::Binary | Precision::Ubinary).then_some(Quantizer {
            precision,
            ranges: None,
        })
    }

    /// A quantizer whose `int8`/`uint8` ranges come from `model`'s calibration vectors after
    /// `finish`, the same post-processing the request's own vectors go through.
    pub async fn calibrated(
        model: &DeployedModel,
        precision: Precision,
        finish: impl Fn(&mut Vec<f32>),
    ) -> Result<Quantizer, ApiError> {
        if let Some(q) = Quantizer::packed(precision) {
            return Ok(q);
        }
        let raw = calibration(model).await?;
        let finished: Vec<Vec<f32>> = raw
            .iter()
            .map(|v| {
                let mut v = v.clone();
                finish(&mut v);
                v
            })
            .collect();
        Ok(Quantizer {
            precision,
            ranges: Some(Ranges::of(&finished)),
        })
    }

    /// Its precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The codes of `v`: one per dimension for `int8`/`uint8`, one per eight dimensions
    /// (the last byte padded with zero bits) for `binary`/`ubinary`.
    pub fn codes(&self, v: &[f32]) -> Vec<i16> {
        match (self.precision, &self.ranges) {
            (Precision::Int8 | Precision::Uint8, Some(r)) => {
                let offset = if self.precision == Precision::Int8 {
                    128
                } else {
                    0
                };
                v.iter()
                    .zip(r.start.iter().zip(&r.step))
                    .map(|(x, (start, step))| {
                        ((x - start) / step).floor().clamp(0.0, 255.0) as i16 - offset
                    })
                    .collect()
            }
            (Precision::Binary | Precision::Ubinary, _) => {
                let offset = if self.precision == Precision::Binary {
                    128
                } else {
                    0
                };
                v.chunks(8)
                    .map(|bits| {
                        let byte = bits
                            .iter()
                            .enumerate()
                            .fold(0i16, |acc, (i, x)| acc | (i16::from(*x > 0.0) << (7 - i)));
                        byte - offset
                    })
                    .collect()
            }
            (Precision::Int8 | Precision::Uint8, None) => {
                unreachable!("int8/uint8 quantizers are built with ranges")
            }
        }
    }

    /// The codes of `v` as the bytes they stand for (two's complement for signed codes).
    pub fn bytes(&self, v: &[f32]) -> Vec<u8> {
        self.codes(v).into_iter().map(|c| c as u8).collect()
    }
}

/// `model`'s raw vectors of the calibration corpus, computed on first use and kept.
async fn calibration(model: &DeployedModel) -> Result<Arc<Vec<Vec<f32>>>, ApiError> {
    model
        .calibration
        .get_or_try_init(|| async {
            let started = std::time::Instant::now();
            let texts: Vec<String> = CALIBRATION.lines().map(str::to_string).collect();
            let encoder = model.encoder.clone();
            let tokens =
                tokio::task::spawn_blocking(move || encoder.encode_with(&texts, Truncation::Right))
                    .await
                    .map_err(super::tokenizer_failed)?
                    .map_err(|e| text_error("calibration", e))?;
            let mut vectors = Vec::with_capacity(tokens.len());
            let mut payloads = tokens.into_iter().map(Payload::Tokens).peekable();
            let chunk_size = CALIBRATION_CHUNK.min(model.engine.capacity()).max(1);
            while payloads.peek().is_some() {
                let chunk: Vec<Payload> = payloads.by_ref().take(chunk_size).collect();
                let outputs = model.engine.run(chunk).await.map_err(|e| {
                    let e = ApiError::from(e);
                    ApiError {
                        message: format!(
                            "cannot calibrate the int8/uint8 ranges of model '{}' (done once, \
                             on the first int8/uint8 request): {}; retry later",
                            model.id, e.message
                        ),
                        ..e
                    }
                })?;
                for out in outputs {
                    let Output::Vector(v) = out else {
                        return Err(ApiError::new(
                            ErrorKind::Internal,
                            "the model returned a score where a vector was expected",
                        ));
                    };
                    vectors.push(v);
                }
            }
            tracing::info!(
                model = %model.id,
                texts = vectors.len(),
                ms = started.elapsed().as_millis() as u64,
                "calibrated int8/uint8 ranges"
            );
            Ok(Arc::new(vectors))
        })
        .await
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantizer(precision: Precision, vectors: &[Vec<f32>]) -> Quantizer {
        Quantizer {
            precision,
            ranges: Some(Ranges::of(vectors)),
        }
    }

    #[test]
    fn scalar_codes_follow_sentence_transformers() {
        // Expected codes from sentence-transformers 6.2's quantize_embeddings with these
        // ranges: the maximum itself lands in bucket 254 (float32 rounding), beyond it 255.
        let calib = vec![vec![-1.0, 0.0], vec![1.0, 2.0]];
        let q = quantizer(Precision::Uint8, &calib);
        assert_eq!(q.codes(&[-1.0, 2.0]), vec![0, 254]);
        assert_eq!(q.codes(&[0.0, 1.0]), vec![127, 127]);
        // Outside the calibrated range: clipped, not wrapped.
        assert_eq!(q.codes(&[-5.0, 9.0]), vec![0, 255]);
        let q = quantizer(Precision::Int8, &calib);
        assert_eq!(q.codes(&[-1.0, 2.0]), vec![-128, 126]);
        assert_eq!(q.codes(&[0.0, 1.0]), vec![-1, -1]);
        assert_eq!(q.bytes(&[-1.0, 2.0]), vec![0x80, 0x7e]);
    }

    #[test]
    fn a_constant_dimension_has_step_one() {
        let q = quantizer(Precision::Uint8, &[vec![0.5], vec![0.5]]);
        assert_eq!(q.codes(&[0.5]), vec![0]);
        assert_eq!(q.codes(&[3.7]), vec![3]);
    }

    #[test]
    fn binary_packs_signs_most_significant_bit_first() {
        let v = [1.0, -1.0, 0.0, 2.0, 0.1, -0.1, 0.3, 0.4, 5.0];
        let q = Quantizer::packed(Precision::Ubinary).unwrap();
        // 1 0 0 1 1 0 1 1 | 1 (padded with zeros); as sentence-transformers 6.2 packs them.
        assert_eq!(q.codes(&v), vec![155, 128]);
        let q = Quantizer::packed(Precision::Binary).unwrap();
        assert_eq!(q.codes(&v), vec![27, 0]);
        assert!(Quantizer::packed(Precision::Int8).is_none());
    }

    #[test]
    fn the_corpus_holds_one_hundred_texts() {
        let lines: Vec<&str> = CALIBRATION.lines().collect();
        assert_eq!(lines.len(), 100);
        assert!(lines.iter().all(|l| !l.trim().is_empty()));
    }

    #[test]
    fn precisions_round_trip_their_names() {
        for p in [
            Precision::Int8,
            Precision::Uint8,
            Precision::Binary,
            Precision::Ubinary,
        ] {
            assert_eq!(Precision::parse(p.name()), Some(p));
        }
        assert_eq!(Precision::parse("float"), None);
    }
}
