//! Bad input and overload: clear errors naming the field, the right status codes, and a
//! server that keeps serving.

use ember_e2e::*;
use serde_json::{json, Value};

fn serve_tiny(extra: &[(&str, &str)]) -> Server {
    serve_fixtures("optimum", &["tiny-bert-cls"], extra)
}

fn assert_error(resp: (u16, Value), status: u16, param: Option<&str>, contains: &str) {
    let (code, body) = resp;
    assert_eq!(code, status, "{body}");
    let err = &body["error"];
    assert_eq!(err["code"], status, "{body}");
    assert!(err["type"].is_string(), "{body}");
    if let Some(p) = param {
        assert_eq!(err["param"], p, "{body}");
    }
    let msg = err["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(contains),
        "message {msg:?} should contain {contains:?}"
    );
}

#[test]
fn bad_requests_name_the_field_and_index() {
    let server = serve_tiny(&[
        ("MAX_ITEMS_PER_REQUEST", "4"),
        ("MAX_REQUEST_BYTES", "4096"),
    ]);
    let e = |body: Value| server.post("/v1/embeddings", &body);
    assert_error(
        e(json!({"input": ["ok", 7, "x"]})),
        400,
        Some("input"),
        "input[1] must be a string",
    );
    assert_error(e(json!({})), 400, Some("input"), "input is required");
    assert_error(e(json!({"input": []})), 400, Some("input"), "empty");
    assert_error(
        e(json!({"input": {"a": 1}})),
        400,
        Some("input"),
        "got an object",
    );
    assert_error(
        e(json!(["not", "an", "object"])),
        400,
        Some("body"),
        "JSON object",
    );
    assert_error(
        e(json!({"input": "a", "encoding_format": "hex"})),
        400,
        Some("encoding_format"),
        "'hex'",
    );
    assert_error(
        e(json!({"input": "a", "dimensions": -3})),
        400,
        Some("dimensions"),
        "positive integer",
    );
    assert_error(
        e(json!({"input": "a", "dimensions": 33})),
        400,
        Some("dimensions"),
        "at most 32",
    );
    assert_error(
        e(json!({"input": "a", "modality": "video"})),
        400,
        Some("modality"),
        "invalid modality 'video'",
    );
    assert_error(
        e(json!({"input": "a", "modality": "image"})),
        400,
        Some("modality"),
        "detected capabilities: embed",
    );
    assert_error(
        e(json!({"input": "a", "modality": "audio"})),
        501,
        None,
        "not yet implemented",
    );
    assert_error(
        e(json!({"input": "a", "model": "nope/nope"})),
        404,
        Some("model"),
        "deployed models:",
    );
    assert_error(
        e(json!({"input": ["a", "b", "c", "d", "e"]})),
        413,
        Some("input"),
        "at most 4",
    );
    let big = "x".repeat(5000);
    assert_error(e(json!({"input": big})), 413, None, "4096 bytes");

    let raw = client()
        .post(format!("{}/v1/embeddings", server.url))
        .header("content-type", "application/json")
        .body("{\"input\": [\"a\",")
        .send()
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    let raw = client()
        .post(format!("{}/v1/embeddings", server.url))
        .header("content-type", "text/plain")
        .body("{\"input\": \"a\"}")
        .send()
        .unwrap();
    assert_eq!(raw.status().as_u16(), 415);

    assert_error(server.get("/v1/nothing"), 404, None, "no such route");
    assert_error(
        server.get("/v1/embeddings"),
        405,
        None,
        "method not allowed",
    );

    // After all that, the server still answers, rightly, and is healthy (the short texts:
    // this server takes 4 items and 4 KiB per request).
    server.assert_embeds_reference_of("tiny-bert-cls", &[0, 1, 2, 3], 0.9999);
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn flooding_past_the_queue_gives_429_and_every_accepted_request_its_answer() {
    // A queue of 16 items and requests of 8 items each: at most two fit at once.
    let server = serve_tiny(&[("INFINITY_QUEUE_SIZE", "16"), ("BATCH_SIZES", "8")]);
    let reference = reference("tiny-bert-cls");
    let long = reference["texts"][4].as_str().unwrap().to_string();
    let expected: Vec<f32> = serde_json::from_value(reference["embeddings"][4].clone()).unwrap();
    let (ok, overloaded) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let server = &server;
                let long = &long;
                let expected = &expected;
                s.spawn(move || {
                    let mut ok = 0;
                    let mut overloaded = 0;
                    for _ in 0..5 {
                        let (status, body) =
                            server.post("/v1/embeddings", &json!({"input": vec![long; 8]}));
                        match status {
                            200 => {
                                let v = vectors(&body);
                                assert_eq!(v.len(), 8);
                                assert!(v.iter().all(|x| cosine(x, expected) > 0.9999));
                                ok += 1;
                            }
                            429 => {
                                assert!(body["error"]["message"]
                                    .as_str()
                                    .unwrap()
                                    .contains("queue"));
                                overloaded += 1;
                            }
                            other => panic!("unexpected status {other}: {body}"),
                        }
                    }
                    (ok, overloaded)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    eprintln!("flood: {ok} answered, {overloaded} refused with 429");
    assert!(ok > 0, "some requests must be served");
    assert!(overloaded > 0, "the queue bound must refuse some requests");
    assert_eq!(ok + overloaded, 120);
    assert_eq!(server.get("/health").0, 200);
    server.assert_embeds_reference("tiny-bert-cls", 0.9999);
}

#[test]
fn api_key_guards_every_route_but_health() {
    let server = serve_tiny(&[("API_KEY", "s3cret-key")]);
    let c = client();
    let post = |auth: Option<&str>, path: &str, body: &Value| {
        let mut req = c.post(format!("{}{path}", server.url)).json(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null))
    };
    let body = json!({"input": "hello"});
    assert_error(
        post(None, "/v1/embeddings", &body),
        401,
        None,
        "missing API key",
    );
    assert_error(
        post(Some("Bearer wrong"), "/v1/embeddings", &body),
        401,
        None,
        "invalid API key",
    );
    assert_error(
        post(None, "/runsync", &json!({"input": body})),
        401,
        None,
        "missing API key",
    );
    let (status, _) = post(Some("Bearer s3cret-key"), "/v1/embeddings", &body);
    assert_eq!(status, 200);
    // The RunPod API also takes the raw key.
    let (status, out) = post(Some("s3cret-key"), "/runsync", &json!({"input": body}));
    assert_eq!((status, out["status"].as_str()), (200, Some("COMPLETED")));
    assert_eq!(server.get("/health").0, 200, "health needs no key");
    assert_eq!(server.get("/v1/models").0, 401);
}
