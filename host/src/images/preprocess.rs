//! Decoding and CLIP-style preprocessing as transformers' CLIP image processor does it:
//! convert to RGB, resize (shortest edge, bicubic by default), center crop, rescale, normalise,
//! channels first.

use super::resample::resize_window;
use super::ImageError;
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
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

    /// Bytes of the CHW float32 tensor one image becomes.
    pub fn tensor_bytes(&self) -> u64 {
        let (h, w) = self.output_size();
        3 * 4 * h as u64 * w as u64
    }

    /// Decodes a probed image and returns its CHW float pixels. Memory is the decoded image
    /// (as [`Probe::decode_bytes`] says) plus the output: only the pixels the center crop keeps
    /// are resized, whatever the image's shape.
    pub fn run(&self, bytes: &[u8], probe: &Probe) -> Result<Vec<f32>, ImageError> {
        let rgb = decode(bytes, probe)?;
        let (w, h) = rgb.dimensions();
        let (nw, nh) = match self.resize {
            Resize::ShortestEdge(edge) => {
                if w <= h {
                    (edge, (edge as u64 * h as u64 / w as u64) as u32)
                } else {
                    ((edge as u64 * w as u64 / h as u64) as u32, edge)
                }
            }
            Resize::Exact(h, w) => (w, h),
            Resize::None => (w, h),
        };
        let (ch, cw) = self.crop.unwrap_or((nh, nw));
        // transformers: top = (height - crop_height) // 2, floor division.
        let top = (nh as i64 - ch as i64).div_euclid(2);
        let left = (nw as i64 - cw as i64).div_euclid(2);
        let window = resize_window(&rgb, (nw, nh), (ch, cw), (top, left), self.filter);
        drop(rgb);
        Ok(self.to_tensor(&window, (ch, cw)))
    }

    /// Rescales and normalises a crop window (zero pixels where the crop pads), channels first.
    fn to_tensor(&self, window: &[Option<[u8; 3]>], (ch, cw): (u32, u32)) -> Vec<f32> {
        let scale = self.rescale.unwrap_or(1.0);
        let plane = (ch * cw) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (at, px) in window.iter().enumerate() {
            let px = px.unwrap_or([0, 0, 0]);
            for c in 0..3 {
                out[c * plane + at] = (px[c] as f32 * scale - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// Limits an image must meet before any of its pixels is decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageLimits {
    /// Most pixels (width x height), `IMAGE_MAX_PIXELS`.
    pub max_pixels: u64,
    /// Largest ratio of the longer side to the shorter, `IMAGE_MAX_ASPECT_RATIO`.
    pub max_aspect_ratio: f64,
}

/// What an image's header says, read before any pixel is decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    format: ImageFormat,
    width: u32,
    height: u32,
    /// Most bytes decoding it holds at once (the decoder's frame and the RGB copy).
    pub decode_bytes: u64,
}

/// Smallest possible JPEG entropy-coded data for `w` x `h` pixels: every 8x8 block of the
/// first component carries at least one Huffman-coded DC symbol of at least one bit.
fn jpeg_min_bytes(w: u32, h: u32) -> u64 {
    (w as u64).div_ceil(8) * (h as u64).div_ceil(8) / 8
}

/// Reads an image's format, size and colour type from its header and checks them against
/// `limits`; corrupt or implausible headers are refused here.
pub fn probe(bytes: &[u8], limits: ImageLimits) -> Result<Probe, ImageError> {
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
    let cannot = |e: image::ImageError| ImageError(format!("cannot decode {format:?} image: {e}"));
    let decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(cannot)?;
    let (w, h) = decoder.dimensions();
    let color = decoder.color_type();
    let frame = decoder.total_bytes();
    drop(decoder);
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(ImageError(format!(
            "image is {w}x{h} ({:.1} megapixels); at most {:.1} megapixels are accepted \
             (IMAGE_MAX_PIXELS)",
            pixels as f64 / 1e6,
            limits.max_pixels as f64 / 1e6
        )));
    }
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(ImageError(format!(
            "image is {w}x{h} pixels; images must be at least {MIN_SIDE}x{MIN_SIDE}"
        )));
    }
    let ratio = w.max(h) as f64 / w.min(h) as f64;
    if ratio > limits.max_aspect_ratio {
        return Err(ImageError(format!(
            "image is {w}x{h} pixels, an aspect ratio of {ratio:.0}:1; at most {}:1 is accepted \
             (IMAGE_MAX_ASPECT_RATIO)",
            limits.max_aspect_ratio
        )));
    }
    let rgb = 3 * pixels;
    let decode_bytes = if format == ImageFormat::Jpeg {
        if (bytes.len() as u64) < jpeg_min_bytes(w, h) {
            return Err(ImageError(format!(
                "cannot decode Jpeg image: {} bytes cannot hold {w}x{h} pixels (at least {} \
                 are needed); the file is truncated or corrupt",
                bytes.len(),
                jpeg_min_bytes(w, h)
            )));
        }
        // The RGB output, and room for a progressive image's coefficients (16 bits each).
        rgb + 2 * rgb
    } else if color == ColorType::Rgb8 {
        frame
    } else {
        frame.saturating_add(rgb)
    };
    Ok(Probe {
        format,
        width: w,
        height: h,
        decode_bytes,
    })
}

