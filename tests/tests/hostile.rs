//! The hostile-input suite: inputs made to crash the server, exhaust its memory or CPU, or
//! starve other callers. For each: the process stays up, the answer is a JSON 4xx error (or a
//! correct 200 where the input is legitimate), the server's peak resident memory stays within
//! `PEAK_RSS_MIB` with default settings, and a normal request afterwards gets exactly the
//! answer it got before.
//!
//! Stalled request bodies and slow headers are in `server_limits.rs`, job floods in
//! `runpod_api.rs`, property tests of parsing and decoding in `host/tests/fuzz.rs`.

use base64::Engine as _;
use ember_e2e::*;
use serde_json::{json, Value};
use std::io::Cursor;
use std::time::{Duration, Instant};

/// The bound on the server's peak resident memory (VmHWM) over the whole suite.
const PEAK_RSS_MIB: f64 = 1536.0;

fn clip_server(extra: &[(&str, &str)]) -> (Server, String) {
    let model = fixture("tiny-clip").display().to_string();
    let mut env = vec![
        ("MODEL_NAMES", model.as_str()),
        ("BACKEND", "optimum"),
        // The slow-URL server of this suite listens on loopback.
        ("IMAGE_ALLOW_PRIVATE_URLS", "true"),
    ];
    env.extend_from_slice(extra);
    (Server::start(&env), model)
}

fn data_uri_of(kind: &str, bytes: &[u8]) -> String {
    format!(
        "data:image/{kind};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A black 1-bit grayscale PNG of `w` x `h` pixels: a few KB whatever its size.
fn one_bit_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        enc.set_compression(png::Compression::High);
        let mut writer = enc.write_header().unwrap();
        let row = (w as usize).div_ceil(8);
        let mut stream = writer.stream_writer().unwrap();
        let zeros = vec![0u8; row];
        for _ in 0..h {
            std::io::Write::write_all(&mut stream, &zeros).unwrap();
        }
        stream.finish().unwrap();
    }
    out
}

/// A real 16x16 JPEG whose frame header claims `w` x `h` pixels.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 7]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let mut bytes = out.into_inner();
    let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

/// The normal request whose answer must not change: a text and a real image.
fn normal(server: &Server, model: &str) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for (modality, input) in [
        ("text", json!(["a photo of a cat", "ember"])),
        (
            "image",
            json!([data_uri("photo.png"), data_uri("photo.jpg")]),
        ),
    ] {
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"model": model, "modality": modality, "input": input}),
        );
        assert_eq!(status, 200, "{body}");
        out.extend(vectors(&body));
    }
    out
}

fn assert_same(before: &[Vec<f32>], after: &[Vec<f32>]) {
    assert_eq!(before.len(), after.len());
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "vector {i} changed by {diff}");
    }
}

fn image_request(server: &Server, model: &str, input: Vec<String>) -> (u16, Value) {
    server.post(
        "/v1/embeddings",
        &json!({"model": model, "modality": "image", "input": input}),
    )
}

