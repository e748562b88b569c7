//! Decoding and CLIP-style preprocessing as transformers' CLIP image processor does it:
//! convert to RGB, resize (shortest edge, bicubic by default), center crop, rescale, normalise,
//! channels first.

use super::ImageError;
use image::imageops::FilterType;
use image::{ImageReader, Limits, RgbImage};
use serde_json::Value;
use std::io::Cursor;

/// Images smaller than this on either side are refused: nothing useful survives the upscale.
pub const MIN_SIDE: u32 = 8;

/// How the model wants its images resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resize {
    /// Shortest edge to this many pixels, keeping the aspect ratio.
    ShortestEdge(u32),
    /// Exactly this height and width.
    Exact(u32, u32),
    /// No resizing.
    None,
}

/// A model's image preprocessing, read from its `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    resize: Resize,
    filter: FilterType,
    crop: Option<(u32, u32)>,
    rescale: Option<f32>,
    mean: [f32; 3],
    std: [f32; 3],
}

fn triple(v: Option<&Value>, default: [f32; 3]) -> Result<[f32; 3], String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().ok_or("expected numbers")? as f32;
            }
            Ok(out)
        }
        Some(other) => Err(format!("expected a list of 3 numbers, got {other}")),
    }
}

fn size_of(v: &Value) -> Option<(Option<u32>, Option<u32>, Option<u32>)> {
    let get = |k: &str| v.get(k).and_then(Value::as_u64).map(|n| n as u32);
    match v {
        Value::Number(n) => n.as_u64().map(|n| (Some(n as u32), None, None)),
        Value::Object(_) => Some((get("shortest_edge"), get("height"), get("width"))),
        _ => None,
    }
}

impl Preprocessor {
    /// Reads a `preprocessor_config.json` (CLIP-style image processors).
    pub fn from_config(config: &Value) -> Result<Preprocessor, String> {
        let flag = |k: &str| config.get(k).and_then(Value::as_bool).unwrap_or(true);
        let resize = if !flag("do_resize") {
            Resize::None
        } else {
            match config.get("size").and_then(size_of) {
                Some((Some(edge), _, _)) => Resize::ShortestEdge(edge),
                Some((None, Some(h), Some(w))) => Resize::Exact(h, w),
                _ => return Err("`size` must give shortest_edge, or height and width".into()),
            }
        };
        // PIL resampling codes, as transformers writes them.
        let filter = match config.get("resample").and_then(Value::as_u64).unwrap_or(3) {
            0 => FilterType::Nearest,
            1 => FilterType::Lanczos3,
            2 => FilterType::Triangle,
            3 => FilterType::CatmullRom,
            other => return Err(format!("resample={other} is not supported (0-3 are)")),
        };
        let crop = if flag("do_center_crop") {
            match config.get("crop_size").and_then(size_of) {
                Some((_, Some(h), Some(w))) => Some((h, w)),
                Some((Some(e), None, None)) => Some((e, e)),
                _ => return Err("`crop_size` must give height and width".into()),
            }
        } else {
            None
        };
        if crop.is_none() && !matches!(resize, Resize::Exact(..)) {
            return Err(
                "images would keep their own sizes (no center crop and no fixed \
                        resize); only fixed-size vision inputs are supported"
                    .into(),
            );
        }
        let rescale = if flag("do_rescale") {
            Some(
                config
                    .get("rescale_factor")
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0 / 255.0) as f32,
            )
        } else {
            None
        };
        let (mean, std) = if flag("do_normalize") {
            (
                triple(
                    config.get("image_mean"),
                    [0.481_454_66, 0.457_827_5, 0.408_210_73],
                )
                .map_err(|e| format!("image_mean: {e}"))?,
                triple(
                    config.get("image_std"),
                    [0.268_629_54, 0.261_302_6, 0.275_777_1],
                )
                .map_err(|e| format!("image_std: {e}"))?,
            )
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.contains(&0.0) {
            return Err("image_std must not contain 0".into());
        }
        Ok(Preprocessor {
            resize,
            filter,
            crop,
            rescale,
            mean,
            std,
        })
    }

    /// Height and width of the tensors produced.
    pub fn output_size(&self) -> (u32, u32) {
        match (self.crop, self.resize) {
            (Some(hw), _) => hw,
            (None, Resize::Exact(h, w)) => (h, w),
            _ => unreachable!("rejected by from_config"),
        }
    }

    /// Per-channel mean and standard deviation applied after rescaling.
    pub fn normalization(&self) -> ([f32; 3], [f32; 3]) {
        (self.mean, self.std)
    }

    /// Decodes `bytes` (refusing images over `max_pixels`) and returns CHW float pixels.
    pub fn run(&self, bytes: &[u8], max_pixels: u64) -> Result<Vec<f32>, ImageError> {
        let rgb = decode(bytes, max_pixels)?;
        let resized = match self.resize {
            Resize::ShortestEdge(edge) => {
                let (w, h) = rgb.dimensions();
                let (nw, nh) = if w <= h {
                    (edge, (edge as u64 * h as u64 / w as u64) as u32)
                } else {
                    ((edge as u64 * w as u64 / h as u64) as u32, edge)
                };
                image::imageops::resize(&rgb, nw, nh, self.filter)
            }
            Resize::Exact(h, w) => image::imageops::resize(&rgb, w, h, self.filter),
            Resize::None => rgb,
        };
        Ok(self.to_tensor(&resized))
    }

