//! Operations: readiness while models load, health that follows the engine (a failing plugin
//! turns it red, the model is reloaded, it turns green), Prometheus metrics after traffic, and
//! the request log.

use ember_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

fn broken(fault: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = backend_env("broken", &fixture("tiny-bert-cls"));
    env.push(("EMBER_BROKEN".into(), fault.into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// The value of the Prometheus sample whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(server: &Server) -> String {
    let resp = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    resp.text().unwrap()
}

#[test]
fn every_route_answers_503_with_progress_until_the_models_are_ready() {
    let env = broken(
        "none",
        &[("EMBER_BROKEN_LOAD_MS", "3000"), ("API_KEY", "k3y")],
    );
    let server = Server::start_listening(&env_refs(&env));
    let authorized = |path: &str, body: Value| {
        let resp = client()
            .post(format!("{}{path}", server.url))
            .header("Authorization", "Bearer k3y")
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null))
    };
    // The phase moves from waiting to loading (where this plugin sleeps for 3 s).
    let mut health = Value::Null;
    for _ in 0..100 {
        let (status, body) = server.get("/health");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "loading");
        health = body;
        if health["models"][0]["phase"] == "loading" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(health["models"][0]["phase"], "loading", "{health}");
    let message = health["error"]["message"].as_str().unwrap();
    assert!(message.contains("0 of 1 models ready"), "{message}");
    // The key is checked while loading too; /metrics is open and already answers.
    assert_eq!(server.post("/v1/embeddings", &json!({"input": "x"})).0, 401);
    assert!(scrape(&server).contains("\nember_ready 0\n"));
    let (status, body) = authorized("/v1/embeddings", json!({"input": "too early"}));
    assert_eq!(status, 503, "{body}");
    // Callers are told when to come back, on every route, the RunPod ones included.
    for path in ["/v1/embeddings", "/runsync"] {
        let resp = client()
            .post(format!("{}{path}", server.url))
            .header("Authorization", "Bearer k3y")
            .json(&json!({"input": {"input": "too early"}}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{path}");
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap());
        assert_eq!(retry, Some("5"), "{path}: Retry-After while loading");
    }
    assert_eq!(body["error"]["code"], 503);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("is loading"));

    let ready = server.wait_log(Duration::from_secs(30), |l| l.contains("\"ready\""));
    assert!(ready.is_some(), "the server becomes ready");
    let (status, health) = server.get("/health");
    assert_eq!(status, 200, "{health}");
    assert!(scrape(&server).contains("\nember_ready 1\n"));
    let (status, body) = authorized("/v1/embeddings", json!({"input": "now"}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_failing_plugin_turns_health_red_and_its_model_is_reloaded() {
    // Each loaded model answers one call (the warm-up), then panics on every call.
    let env = broken("panic-after:1", &[]);
    let server = Server::start(&env_refs(&env));
    assert_eq!(server.get("/health").0, 200);

    let (status, body) = server.post("/v1/embeddings", &json!({"input": "one"}));
    assert_eq!(status, 500, "{body}");
    let (status, health) = server.get("/health");
    assert_eq!(status, 503, "{health}");
    let reasons = health["reasons"].to_string();
    assert!(reasons.contains("last plugin call failed"), "{reasons}");

    // Two more failures make three in a row: the worker reloads the model.
    for _ in 0..2 {
        assert_eq!(server.post("/v1/embeddings", &json!({"input": "x"})).0, 500);
    }
    let reloaded = server.wait_log(Duration::from_secs(10), |l| l.contains("model reloaded"));
    assert!(reloaded.is_some(), "the model is reloaded");
    let (status, health) = server.get("/health");
    assert_eq!(status, 503);
    assert!(
        health["reasons"].to_string().contains("model reloaded"),
        "{health}"
    );

    // The fresh model answers again, and health follows.
    let (status, body) = server.post("/v1/embeddings", &json!({"input": "again"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/health").0, 200);

    let metrics = scrape(&server);
    let model = fixture("tiny-bert-cls").display().to_string();
    let panics = sample(
        &metrics,
        &format!("ember_failures_total{{model=\"{model}\",reason=\"panic\"}}"),
    );
    assert_eq!(panics, Some(3.0), "{metrics}");
}

#[test]
fn metrics_and_the_request_log_describe_the_traffic() {
    let model = fixture("all-MiniLM-L6-v2");
    let mut env = optimum_env(&model);
    env.push(("API_KEY".into(), "k3y".into()));
    env.push(("INFINITY_QUEUE_SIZE".into(), "4".into()));
    let server = Server::start(&env_refs(&env));
    let post = |body: Value| {
        let resp = client()
            .post(format!("{}/v1/embeddings", server.url))
            .header("Authorization", "Bearer k3y")
            .json(&body)
            .send()
            .unwrap();
        resp.status().as_u16()
    };
    for _ in 0..3 {
        assert_eq!(post(json!({"input": ["metrics", "are counted"]})), 200);
    }
    assert_eq!(post(json!({"input": []})), 400);
    // More items than the whole queue holds: it could never fit, so 413 (counted as overload).
    assert_eq!(post(json!({"input": vec!["x"; 5]})), 413);
    // /metrics and /health need no key; the API does.
    assert_eq!(server.get("/v1/models").0, 401);

    let metrics = scrape(&server);
    let m = model.display().to_string();
    let has = |series: &str| sample(&metrics, series);
    assert_eq!(
        has("ember_requests_total{method=\"POST\",route=\"/v1/embeddings\",status=\"200\"}"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        has("ember_requests_total{method=\"POST\",route=\"/v1/embeddings\",status=\"400\"}"),
        Some(1.0)
    );
    assert_eq!(
        has("ember_requests_total{method=\"GET\",route=\"/v1/models\",status=\"401\"}"),
        Some(1.0)
    );
    assert_eq!(
        has(&format!(
            "ember_failures_total{{model=\"{m}\",reason=\"overloaded\"}}"
        )),
        Some(5.0)
    );
    assert_eq!(
        has(&format!("ember_queue_depth{{model=\"{m}\"}}")),
        Some(0.0)
    );
    let batches = has(&format!("ember_batch_size_count{{model=\"{m}\"}}")).unwrap();
    let rows = has(&format!("ember_batch_size_sum{{model=\"{m}\"}}")).unwrap();
    assert!(
        batches >= 1.0 && rows == 6.0,
        "{batches} batches, {rows} rows"
    );
    assert!(has(&format!("ember_batch_tokens_sum{{model=\"{m}\"}}")).unwrap() >= 6.0);
    // The overloaded request was tokenized before the queue refused it.
    assert_eq!(
        has(&format!(
            "ember_tokenization_duration_seconds_count{{model=\"{m}\"}}"
        )),
        Some(4.0)
    );
    assert_eq!(
        has(&format!(
            "ember_queue_duration_seconds_count{{model=\"{m}\"}}"
        )),
        Some(6.0)
    );
    assert_eq!(
        has(&format!(
            "ember_inference_duration_seconds_count{{model=\"{m}\"}}"
        )),
        Some(batches)
    );
    assert!(has(&format!("ember_model_load_seconds{{model=\"{m}\"}}")).unwrap() > 0.0);
    assert!(metrics.contains("ember_request_duration_seconds_bucket{route=\"/v1/embeddings\""));

    // One log line per request, with what it did.
    let line = server
        .wait_log(Duration::from_secs(5), |l| {
            l.contains("\"request\"") && l.contains("\"status\":200")
        })
        .expect("a request log line");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["route"], "/v1/embeddings");
    assert_eq!(v["model"], m.as_str());
    assert_eq!(v["items"], 2);
    assert!(v["tokens"].as_u64().unwrap() >= 2);
    assert!(v["ms"].as_f64().is_some());
}
