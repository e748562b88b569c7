//! Image (and CLIP text) embeddings over HTTP with the optimum plugin, against transformers'
//! CLIPModel.get_image_features / get_text_features recorded in the fixtures, and every kind
//! of bad image input.

use ember_e2e::proxy::FakeProxy;
use ember_e2e::*;
use serde_json::json;
use std::time::Duration;

const CLIP_MODELS: [&str; 2] = ["tiny-clip", "tiny-clip-split"];

fn serve(models: &[&str], extra: &[(&str, &str)]) -> Server {
    serve_fixtures("optimum", models, extra)
}

/// Close to the reference at the precision of image preprocessing, and unit length.
fn assert_close_unit(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_parity(got, want, 0.999, what);
    assert_unit(got, what);
}

#[test]
fn clip_image_and_text_embeddings_match_transformers() {
    let images = ImageServer::start();
    let reference = reference("tiny-clip");
    let names: Vec<String> = serde_json::from_value(reference["images"].clone()).unwrap();
    let server = serve(&CLIP_MODELS, &[("IMAGE_ALLOW_PRIVATE_URLS", "true")]);
    for model in CLIP_MODELS {
        let id = fixture(model).display().to_string();
        let want_images = matrix(&reference["image_embeddings"]);
        let as_urls: Vec<String> = names.iter().map(|n| images.image(n)).collect();
        let as_data: Vec<String> = names.iter().map(|n| data_uri(n)).collect();
        let as_raw: Vec<String> = as_data
            .iter()
            .map(|d| d.split_once(',').unwrap().1.to_string())
            .collect();
        for (form, input) in [
            ("url", as_urls),
            ("data uri", as_data),
            ("raw base64", as_raw),
        ] {
            let (status, body) = server.post(
                "/v1/embeddings",
                &json!({"model": id, "modality": "image", "input": input}),
            );
            assert_eq!(status, 200, "{model} {form}: {body}");
            assert_close_unit(
                &vectors(&body),
                &want_images,
                &format!("{model} images as {form}"),
            );
        }
        // The text tower, in the same space as the images.
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"model": id, "input": reference["texts"], "modality": "text"}),
        );
        assert_eq!(status, 200, "{body}");
        assert_close_unit(
            &vectors(&body),
            &matrix(&reference["text_embeddings"]),
            model,
        );
        let tokens = reference_tokens(&reference);
        assert_eq!(body["usage"]["prompt_tokens"].as_u64(), Some(tokens));
        // Mixed in one request stream: base64 output and dimensions work for images too.
        let (status, body) = server.post(
            "/v1/embeddings",
            &json!({"model": id, "modality": "image", "input": images.image("photo.jpg"),
                    "encoding_format": "base64", "dimensions": 8}),
        );
        assert_eq!(status, 200, "{body}");
        let v = decode_base64(body["data"][0]["embedding"].as_str().unwrap());
        assert_eq!(v.len(), 8);
        assert!((norm(&v) - 1.0).abs() < 1e-4);
    }
    let (_, models) = server.get("/v1/models");
    assert_eq!(
        models["data"][0]["capabilities"],
        json!(["embed", "image_embed"])
    );
}

