//! Property tests over hostile inputs: request parsing and image decoding must answer every
//! input with a value or an error, never a panic, and image work must stay within its limits.
//! `PROPTEST_CASES` sets the number of cases per property (CI runs the default below).

use ember_host::api::{EmbeddingsRequest, RerankRequest};
use ember_host::images::preprocess::{probe, ImageLimits, Preprocessor};
use ember_host::images::source;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::io::Cursor;

/// Any JSON value, nested a few levels, with the field names the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("input".to_string()),
            Just("model".to_string()),
            Just("query".to_string()),
            Just("documents".to_string()),
            Just("docs".to_string()),
            Just("top_n".to_string()),
            Just("dimensions".to_string()),
            Just("encoding_format".to_string()),
            Just("modality".to_string()),
            Just("return_documents".to_string()),
            Just("text".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A small valid image of each format, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 99]));
    [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::Bmp,
        image::ImageFormat::WebP,
    ]
    .into_iter()
    .map(|format| {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    })
    .collect()
}

fn preprocessor() -> Preprocessor {
    Preprocessor::from_config(&json!({
        "size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16},
    }))
    .unwrap()
}

const LIMITS: ImageLimits = ImageLimits {
    max_pixels: 1 << 22,
    max_aspect_ratio: 100.0,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn request_parsing_never_panics(body in json_value()) {
        let _ = EmbeddingsRequest::parse(&body, 8);
        let _ = RerankRequest::parse(&body, 8);
    }

    #[test]
    fn image_sources_never_panic(item in ".{0,64}") {
        let _ = source::parse(&item);
        let _ = source::parse(&format!("data:image/png;base64,{item}"));
    }

    /// Mutated real images (bytes flipped, cut, header fields overwritten) decode to a tensor
    /// of the right size or are refused with a message; the probe's memory estimate bounds
    /// what decoding is allowed to allocate.
    #[test]
    fn mutated_images_decode_or_are_refused(
        which in 0usize..5,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        cut_it in any::<bool>(),
    ) {
        let mut bytes = seeds()[which].clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if cut_it {
            bytes.truncate(cut.index(bytes.len()).max(1));
        }
        let pre = preprocessor();
        match probe(&bytes, LIMITS) {
            Err(e) => prop_assert!(!e.0.is_empty()),
            Ok(p) => {
                prop_assert!(p.decode_bytes <= 12 * LIMITS.max_pixels);
                match pre.run(&bytes, &p) {
                    Ok(px) => prop_assert_eq!(px.len(), 3 * 16 * 16),
                    Err(e) => prop_assert!(!e.0.is_empty()),
                }
            }
        }
    }

    /// Images of any shape within the limits come out at the crop size.
    #[test]
    fn any_shape_within_limits_gives_the_crop(w in 8u32..3000, h in 8u32..3000) {
        let bytes = {
            let mut out = Cursor::new(Vec::new());
            image::GrayImage::from_pixel(w, h, image::Luma([200]))
                .write_to(&mut out, image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        let pre = preprocessor();
        match probe(&bytes, LIMITS) {
            Ok(p) => {
                let px = pre.run(&bytes, &p).unwrap();
                prop_assert_eq!(px.len(), 3 * 16 * 16);
            }
            Err(e) => prop_assert!(
                e.0.contains("IMAGE_MAX_ASPECT_RATIO") || e.0.contains("IMAGE_MAX_PIXELS"),
                "{}", e.0
            ),
        }
    }
}