/// Decodes a probed image to 8-bit RGB (alpha dropped, grayscale expanded, first frame),
/// allocating no more than its probe allows.
fn decode(bytes: &[u8], probe: &Probe) -> Result<RgbImage, ImageError> {
    let (format, w, h) = (probe.format, probe.width, probe.height);
    if format == ImageFormat::Jpeg {
        return decode_jpeg_strict(bytes, w, h);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // The decoded frame, nothing more (the RGB copy is made outside the decoder).
    limits.max_alloc = Some(probe.decode_bytes.max(1 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageError(format!("cannot decode {format:?} image: {e}")))?;
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
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

    fn process(p: &Preprocessor, bytes: &[u8], max_pixels: u64) -> Result<Vec<f32>, ImageError> {
        let limits = ImageLimits {
            max_pixels,
            max_aspect_ratio: 100.0,
        };
        p.run(bytes, &probe(bytes, limits)?)
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn uniform_image_maps_to_normalised_constant() {
        let img = RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 51]));
        let px = process(&clip(16, 16), &png(&img), 1 << 20).unwrap();
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
        let px = process(&p, &png(&img), 1 << 20).unwrap();
        assert_eq!(px[0], 0.0);
        assert_eq!(px[2 * 12 + 2], 9.0);
    }

    #[test]
    fn refusals_name_the_problem() {
        let p = clip(16, 16);
        let tiny = png(&RgbImage::new(1, 1));
        assert!(process(&p, &tiny, 1 << 20).unwrap_err().0.contains("1x1"));
        let big = png(&RgbImage::new(100, 100));
        let e = process(&p, &big, 5000).unwrap_err().0;
        assert!(e.contains("IMAGE_MAX_PIXELS"), "{e}");
        let html = b"<!DOCTYPE html><html></html>";
        assert!(process(&p, html, 1 << 20).unwrap_err().0.contains("HTML"));
        let good = png(&RgbImage::new(30, 30));
        let cut = &good[..good.len() / 2];
        let e = process(&p, cut, 1 << 20).unwrap_err().0;
        assert!(e.contains("cannot decode"), "{e}");
        let e = process(&p, &png(&RgbImage::new(808, 8)), 1 << 20)
            .unwrap_err()
            .0;
        assert!(
            e.contains("808x8") && e.contains("101:1") && e.contains("IMAGE_MAX_ASPECT_RATIO"),
            "{e}"
        );
    }

    /// A small real JPEG whose frame header is rewritten to claim `w` x `h` pixels.
    fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
        let img = RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        let mut bytes = out.into_inner();
        let sof = bytes
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("a baseline frame header");
        // FFC0, length (2), precision (1), height (2), width (2).
        bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        bytes
    }

    #[test]
    fn a_jpeg_too_short_for_its_header_is_corrupt() {
        let p = clip(16, 16);
        let fake = jpeg_claiming(6000, 6000);
        assert!(fake.len() < 1000);
        let e = process(&p, &fake, 40_000_000).unwrap_err().0;
        assert!(e.contains("6000x6000") && e.contains("corrupt"), "{e}");
        // The same file with its true size decodes.
        assert!(process(&p, &jpeg_claiming(16, 16), 1 << 20).is_ok());
    }

    #[test]
    fn long_thin_images_within_limits_cost_only_their_crop() {
        // 80,000 x 8 resized to a 224 shortest edge would be 2,240,000 x 224 pixels
        // (1.5 GB as RGB, 8 GB as the float intermediate): only the 224 x 224 crop is made.
        let p = clip(224, 224);
        let img = RgbImage::from_pixel(80_000, 8, image::Rgb([255, 0, 51]));
        let limits = ImageLimits {
            max_pixels: 40_000_000,
            max_aspect_ratio: 1e6,
        };
        let bytes = png(&img);
        let probe = probe(&bytes, limits).unwrap();
        assert!(
            probe.decode_bytes <= 2 * 3 * 80_000 * 8,
            "{}",
            probe.decode_bytes
        );
        let px = p.run(&bytes, &probe).unwrap();
        assert_eq!(px.len(), 3 * 224 * 224);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-3;
        assert!(close(px[0], 1.0) && close(px[224 * 224], -1.0) && close(px[2 * 224 * 224], -0.6));
    }

    #[test]
    fn configs_without_fixed_size_are_refused() {
        let e = Preprocessor::from_config(&json!({"size": {"shortest_edge": 10},
            "do_center_crop": false}))
        .unwrap_err();
        assert!(e.contains("fixed-size"), "{e}");
    }
}
