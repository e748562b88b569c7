//! The local RunPod API (`/run`, `/runsync`, `/status`, `/cancel`, `/health`, `/v2/{id}/...`),
//! with the official runpod Python client, and every example request of both seed READMEs.

use ember_e2e::hub::FakeHub;
use ember_e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn serve(models: &[&str], extra: &[(&str, &str)]) -> Server {
    let env = [&[("IMAGE_ALLOW_PRIVATE_URLS", "true")], extra].concat();
    serve_fixtures("optimum", models, &env)
}

/// Asserts that an embeddings output holds the reference vectors of the texts `indices`.
fn assert_matches_reference(output: &Value, reference: &Value, indices: &[usize]) {
    let got = vectors(output);
    assert_eq!(got.len(), indices.len(), "{output}");
    for (g, &i) in got.iter().zip(indices) {
        let want: Vec<f32> = serde_json::from_value(reference["embeddings"][i].clone()).unwrap();
        let c = cosine(g, &want);
        assert!(c >= 0.9999, "text {i}: cosine {c} with the reference");
    }
}

fn poll_status(server: &Server, path: &str, until: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = server.get(path);
        assert_eq!(code, 200, "{body}");
        if body["status"] == until || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_runsync_status_cancel_and_health() {
    let images = ImageServer::start();
    let server = serve(
        &["tiny-bert-cls", "tiny-clip"],
        &[("RUNPOD_MAX_CONCURRENCY", "1")],
    );
    let text_model = fixture("tiny-bert-cls").display().to_string();
    let clip = fixture("tiny-clip").display().to_string();

    let reference = reference("tiny-bert-cls");
    let (code, body) = server.post(
        "/runsync",
        &json!({"input": {"model": text_model, "input": reference["texts"][0]}}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "COMPLETED");
    assert!(body["id"].as_str().unwrap().starts_with("sync-"));
    assert!(
        body["delayTime"].is_u64() && body["executionTime"].is_u64(),
        "{body}"
    );
    assert_eq!(body["output"]["object"], "list");
    assert_matches_reference(&body["output"], &reference, &[0]);

    // A job that takes 5 s (a slow image URL): runsync gives up waiting, /status follows it.
    let slow = json!({"input": {"model": clip, "modality": "image",
                                "input": format!("{}/slow", images.url)}});
    let started = Instant::now();
    let (_, body) = server.post("/v2/ep/runsync?wait=1000", &slow);
    assert_eq!(body["status"], "IN_PROGRESS", "{body}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let slow_id = body["id"].as_str().unwrap().to_string();

    // With RUNPOD_MAX_CONCURRENCY=1 the next job waits in the queue, then is purged.
    let (_, queued) = server.post(
        "/run",
        &json!({"input": {"model": text_model, "input": "x"}}),
    );
    assert_eq!(queued["status"], "IN_QUEUE");
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let (_, health) = server.get("/v2/ep/health");
    assert_eq!(health["jobs"]["inProgress"], 1, "{health}");
    assert_eq!(health["jobs"]["inQueue"], 1, "{health}");
    assert_eq!(health["workers"]["running"], 1);
    let (_, status) = server.get(&format!("/status/{queued_id}"));
    assert_eq!(status["status"], "IN_QUEUE");
    let (_, purged) = server.post("/v2/ep/purge-queue", &json!(null));
    assert_eq!(purged, json!({"removed": 1, "status": "completed"}));
    let (_, status) = server.post(&format!("/status/{queued_id}"), &json!(null));
    assert_eq!(status["status"], "CANCELLED");

    let done = poll_status(&server, &format!("/v2/ep/status/{slow_id}"), "COMPLETED");
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(done["executionTime"].as_u64().unwrap() >= 4000, "{done}");
    // /slow serves photo.png: the output is that image's reference vector.
    let clip_reference = ember_e2e::reference("tiny-clip");
    let photo = clip_reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == "photo.png")
        .expect("photo.png in the CLIP reference");
    let want: Vec<f32> =
        serde_json::from_value(clip_reference["image_embeddings"][photo].clone()).unwrap();
    let got = vectors(&done["output"]);
    assert_eq!(got.len(), 1, "{done}");
    assert!(cosine(&got[0], &want) >= 0.999, "{done}");
    let (_, stream) = server.get(&format!("/v2/ep/stream/{slow_id}"));
    assert_eq!(stream["stream"][0]["output"], done["output"]);

    // Cancelling a running job.
    let (_, running) = server.post("/v2/ep/run", &slow);
    let id = running["id"].as_str().unwrap().to_string();
    poll_status(&server, &format!("/status/{id}"), "IN_PROGRESS");
    let (code, cancelled) = server.post(&format!("/v2/ep/cancel/{id}"), &json!(null));
    assert_eq!(code, 200);
    assert_eq!(cancelled, json!({"id": id, "status": "CANCELLED"}));
    std::thread::sleep(Duration::from_millis(300));
    let (_, status) = server.get(&format!("/status/{id}"));
    assert_eq!(
        status["status"], "CANCELLED",
        "a cancelled job stays cancelled"
    );

    // Errors of the local API itself.
    let (code, body) = server.get("/status/no-such-job");
    assert_eq!(code, 404);
    assert!(body["error"].as_str().unwrap().contains("not found"));
    let (code, body) = server.post("/runsync", &json!({"inputs": {}}));
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("\"input\""),
        "{body}"
    );
    // Bad job input: a completed job whose output is the worker's error object.
    let (_, body) = server.post(
        "/runsync",
        &json!({"input": {"model": text_model, "query": "q", "docs": ["a"]}}),
    );
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["output"]["object"], "error");
    assert!(
        body["output"]["message"]
            .as_str()
            .unwrap()
            .contains("capabilities"),
        "{body}"
    );
    let (_, body) = server.post(
        "/runsync",
        &json!({"input": {"openai_route": "/v1/embeddings"}}),
    );
    assert_eq!(
        body["output"]["message"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("Missing input")
    );
    let (_, body) = server.post("/runsync", &json!({"input": ["not", "an", "object"]}));
    assert!(body["output"]["message"]
        .as_str()
        .unwrap()
        .contains("must be a JSON object"));

    let (code, health) = server.get("/health");
    assert_eq!(code, 200);
    assert_eq!(health["status"], "ok");
    assert!(
        health["jobs"]["completed"].as_u64().unwrap() >= 5,
        "{health}"
    );
}

#[test]
fn accepted_jobs_finish_before_a_sigterm_exit() {
    let images = ImageServer::start();
    let mut server = serve(&["tiny-clip"], &[]);
    let (_, running) = server.post(
        "/run",
        &json!({"input": {"modality": "image", "input": format!("{}/slow", images.url)}}),
    );
    let id = running["id"].as_str().unwrap().to_string();
    poll_status(&server, &format!("/status/{id}"), "IN_PROGRESS");
    server.signal_term();
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    let finished = server.wait_log(Duration::from_secs(1), |l| {
        l.contains("job finished") && l.contains(&id)
    });
    let line = finished.expect("the running job finished before the exit");
    assert!(line.contains("COMPLETED"), "{line}");
}

#[test]
fn the_official_runpod_client_works_against_the_local_api() {
    let images = ImageServer::start();
    let server = serve(&["tiny-bert-cls", "tiny-clip"], &[]);
    let reference = reference("tiny-bert-cls");
    let script = format!(
        r#"
import json, os, runpod
runpod.api_key = "local-key"
ep = runpod.Endpoint("local-endpoint")
out = {{}}
out["run_sync"] = ep.run_sync({{"input": {{"model": {text:?}, "input": {pair}}}}}, timeout=60)
# The client sends a dict with a truthy "input" key as the whole request: wrap it.
job = ep.run({{"input": {{"model": {text:?}, "input": {single}}}}})
out["status_first"] = job.status()
out["output"] = job.output(timeout=30)
out["status_last"] = job.status()
slow = ep.run({{"input": {{"model": {clip:?}, "modality": "image", "input": {slow:?}}}}})
import time; time.sleep(0.5)
out["cancel"] = slow.cancel()
out["cancelled_status"] = runpod.Endpoint("local-endpoint").rp_client.get(f"local-endpoint/status/{{slow.job_id}}")["status"]
out["health"] = ep.health()
out["models"] = ep.run_sync({{"openai_route": "/v1/models"}}, timeout=30)
print(json.dumps(out))
"#,
        text = fixture("tiny-bert-cls").display().to_string(),
        clip = fixture("tiny-clip").display().to_string(),
        slow = format!("{}/slow", images.url),
        pair = json!([reference["texts"][1], reference["texts"][4]]),
        single = reference["texts"][3],
    );
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(&script)
        .env("RUNPOD_ENDPOINT_BASE_URL", format!("{}/v2", server.url))
        .output()
        .expect("run the setup's python");
    assert!(
        out.status.success(),
        "runpod client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_matches_reference(&got["run_sync"], &reference, &[1, 4]);
    assert!(
        ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"].contains(&got["status_first"].as_str().unwrap()),
        "{got}"
    );
    assert_matches_reference(&got["output"], &reference, &[3]);
    assert_eq!(got["status_last"], "COMPLETED");
    assert_eq!(got["cancel"]["status"], "CANCELLED", "{got}");
    assert_eq!(got["cancelled_status"], "CANCELLED");
    assert!(
        got["health"]["jobs"]["completed"].as_u64().unwrap() >= 2,
        "{got}"
    );
    assert_eq!(got["models"]["data"].as_array().unwrap().len(), 2);
}

/// Every request of both seed READMEs, as written, against models served under the same
/// names (through the hub download path); only the endpoint URL, the example image URL
/// (example.com cannot be reached here) and the elided base64 image are replaced.
#[test]
fn every_seed_readme_example_works_as_written() {
    let hub = FakeHub::start(&[
        ("BAAI/bge-small-en-v1.5", fixture("tiny-bert-cls")),
        ("BAAI/bge-reranker-large", fixture("tiny-rerank-xlmr")),
        ("patrickjohncyh/fashion-clip", fixture("tiny-clip")),
    ]);
    let images = ImageServer::start();
    let home = std::env::temp_dir().join(format!("ember-readme-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let home_s = home.display().to_string();
    let server = Server::start(&[
        (
            "MODEL_NAMES",
            "BAAI/bge-small-en-v1.5;BAAI/bge-reranker-large;patrickjohncyh/fashion-clip",
        ),
        ("BACKEND", "optimum"),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
        ("HF_HOME", home_s.as_str()),
        ("HF_HUB_OFFLINE", "0"),
        ("IMAGE_ALLOW_PRIVATE_URLS", "true"),
    ]);
    let base = format!("{}/v2/ENDPOINT_ID", server.url);
    let c = client();
    let send = |method: &str, path: &str, body: Option<&str>| -> (u16, Value) {
        let url = format!("{base}{path}");
        let req = match method {
            "GET" => c.get(&url),
            _ => c.post(&url),
        }
        .header("Authorization", "Bearer API_KEY");
        let req = match body {
            Some(b) => req
                .header("Content-Type", "application/json")
                .body(b.to_string()),
            None => req,
        };
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    };
    let check_embeddings = |v: &Value, model: &str| {
        assert_eq!(v["object"], "list", "{v}");
        assert_eq!(v["model"], model);
        assert_eq!(v["data"][0]["object"], "embedding");
        assert_eq!(v["data"][0]["index"], 0);
        assert!(v["data"][0]["embedding"].as_array().unwrap().len() > 1);
        // Images count no tokens.
        let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(tokens > 0 || model.contains("clip"), "{v}");
        assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);
    };
    let check_models = |v: &Value| {
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "BAAI/bge-small-en-v1.5",
                "BAAI/bge-reranker-large",
                "patrickjohncyh/fashion-clip"
            ]
        );
        assert!(v["data"][0]["stats"].is_object());
    };
    let check_rerank = |v: &Value| {
        assert_eq!(v["model"], "BAAI/bge-reranker-large");
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        for r in results {
            assert!(
                r["relevance_score"].is_f64() && r["index"].is_u64() && r["document"].is_string()
            );
        }
    };
    let completed = |r: (u16, Value)| -> Value {
        assert_eq!(r.0, 200, "{}", r.1);
        assert_eq!(r.1["status"], "COMPLETED", "{}", r.1);
        r.1["output"].clone()
    };
    let ok = |r: (u16, Value)| -> Value {
        assert_eq!(r.0, 200, "{}", r.1);
        r.1
    };
    let rerank_body = r#"{"input":{"model":"BAAI/bge-reranker-large","query":"Which product has warranty coverage?","docs":["Product A comes with a 2-year warranty","Product B is available in red and blue colors","All electronics include a standard 1-year warranty"],"return_docs":true}}"#;

    // Seed README 1 (May 2025).
    check_models(&ok(send("GET", "/openai/v1/models", None)));
    check_embeddings(
        &ok(send(
            "POST",
            "/openai/v1/embeddings",
            Some(r#"{"model":"BAAI/bge-small-en-v1.5","input":"Hello world"}"#),
        )),
        "BAAI/bge-small-en-v1.5",
    );
    check_embeddings(
        &completed(send(
            "POST",
            "/runsync",
            Some(r#"{"input":{"model":"BAAI/bge-small-en-v1.5","input":"Hello world"}}"#),
        )),
        "BAAI/bge-small-en-v1.5",
    );
    check_rerank(&completed(send("POST", "/runsync", Some(rerank_body))));
    check_models(&completed(send(
        "POST",
        "/runsync",
        Some(r#"{ "input": { "openai_route": "/v1/models" } }"#),
    )));

    // Seed README 2 (multimodal).
    check_models(&completed(send(
        "POST",
        "/runsync",
        Some(r#"{"input":{"openai_route":"/v1/models"}}"#),
    )));
    check_embeddings(
        &ok(send(
            "POST",
            "/openai/v1/embeddings",
            Some(r#"{"model":"BAAI/bge-small-en-v1.5","input":"Hello world","modality":"text"}"#),
        )),
        "BAAI/bge-small-en-v1.5",
    );
    check_embeddings(
        &completed(send(
            "POST",
            "/runsync",
            Some(
                r#"{"input":{"model":"BAAI/bge-small-en-v1.5","input":"Hello world","modality":"text"}}"#,
            ),
        )),
        "BAAI/bge-small-en-v1.5",
    );
    let image_url = r#"{"model":"patrickjohncyh/fashion-clip","input":"https://example.com/image.jpg","modality":"image"}"#
        .replace("https://example.com/image.jpg", &images.image("photo.jpg"));
    check_embeddings(
        &ok(send("POST", "/openai/v1/embeddings", Some(&image_url))),
        "patrickjohncyh/fashion-clip",
    );
    let image_b64 = r#"{"input":{"model":"patrickjohncyh/fashion-clip","input":"data:image/png;base64,iVBORw0KG...","modality":"image"}}"#
        .replace("data:image/png;base64,iVBORw0KG...", &data_uri("photo.png"));
    check_embeddings(
        &completed(send("POST", "/runsync", Some(&image_b64))),
        "patrickjohncyh/fashion-clip",
    );
    check_rerank(&ok(send(
        "POST",
        "/openai/v1/rerank",
        Some(
            r#"{
    "model": "BAAI/bge-reranker-large",
    "query": "Which product has warranty coverage?",
    "docs": [
      "Product A comes with a 2-year warranty",
      "Product B is available in red and blue colors",
      "All electronics include a standard 1-year warranty"
    ],
    "return_docs": true
  }"#,
        ),
    )));
    check_rerank(&completed(send("POST", "/runsync", Some(rerank_body))));
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn test_input_runs_one_job_prints_it_and_exits() {
    let env = optimum_env(&fixture("tiny-bert-cls"));
    let dir = std::env::temp_dir().join(format!("ember-test-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("test_input.json"),
        r#"{"input": {"model": "BAAI/bge-small-en-v1.5", "input": "Hello, world!"}}"#.replace(
            "BAAI/bge-small-en-v1.5",
            &fixture("tiny-bert-cls").display().to_string(),
        ),
    )
    .unwrap();
    // As the runpod SDK does: ./test_input.json by default.
    let out = command(&env_refs(&env))
        .current_dir(&dir)
        .arg("--test-input")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vectors(&printed["output"]).len(), 1);
    // A job given inline that fails: printed, exit 1.
    let out = command(&env_refs(&env))
        .args(["--test_input", r#"{"input": {"input": [7]}}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["output"]["object"], "error");
    // A missing file: a clear message, exit 1.
    let out = command(&env_refs(&env))
        .args(["--test-input", "/nonexistent/job.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the test input"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// POSTs JSON to `path`; returns status, `Retry-After` and parsed body.
fn post_with_retry_after(
    server: &Server,
    path: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let resp = client()
        .post(format!("{}{path}", server.url))
        .json(body)
        .send()
        .unwrap();
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (code, retry, resp.json().unwrap_or(Value::Null))
}

#[test]
fn a_flood_of_jobs_beyond_the_waiting_limits_gets_429_and_every_accepted_job_finishes() {
    let images = ImageServer::start();
    let server = serve(
        &["tiny-bert-cls", "tiny-clip"],
        &[
            ("RUNPOD_MAX_CONCURRENCY", "1"),
            ("JOBS_MAX_WAITING", "3"),
            ("JOBS_MAX_WAITING_BYTES", "4096"),
        ],
    );
    let text_model = fixture("tiny-bert-cls").display().to_string();
    let clip = fixture("tiny-clip").display().to_string();
    let slow = json!({"input": {"model": clip, "modality": "image",
                                "input": format!("{}/slow", images.url)}});
    let start_slow = || {
        let (code, body) = server.post("/run", &slow);
        assert_eq!(code, 200, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        poll_status(&server, &format!("/status/{id}"), "IN_PROGRESS");
        id
    };

    // The one slot is held by a 5 s job: the next 3 wait, the rest are refused.
    let mut accepted = vec![start_slow()];
    let mut refused = 0;
    for i in 0..12 {
        let path = if i % 2 == 0 { "/run" } else { "/v2/ep/run" };
        let job = json!({"input": {"model": text_model, "input": format!("flood {i}")}});
        let (code, retry, body) = post_with_retry_after(&server, path, &job);
        match code {
            200 => accepted.push(body["id"].as_str().unwrap().to_string()),
            429 => {
                refused += 1;
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
                let msg = body["error"].as_str().unwrap();
                assert!(
                    msg.contains("3 jobs waiting") && msg.contains("JOBS_MAX_WAITING"),
                    "{msg}"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 4, "{accepted:?}");
    assert_eq!(refused, 9);
    let (code, retry, body) = post_with_retry_after(
        &server,
        "/runsync",
        &json!({"input": {"model": text_model, "input": "sync"}}),
    );
    assert_eq!((code, retry.as_deref()), (429, Some("1")), "{body}");
    let (_, health) = server.get("/v2/ep/health");
    assert_eq!(health["jobs"]["inQueue"], 3, "{health}");
    assert_eq!(health["jobs"]["inProgress"], 1, "{health}");

    // Every accepted job finishes and keeps its output.
    for id in &accepted {
        let done = poll_status(&server, &format!("/status/{id}"), "COMPLETED");
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(vectors(&done["output"]).len(), 1, "{done}");
    }
    let (_, health) = server.get("/health");
    assert_eq!(health["jobs"]["inQueue"], 0, "{health}");
    assert_eq!(health["jobs"]["inProgress"], 0, "{health}");
    assert_eq!(health["jobs"]["completed"], 4, "{health}");

    // The bytes of waiting inputs: a 3 kB input waits; a second one would pass 4096 bytes.
    let slow_id = start_slow();
    let big = json!({"input": {"model": text_model, "input": "word ".repeat(600)}});
    let (code, body) = server.post("/run", &big);
    assert_eq!(code, 200, "{body}");
    let big_id = body["id"].as_str().unwrap().to_string();
    let (code, retry, body) = post_with_retry_after(&server, "/run", &big);
    assert_eq!((code, retry.as_deref()), (429, Some("1")), "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("JOBS_MAX_WAITING_BYTES=4096"),
        "{body}"
    );
    // A small input still fits.
    let (code, body) = server.post(
        "/run",
        &json!({"input": {"model": text_model, "input": "small"}}),
    );
    assert_eq!(code, 200, "{body}");
    let small_id = body["id"].as_str().unwrap().to_string();
    for id in [slow_id, big_id, small_id] {
        let done = poll_status(&server, &format!("/status/{id}"), "COMPLETED");
        assert_eq!(done["status"], "COMPLETED", "{done}");
    }
}

#[test]
fn older_outputs_are_dropped_to_stay_within_the_retained_bytes() {
    let budget = 16_384;
    let server = serve(&["tiny-bert-cls"], &[("JOBS_MAX_RETAINED_BYTES", "16384")]);
    let text_model = fixture("tiny-bert-cls").display().to_string();
    let job = |n: usize| {
        let texts: Vec<String> = (0..n).map(|i| format!("text number {i}")).collect();
        json!({"input": {"model": text_model, "input": texts}})
    };
    let dropped_message = |id: &str| {
        let (code, body) = server.get(&format!("/status/{id}"));
        assert_eq!(code, 404, "{body}");
        let msg = body["error"].as_str().unwrap().to_string();
        assert!(msg.contains(id), "{msg}");
        msg
    };

    // Jobs of about 6 kB each: once more than the budget has finished, the oldest is gone.
    let mut ids = Vec::new();
    let mut outputs = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let (code, body) = server.post("/runsync", &job(8));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["status"], "COMPLETED", "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
        outputs.push(body["output"].clone());
        sizes.push(serde_json::to_string(&body).unwrap().len());
        let (code, _) = server.get(&format!("/status/{}", ids[0]));
        if code == 404 || ids.len() > 20 {
            break;
        }
    }
    assert!(sizes[0] > 2_000 && sizes[0] < budget / 2, "{sizes:?}");
    let total: usize = sizes.iter().sum();
    assert!(
        total > budget,
        "the first job went only once the budget was passed: {sizes:?}"
    );
    assert!(
        total - sizes[sizes.len() - 1] <= budget + 64,
        "the first job went as soon as the budget was passed: {sizes:?}"
    );
    let msg = dropped_message(&ids[0]);
    assert!(
        msg.contains("finished but its output was dropped")
            && msg.contains("JOBS_MAX_RETAINED_BYTES"),
        "{msg}"
    );
    let newest = ids.last().unwrap();
    let (code, body) = server.get(&format!("/status/{newest}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        &body["output"],
        outputs.last().unwrap(),
        "the job's own output is kept"
    );
    // An unknown id still answers as before.
    let (code, body) = server.get("/status/no-such-job");
    assert_eq!(code, 404);
    let unknown = body["error"].as_str().unwrap();
    assert!(
        unknown.contains("not found") && !unknown.contains("RETAINED"),
        "{unknown}"
    );

    // An output bigger than the whole budget reaches its /runsync caller, then is not kept;
    // the newest kept job stays.
    let (code, body) = server.post("/runsync", &job(64));
    assert_eq!(code, 200, "{body}");
    assert!(serde_json::to_string(&body).unwrap().len() > budget);
    assert_eq!(vectors(&body["output"]).len(), 64);
    let big = body["id"].as_str().unwrap();
    assert!(dropped_message(big).contains("JOBS_MAX_RETAINED_BYTES"));
    let (code, _) = server.get(&format!("/status/{newest}"));
    assert_eq!(code, 200);

    // A /run job's output is kept until newer ones push it out.
    let (_, body) = server.post("/run", &job(8));
    let queued = body["id"].as_str().unwrap().to_string();
    let done = poll_status(&server, &format!("/status/{queued}"), "COMPLETED");
    assert_eq!(vectors(&done["output"]).len(), 8);
    for _ in 0..4 {
        server.post("/runsync", &job(8));
    }
    dropped_message(&queued);
    let (_, health) = server.get("/health");
    assert!(
        health["jobs"]["completed"].as_u64().unwrap() >= ids.len() as u64 + 6,
        "{health}"
    );
}