    /// Center-crops (zero-padding where the image is smaller), rescales and normalises.
    fn to_tensor(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = img.dimensions();
        let (ch, cw) = self.crop.unwrap_or((h, w));
        // transformers: top = (height - crop_height) // 2, floor division.
        let top = (h as i64 - ch as i64).div_euclid(2);
        let left = (w as i64 - cw as i64).div_euclid(2);
        let scale = self.rescale.unwrap_or(1.0);
        let plane = (ch * cw) as usize;
        let mut out = vec![0f32; 3 * plane];
        for y in 0..ch as i64 {
            for x in 0..cw as i64 {
                let (sy, sx) = (y + top, x + left);
                let px = if sy >= 0 && sx >= 0 && sy < h as i64 && sx < w as i64 {
                    img.get_pixel(sx as u32, sy as u32).0
                } else {
                    [0, 0, 0]
                };
                let at = (y * cw as i64 + x) as usize;
                for c in 0..3 {
                    out[c * plane + at] = (px[c] as f32 * scale - self.mean[c]) / self.std[c];
                }
            }
        }
        out
    }
}

/// Decodes any supported format to 8-bit RGB (alpha dropped, grayscale expanded, first frame).
fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError(format!("cannot read image: {e}")))?;
    let Some(format) = reader.format() else {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(15)]).to_lowercase();
        let what = if head.contains("<!doctype") || head.contains("<html") {
            "an HTML page"
        } else {
            "not in a recognised format"
        };
        return Err(ImageError(format!(
            "not an image: the data is {what} (PNG, JPEG, GIF, WebP and BMP are accepted)"
        )));
    };
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| ImageError(format!("cannot decode {format:?} image: {e}")))?;
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(ImageError(format!(
            "image is {w}x{h} ({:.1} megapixels); at most {:.1} megapixels are accepted \
             (IMAGE_MAX_PIXELS)",
            pixels as f64 / 1e6,
            max_pixels as f64 / 1e6
        )));
    }
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(ImageError(format!(
            "image is {w}x{h} pixels; images must be at least {MIN_SIDE}x{MIN_SIDE}"
        )));
    }
    if format == image::ImageFormat::Jpeg {
        return decode_jpeg_strict(bytes, w, h);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // Room for the decoded frame at up to 16 bytes a pixel (RGBA float), nothing more.
    limits.max_alloc = Some(pixels.saturating_mul(16).max(1 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageError(format!("cannot decode {format:?} image: {e}")))?;
    Ok(img.to_rgb8())
}

/// Decodes a JPEG to RGB, failing on truncated or corrupt data.
fn decode_jpeg_strict(bytes: &[u8], w: u32, h: u32) -> Result<RgbImage, ImageError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(w as usize)
        .set_max_height(h as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|e| {
        ImageError(format!(
            "cannot decode Jpeg image: {e} (the file may be truncated)"
        ))
    })?;
    RgbImage::from_raw(w, h, pixels)
        .ok_or_else(|| ImageError("cannot decode Jpeg image: unexpected pixel data size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clip(edge: u32, crop: u32) -> Preprocessor {
        Preprocessor::from_config(&json!({
            "size": {"shortest_edge": edge}, "crop_size": {"height": crop, "width": crop},
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
        }))
        .unwrap()
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn uniform_image_maps_to_normalised_constant() {
        let img = RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 51]));
        let px = clip(16, 16).run(&png(&img), 1 << 20).unwrap();
        assert_eq!(px.len(), 3 * 16 * 16);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        assert!(close(px[0], 1.0) && close(px[256], -1.0) && close(px[512], -0.6));
    }

    #[test]
    fn crop_larger_than_image_pads_with_zero_pixels() {
        let p = Preprocessor::from_config(&json!({
            "do_resize": false, "crop_size": {"height": 12, "width": 12},
            "do_normalize": false, "do_rescale": false,
        }))
        .unwrap();
        let img = RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]));
        let px = p.run(&png(&img), 1 << 20).unwrap();
        assert_eq!(px[0], 0.0);
        assert_eq!(px[2 * 12 + 2], 9.0);
    }

    #[test]
    fn refusals_name_the_problem() {
        let p = clip(16, 16);
        let tiny = png(&RgbImage::new(1, 1));
        assert!(p.run(&tiny, 1 << 20).unwrap_err().0.contains("1x1"));
        let big = png(&RgbImage::new(100, 100));
        assert!(p
            .run(&big, 5000)
            .unwrap_err()
            .0
            .contains("IMAGE_MAX_PIXELS"));
        let html = b"<!DOCTYPE html><html></html>";
        assert!(p.run(html, 1 << 20).unwrap_err().0.contains("HTML"));
        let good = png(&RgbImage::new(30, 30));
        let cut = &good[..good.len() / 2];
        assert!(p.run(cut, 1 << 20).unwrap_err().0.contains("cannot decode"));
    }

    #[test]
    fn configs_without_fixed_size_are_refused() {
        let e = Preprocessor::from_config(&json!({"size": {"shortest_edge": 10},
            "do_center_crop": false}))
        .unwrap_err();
        assert!(e.contains("fixed-size"), "{e}");
    }
}