/// Sends a good image request and checks the answer: the server still serves.
fn still_serves(server: &Server, images: &ImageServer) {
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"modality": "image", "input": [images.image("photo.png"), data_uri("anim.gif")]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn bad_images_get_clear_errors_and_leave_the_server_healthy() {
    let images = ImageServer::start();
    let server = serve(
        &["tiny-clip"],
        &[
            ("IMAGE_ALLOW_PRIVATE_URLS", "true"),
            ("HTTP_CLIENT_TIMEOUT", "1.5"),
            ("IMAGE_MAX_REDIRECTS", "3"),
        ],
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/gone.png", l.local_addr().unwrap())
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (images.image("one_pixel.png"), vec!["1x1", "at least 8x8"]),
        (data_uri("one_pixel.png"), vec!["1x1"]),
        (images.image("truncated.jpg"), vec!["cannot decode"]),
        (data_uri("truncated.jpg"), vec!["cannot decode"]),
        (images.image("page.html"), vec!["not an image", "text/html"]),
        (format!("{}/mislabelled", images.url), vec!["HTML page"]),
        (
            data_uri("page.html").replace("data:image/html", "data:image/png"),
            vec!["HTML page"],
        ),
        (
            images.image("huge.png"),
            vec!["7100x7100", "IMAGE_MAX_PIXELS"],
        ),
        (closed, vec!["cannot download", "gone.png"]),
        (images.image("missing.png"), vec!["HTTP 404"]),
        (
            format!("{}/redirect/5", images.url),
            vec!["redirects", "IMAGE_MAX_REDIRECTS"],
        ),
        (
            format!("{}/slow", images.url),
            vec!["timed out", "HTTP_CLIENT_TIMEOUT"],
        ),
        ("bm90IGFuIGltYWdl".to_string(), vec!["not an image"]),
        ("a cat on a mat".to_string(), vec!["http://", "base64"]),
        (
            "data:text/plain;base64,AAAA".to_string(),
            vec!["data:image/"],
        ),
    ];
    for (bad, needles) in cases {
        // The bad item is third: the error names its index, the good ones do not hide it.
        let input = json!([images.image("photo.png"), data_uri("rgba.png"), bad]);
        let slow = bad.ends_with("/slow");
        let body = json!({"modality": "image", "input": input});
        let (got, during) = std::thread::scope(|s| {
            let bad_request = s.spawn(|| server.post("/v1/embeddings", &body));
            if slow {
                // Other requests are served while a download hangs.
                std::thread::sleep(Duration::from_millis(200));
            }
            let other = server.post("/v1/embeddings", &json!({"input": "a photo of a dog"}));
            (bad_request.join().unwrap(), other)
        });
        assert_eq!(during.0, 200, "served during {bad:.60}: {}", during.1);
        let mut all = vec!["input item 2:"];
        all.extend(needles);
        assert!(got.0 != 200, "{bad:.80} was accepted");
        assert_error_contains(got, 400, &all);
        still_serves(&server, &images);
    }
    // A redirect chain within the limit is followed.
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"modality": "image", "input": format!("{}/redirect/2", images.url)}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn modality_errors_and_limits() {
    let images = ImageServer::start();
    let server = serve(
        &["tiny-clip", "tiny-bert-cls"],
        &[("IMAGE_MAX_BYTES", "4096")],
    );
    let clip = fixture("tiny-clip").display().to_string();
    let text_only = fixture("tiny-bert-cls").display().to_string();
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"model": text_only, "modality": "image", "input": data_uri("photo.png")}),
        ),
        400,
        &[
            "does not expose the 'image_embed' capability",
            "capabilities: embed",
        ],
    );
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"model": clip, "modality": "audio", "input": "x"}),
        ),
        501,
        &["not yet implemented", "'text', 'image'"],
    );
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"model": clip, "modality": "video", "input": "x"}),
        ),
        400,
        &["invalid modality 'video'", "'text', 'image', 'audio'"],
    );
    // Loopback addresses are refused unless IMAGE_ALLOW_PRIVATE_URLS is set, by IP and by name.
    let by_name = images.image("photo.png").replace("127.0.0.1", "localhost");
    for url in [images.image("photo.png"), by_name] {
        assert_error_contains(
            server.post(
                "/v1/embeddings",
                &json!({"model": clip, "modality": "image", "input": [url]}),
            ),
            400,
            &["input item 0:", "internal", "IMAGE_ALLOW_PRIVATE_URLS"],
        );
    }
    // IMAGE_MAX_BYTES bounds inline images too: photo.png (8 KiB) is over, photo.jpg under.
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"model": clip, "modality": "image",
                    "input": [data_uri("photo.jpg"), data_uri("photo.png")]}),
        ),
        400,
        &["input item 1:", "larger than 4096 bytes", "IMAGE_MAX_BYTES"],
    );
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"model": clip, "modality": "image", "input": data_uri("photo.jpg")}),
    );
    assert_eq!(status, 200, "{body}");
    // A URL naming a text is embedded as text when the modality is text.
    let (status, _) = server.post(
        "/v1/embeddings",
        &json!({"model": clip, "input": images.image("photo.png")}),
    );
    assert_eq!(status, 200);
    assert_eq!(server.get("/health").0, 200);
}

/// The vector of one image input, asserting success.
fn image_vector(server: &Server, input: &str) -> Vec<f32> {
    let (status, body) = server.post(
        "/v1/embeddings",
        &json!({"modality": "image", "input": input}),
    );
    assert_eq!(status, 200, "{input}: {body}");
    vectors(&body).remove(0)
}

