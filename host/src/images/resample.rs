//! Resizing that computes only the pixels a center crop keeps.
//!
//! `image::imageops::resize` materialises the whole resized image (as float RGBA, then RGB),
//! so a 5,000,000x8 image resized to a 224-pixel shortest edge asks for ~94 GB before the crop
//! throws nearly all of it away. [`resize_window`] computes the same two separable passes
//! (vertical first, then horizontal, with the crate's kernels and weights, bit for bit) but
//! only for the output window that is kept, one output row at a time: its memory is the
//! window plus one row of source columns, whatever the input's shape.

use image::imageops::FilterType;
use image::RgbImage;

/// A separable filter: its kernel and its support in output pixels, as `image` defines them.
struct Filter {
    kernel: fn(f32) -> f32,
    support: f32,
}

fn sinc(t: f32) -> f32 {
    let a = t * std::f32::consts::PI;
    if t == 0.0 {
        1.0
    } else {
        a.sin() / a
    }
}

fn lanczos3(x: f32) -> f32 {
    if x.abs() < 3.0 {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

fn bc_cubic_spline(x: f32, b: f32, c: f32) -> f32 {
    let a = x.abs();
    let k = if a < 1.0 {
        (12.0 - 9.0 * b - 6.0 * c) * a.powi(3)
            + (-18.0 + 12.0 * b + 6.0 * c) * a.powi(2)
            + (6.0 - 2.0 * b)
    } else if a < 2.0 {
        (-b - 6.0 * c) * a.powi(3)
            + (6.0 * b + 30.0 * c) * a.powi(2)
            + (-12.0 * b - 48.0 * c) * a
            + (8.0 * b + 24.0 * c)
    } else {
        0.0
    };
    k / 6.0
}

fn catmull_rom(x: f32) -> f32 {
    bc_cubic_spline(x, 0.0, 0.5)
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 {
        1.0 - x.abs()
    } else {
        0.0
    }
}

fn gaussian(x: f32) -> f32 {
    let r = 0.5f32;
    ((2.0 * std::f32::consts::PI).sqrt() * r).recip() * (-x.powi(2) / (2.0 * r.powi(2))).exp()
}

fn unit_box(_x: f32) -> f32 {
    1.0
}

fn filter_of(filter: FilterType) -> Filter {
    match filter {
        FilterType::Nearest => Filter {
            kernel: unit_box,
            support: 0.0,
        },
        FilterType::Triangle => Filter {
            kernel: triangle,
            support: 1.0,
        },
        FilterType::CatmullRom => Filter {
            kernel: catmull_rom,
            support: 2.0,
        },
        FilterType::Gaussian => Filter {
            kernel: gaussian,
            support: 3.0,
        },
        FilterType::Lanczos3 => Filter {
            kernel: lanczos3,
            support: 3.0,
        },
    }
}

/// The source pixels one output pixel reads along one axis, and their normalised weights.
struct Taps {
    first: u32,
    weights: Vec<f32>,
}

/// The taps of output position `out` when `src` pixels are resized to `dst`, exactly as
/// `image`'s `vertical_sample` / `horizontal_sample` compute them.
fn taps(out: u32, src: u32, dst: u32, filter: &Filter) -> Taps {
    let ratio = src as f32 / dst as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let src_support = filter.support * sratio;
    let input = (out as f32 + 0.5) * ratio;
    let left = ((input - src_support).floor() as i64).clamp(0, src as i64 - 1);
    let right = ((input + src_support).ceil() as i64).clamp(left + 1, src as i64);
    let input = input - 0.5;
    let mut weights: Vec<f32> = (left..right)
        .map(|i| (filter.kernel)((i as f32 - input) / sratio))
        .collect();
    let sum: f32 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= sum);
    Taps {
        first: left as u32,
        weights,
    }
}

/// The part of `img` resized to `size` (width, height) that lies in the window of
/// `window` (height, width) pixels whose top-left corner is at (`top`, `left`) of the resized
/// image; positions outside the resized image are `None` (the crop's zero padding).
/// Row-major, `window.0 * window.1` entries. Equal to cropping `imageops::resize`'s result.
pub fn resize_window(
    img: &RgbImage,
    size: (u32, u32),
    window: (u32, u32),
    (top, left): (i64, i64),
    filter: FilterType,
) -> Vec<Option<[u8; 3]>> {
    let (sw, sh) = img.dimensions();
    let (nw, nh) = size;
    let (wh, ww) = window;
    let mut out = vec![None; wh as usize * ww as usize];
    let rows: Vec<u32> = (0..wh as i64)
        .map(|y| y + top)
        .filter(|y| (0..nh as i64).contains(y))
        .map(|y| y as u32)
        .collect();
    let cols: Vec<u32> = (0..ww as i64)
        .map(|x| x + left)
        .filter(|x| (0..nw as i64).contains(x))
        .map(|x| x as u32)
        .collect();
    if rows.is_empty() || cols.is_empty() || sw == 0 || sh == 0 {
        return out;
    }
    let at = |y: u32, x: u32| ((y as i64 - top) * ww as i64 + (x as i64 - left)) as usize;
    if (nw, nh) == (sw, sh) {
        for &y in &rows {
            for &x in &cols {
                out[at(y, x)] = Some(img.get_pixel(x, y).0);
            }
        }
        return out;
    }
    let filter = filter_of(filter);
    let col_taps: Vec<Taps> = cols.iter().map(|&x| taps(x, sw, nw, &filter)).collect();
    // The source columns the kept output columns read: one row of these at a time.
    let c0 = col_taps.iter().map(|t| t.first).min().unwrap_or(0);
    let c1 = col_taps
        .iter()
        .map(|t| t.first + t.weights.len() as u32)
        .max()
        .unwrap_or(0);
    let mut row = vec![[0f32; 3]; (c1 - c0) as usize];
    for &y in &rows {
        // Vertical pass for this output row, over the needed source columns only.
        let vt = taps(y, sh, nh, &filter);
        for (c, acc) in (c0..c1).zip(row.iter_mut()) {
            let mut t = [0f32; 3];
            for (i, w) in vt.weights.iter().enumerate() {
                let p = img.get_pixel(c, vt.first + i as u32).0;
                t[0] += p[0] as f32 * w;
                t[1] += p[1] as f32 * w;
                t[2] += p[2] as f32 * w;
            }
            *acc = t;
        }
        // Horizontal pass, rounded and clamped to 8 bits as `image` stores its result.
        for (&x, ht) in cols.iter().zip(&col_taps) {
            let mut t = [0f32; 3];
            for (i, w) in ht.weights.iter().enumerate() {
                let p = row[(ht.first - c0) as usize + i];
                t[0] += p[0] * w;
                t[1] += p[1] * w;
                t[2] += p[2] * w;
            }
            let px = t.map(|v| v.clamp(0.0, 255.0).round() as u8);
            out[at(y, x)] = Some(px);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops;

    /// A deterministic, busy test image.
    fn noise(w: u32, h: u32) -> RgbImage {
        let mut s = 0x9e37_79b9u32;
        RgbImage::from_fn(w, h, |_, _| {
            let mut c = [0u8; 3];
            for v in &mut c {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                *v = (s >> 24) as u8;
            }
            image::Rgb(c)
        })
    }

    /// The reference: `image`'s full resize, then the crop window with zero padding.
    fn reference(
        img: &RgbImage,
        (nw, nh): (u32, u32),
        (wh, ww): (u32, u32),
        (top, left): (i64, i64),
        filter: FilterType,
    ) -> Vec<Option<[u8; 3]>> {
        let full = imageops::resize(img, nw, nh, filter);
        let mut out = Vec::new();
        for y in 0..wh as i64 {
            for x in 0..ww as i64 {
                let (sy, sx) = (y + top, x + left);
                out.push(
                    (sy >= 0 && sx >= 0 && sy < nh as i64 && sx < nw as i64)
                        .then(|| full.get_pixel(sx as u32, sy as u32).0),
                );
            }
        }
        out
    }

    #[test]
    fn equals_imageops_resize_then_crop_bit_for_bit() {
        let filters = [
            FilterType::Nearest,
            FilterType::Triangle,
            FilterType::CatmullRom,
            FilterType::Gaussian,
            FilterType::Lanczos3,
        ];
        // (source w, h), (resized w, h), (window h, w), (top, left)
        let cases = [
            ((40, 30), (21, 16), (16, 16), (0, 2)), // downscale, crop inside
            ((9, 13), (16, 23), (16, 16), (3, 0)),  // upscale
            ((200, 11), (330, 18), (18, 18), (0, 156)), // wide
            ((12, 12), (12, 12), (8, 8), (2, 2)),   // same size: a plain crop
            ((20, 10), (10, 5), (8, 8), (-1, 1)),   // window larger than the image
            ((17, 31), (17, 40), (10, 17), (15, 0)), // one axis unchanged
        ];
        for (src, size, window, corner) in cases {
            let img = noise(src.0, src.1);
            for filter in filters {
                assert_eq!(
                    resize_window(&img, size, window, corner, filter),
                    reference(&img, size, window, corner, filter),
                    "{src:?} -> {size:?}, window {window:?} at {corner:?}, {filter:?}"
                );
            }
        }
    }

    #[test]
    fn extreme_aspect_ratio_costs_only_the_window() {
        // 500,000 x 8 to a 224 shortest edge would be 14,000,000 x 224 (9.4 GB of RGB);
        // the window is 224 x 224.
        let img = RgbImage::from_pixel(500_000, 8, image::Rgb([10, 200, 30]));
        let out = resize_window(
            &img,
            (14_000_000, 224),
            (224, 224),
            (0, 6_999_888),
            FilterType::CatmullRom,
        );
        assert_eq!(out.len(), 224 * 224);
        assert!(out.iter().all(|p| *p == Some([10, 200, 30])));
    }
}