#[test]
fn hostile_images_are_refused_or_answered_within_bounded_memory() {
    let (mut server, model) = clip_server(&[]);
    let before = normal(&server, &model);
    let png = |w, h| data_uri_of("png", &one_bit_png(w, h));
    let jpeg = |w, h| data_uri_of("jpeg", &jpeg_claiming(w, h));
    // (what, items, expected status, words the error must contain)
    let cases: Vec<(&str, Vec<String>, u16, Vec<&str>)> = vec![
        (
            "5,000,000 x 8 1-bit PNG (crashed the process)",
            vec![png(5_000_000, 8)],
            400,
            vec!["input item 0", "5000000x8", "IMAGE_MAX_ASPECT_RATIO"],
        ),
        (
            "8 x 4,999,999 1-bit PNG",
            vec![png(8, 4_999_999)],
            400,
            vec!["8x4999999", "IMAGE_MAX_ASPECT_RATIO"],
        ),
        (
            "8 x 100,000 PNG of a few hundred bytes",
            vec![png(8, 100_000)],
            400,
            vec!["IMAGE_MAX_ASPECT_RATIO"],
        ),
        (
            "JPEG claiming 8 x 65,000",
            vec![jpeg(8, 65_000)],
            400,
            vec!["IMAGE_MAX_ASPECT_RATIO"],
        ),
        (
            "four long PNGs in one request",
            (0..4).map(|_| png(100_000, 8)).collect(),
            400,
            vec!["input item 0", "IMAGE_MAX_ASPECT_RATIO"],
        ),
        (
            "corrupt JPEG claiming 6000 x 6000",
            vec![jpeg(6000, 6000)],
            400,
            vec!["6000x6000", "corrupt"],
        ),
        (
            "JPEG claiming 7100 x 7100 (over IMAGE_MAX_PIXELS)",
            vec![jpeg(7100, 7100)],
            400,
            vec!["IMAGE_MAX_PIXELS"],
        ),
        (
            "a long image within the limits (100:1)",
            vec![png(4000, 40)],
            200,
            vec![],
        ),
    ];
    for (what, items, status, words) in cases {
        let started = Instant::now();
        let (code, body) = image_request(&server, &model, items);
        let secs = started.elapsed().as_secs_f64();
        assert!(server.alive(), "{what}: the server died");
        assert_eq!(code, status, "{what}: {body}");
        if status == 200 {
            assert_eq!(vectors(&body).len(), 1, "{what}");
        } else {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            for w in words {
                assert!(message.contains(w), "{what}: {message:?} lacks {w:?}");
            }
        }
        assert!(secs < 10.0, "{what}: took {secs:.1} s");
        eprintln!(
            "{what}: {code} in {:.0} ms, peak RSS {:.0} MiB",
            secs * 1e3,
            server.memory_mib("VmHWM")
        );
    }
    // Thirty 6324 x 6324 images (40 megapixels each, just under IMAGE_MAX_PIXELS, 5 KB each)
    // in one request are legitimate: they are answered, decoded a few at a time.
    let big = png(6324, 6324);
    let started = Instant::now();
    let (code, body) = image_request(&server, &model, vec![big; 30]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(vectors(&body).len(), 30);
    eprintln!(
        "30 x 40-megapixel PNGs: 200 in {:.1} s, peak RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        server.memory_mib("VmHWM")
    );
    assert!(server.alive());
    assert_same(&before, &normal(&server, &model));
    let peak = server.memory_mib("VmHWM");
    assert!(peak < PEAK_RSS_MIB, "peak RSS {peak:.0} MiB");
}

#[test]
fn one_request_of_slow_urls_does_not_starve_the_others() {
    let images = ImageServer::start();
    let (server, model) = clip_server(&[]);
    let before = normal(&server, &model);
    // 60 URLs that each take 1 s hold at most IMAGE_DOWNLOADS_PER_REQUEST (8) of the 50
    // download slots.
    let slow: Vec<String> = (0..60)
        .map(|_| format!("{}/slow/1000", images.url))
        .collect();
    let url = server.url.clone();
    let hog = std::thread::spawn(move || {
        let started = Instant::now();
        let r = client()
            .post(format!("{url}/v1/embeddings"))
            .json(&json!({"modality": "image", "input": slow}))
            .send()
            .unwrap();
        (r.status().as_u16(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let started = Instant::now();
        let (code, body) = image_request(&server, &model, vec![images.image("photo.png")]);
        let waited = started.elapsed();
        assert_eq!(code, 200, "{body}");
        assert!(
            waited < Duration::from_millis(1500),
            "a one-image request waited {waited:?} behind the slow one"
        );
    }
    let (code, took) = hog.join().unwrap();
    assert_eq!(code, 200);
    // 60 downloads of 1 s, 8 at a time: at least 8 rounds.
    assert!(took >= Duration::from_secs(7), "{took:?}");
    assert_same(&before, &normal(&server, &model));
}

#[test]
fn image_requests_beyond_the_image_queue_are_refused_at_once() {
    // 32x32 tensors are 12 KiB: a 1 MiB queue admits 85 images at once.
    let (server, model) = clip_server(&[("IMAGE_QUEUE_BYTES", "1048576")]);
    let (code, body) = image_request(&server, &model, vec![data_uri("photo.png"); 86]);
    assert_eq!(code, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("IMAGE_QUEUE_BYTES"), "{message}");
    let (code, body) = image_request(&server, &model, vec![data_uri("photo.png"); 85]);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_request_larger_than_the_whole_queue_is_413_not_429() {
    let (server, model) = clip_server(&[("INFINITY_QUEUE_SIZE", "100")]);
    let texts = |n: usize| (0..n).map(|i| format!("text {i}")).collect::<Vec<_>>();
    let (code, body) = server.post(
        "/v1/embeddings",
        &json!({"model": model, "input": texts(101)}),
    );
    assert_eq!(code, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("101") && message.contains("INFINITY_QUEUE_SIZE"),
        "{message}"
    );
    let (code, body) = server.post(
        "/v1/embeddings",
        &json!({"model": model, "input": texts(100)}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(vectors(&body).len(), 100);
}