#[test]
fn downloads_hold_image_max_bytes_whether_or_not_the_length_is_declared() {
    let images = ImageServer::start();
    let server = serve(
        &["tiny-clip"],
        &[
            ("IMAGE_MAX_BYTES", "4096"),
            ("IMAGE_ALLOW_PRIVATE_URLS", "true"),
        ],
    );
    // photo.png (7 KiB) is over: refused from its Content-Length, and while reading a body
    // sent in chunks with no length.
    for url in [images.image("photo.png"), images.streamed("photo.png")] {
        assert_error_contains(
            server.post(
                "/v1/embeddings",
                &json!({"modality": "image", "input": [data_uri("photo.jpg"), url.clone()]}),
            ),
            400,
            &[
                "input item 1:",
                &url,
                "larger than 4096 bytes",
                "IMAGE_MAX_BYTES",
            ],
        );
    }
    // photo.jpg (3.3 KiB) is under, either way, and is the same image as inline.
    let inline = image_vector(&server, &data_uri("photo.jpg"));
    for url in [images.image("photo.jpg"), images.streamed("photo.jpg")] {
        let c = cosine(&image_vector(&server, &url), &inline);
        assert!(c > 0.99999, "{url}: cosine {c} to the inline image");
    }
}

#[test]
fn image_urls_go_through_the_proxy_and_internal_addresses_stay_refused() {
    let images = ImageServer::start();
    let proxy = FakeProxy::start(&images.addr);
    let proxy_env = [
        ("HTTP_PROXY", proxy.url.as_str()),
        ("HTTPS_PROXY", proxy.url.as_str()),
    ];
    let server = serve(&["tiny-clip"], &proxy_env);
    let port = images.addr.rsplit(':').next().unwrap().to_string();
    let inline = image_vector(&server, &data_uri("photo.png"));

    // A public name goes to the proxy (which resolves it; `.invalid` resolves nowhere else)
    // even though the proxy itself is on a loopback address.
    let public = "http://ember-images.invalid/images/photo.png";
    let c = cosine(&image_vector(&server, public), &inline);
    assert!(c > 0.99999, "cosine {c} to the inline image");
    assert!(
        images.seen().contains(&public.to_string()),
        "{:?}",
        images.seen()
    );

    // Internal addresses are refused before anything is sent: by name, by address, and as
    // the target of a redirect from a public URL.
    let internal = [
        format!("http://localhost:{port}/images/photo.png"),
        format!("http://127.0.0.1:{port}/images/photo.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/images/photo.png"),
        format!(
            "http://ember-images.invalid/redirect-to?to=http://localhost:{port}/images/photo.png"
        ),
        "https://localhost/images/photo.png".to_string(),
    ];
    for url in &internal {
        assert_error_contains(
            server.post(
                "/v1/embeddings",
                &json!({"modality": "image", "input": [data_uri("photo.jpg"), url]}),
            ),
            400,
            &["input item 1:", "internal", "IMAGE_ALLOW_PRIVATE_URLS"],
        );
    }
    let seen = images.seen();
    assert!(
        seen.iter()
            .all(|t| t.starts_with("http://ember-images.invalid/")),
        "an internal URL went out (through the proxy, or directly as a bare path): {seen:?}"
    );
    assert!(
        seen.iter().any(|t| t.contains("/redirect-to")),
        "the public hop of the redirect went out: {seen:?}"
    );
    // HTTPS goes through the proxy too, as a tunnel (which this proxy refuses).
    let lines = proxy.lines();
    assert!(!lines.iter().any(|l| l.contains("localhost")), "{lines:?}");
    assert_error_contains(
        server.post(
            "/v1/embeddings",
            &json!({"modality": "image", "input": "https://ember-images.invalid/photo.png"}),
        ),
        400,
        &[
            "input item 0:",
            "cannot download https://ember-images.invalid/photo.png",
        ],
    );
    assert!(
        proxy
            .lines()
            .iter()
            .any(|l| l.starts_with("CONNECT ember-images.invalid:443")),
        "{:?}",
        proxy.lines()
    );
    drop(server);

    // With IMAGE_ALLOW_PRIVATE_URLS, internal URLs go through the proxy as well.
    let mut env = proxy_env.to_vec();
    env.push(("IMAGE_ALLOW_PRIVATE_URLS", "true"));
    let server = serve(&["tiny-clip"], &env);
    let by_name = format!("http://localhost:{port}/images/photo.png");
    let c = cosine(&image_vector(&server, &by_name), &inline);
    assert!(c > 0.99999, "cosine {c}");
    assert!(images.seen().contains(&by_name), "{:?}", images.seen());
}
