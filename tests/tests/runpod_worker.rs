//! The RunPod worker loop of the real binary, driven by a fake platform that hands out jobs,
//! records done posts and pings, and misbehaves (429, 5xx, dropped connections).

use ember_e2e::platform::{FakePlatform, Faults};
use ember_e2e::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const MODEL: &str = "tiny-bert-cls";

fn worker(platform: &FakePlatform, concurrency: usize) -> Server {
    let mut env = optimum_env(&fixture(MODEL));
    env.extend(platform.worker_env(concurrency));
    Server::start(&env_refs(&env))
}

/// The reference text of job `i` (the fixture's texts in turn) and its reference vector.
fn reference_text(i: usize) -> (String, Vec<f32>) {
    let reference = reference(MODEL);
    let n = reference["texts"].as_array().unwrap().len();
    let text = reference["texts"][i % n].as_str().unwrap().to_string();
    let vector = serde_json::from_value(reference["embeddings"][i % n].clone()).unwrap();
    (text, vector)
}

/// Job `i` of a mixed load: standard embeddings, the OpenAI route, the model list, bad input.
fn job(i: usize) -> Value {
    let id = format!("job-{i}");
    let (text, _) = reference_text(i);
    let input = match i % 4 {
        0 => json!({"input": text}),
        1 => json!({"openai_route": "/v1/embeddings",
                    "openai_input": {"model": fixture(MODEL).display().to_string(), "input": [text]}}),
        2 => json!({"openai_route": "/v1/models"}),
        _ => json!({"input": [1, 2]}),
    };
    json!({"id": id, "input": input})
}

/// Checks a job's posted body against what the job asked for: embeddings against
/// sentence-transformers' vector of the job's text (the fixture's reference).
fn check_output(i: usize, body: &Value) {
    let output = &body["output"];
    assert!(body.get("error").is_none(), "job {i}: {body}");
    let (text, expected) = reference_text(i);
    let check = |got: &[f32]| {
        let c = cosine(got, &expected);
        assert!(
            c >= 0.9999,
            "job {i} ({text:?}): cosine {c} with its reference"
        );
    };
    match i % 4 {
        0 => {
            assert_eq!(output["object"], "list");
            check(&vectors(output).remove(0));
        }
        1 => {
            assert!(
                output.is_array(),
                "the OpenAI route is list-wrapped: {output}"
            );
            check(&vectors(&output[0]).remove(0));
        }
        2 => assert_eq!(
            output["data"][0]["id"],
            fixture(MODEL).display().to_string()
        ),
        _ => {
            assert_eq!(output["object"], "error", "job {i}: {output}");
            assert_eq!(output["type"], "BadRequestError");
            assert_eq!(output["code"], 400);
            assert!(output["message"].as_str().unwrap().contains("input[0]"));
        }
    }
}

#[test]
fn every_job_gets_exactly_one_successful_post_within_the_concurrency_limit() {
    let jobs: Vec<Value> = (0..40).map(job).collect();
    let ids = |v: &[usize]| v.iter().map(|i| format!("job-{i}")).collect();
    let faults = Faults {
        take_429: vec![2],
        take_500: vec![4],
        take_drop: vec![6],
        post_500_first: ids(&[0, 5, 10, 15]),
        post_drop_first: ids(&[7, 14, 21]),
        ..Faults::default()
    };
    let platform = FakePlatform::start(jobs, faults);
    let _server = worker(&platform, 4);
    assert!(
        platform.wait_for_posts(40, Duration::from_secs(90)),
        "not every job was posted: {} of 40",
        platform.succeeded().len()
    );
    assert_eq!(platform.queued(), 0);
    let handed = platform.handed_out();
    assert_eq!(handed.len(), 40, "each job handed out once");

    let posts = platform.posts();
    let mut ok: HashMap<String, Vec<_>> = HashMap::new();
    for p in posts.iter().filter(|p| p.answered == 200) {
        ok.entry(p.job_id.clone()).or_default().push(p.clone());
    }
    for i in 0..40 {
        let id = format!("job-{i}");
        let got = ok
            .get(&id)
            .unwrap_or_else(|| panic!("{id} has no successful post"));
        assert_eq!(got.len(), 1, "{id} posted successfully {} times", got.len());
        let p = &got[0];
        assert_eq!(
            p.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(p.headers["charset"], "utf-8");
        assert_eq!(p.headers["x-request-id"], id);
        assert_eq!(p.headers["authorization"], "platform-secret");
        assert!(
            p.query.contains("isStream=false") && p.query.contains("gpu=test"),
            "{}",
            p.query
        );
        let body: Value = serde_json::from_str(&p.body).expect("the body is JSON");
        check_output(i, &body);
    }
    // Faulty first posts were retried.
    assert!(posts
        .iter()
        .any(|p| p.job_id == "job-5" && p.answered == 500));
    assert!(posts.iter().any(|p| p.job_id == "job-7" && p.answered == 0));

    let max = platform.max_outstanding();
    assert!(
        max <= 4,
        "{max} jobs were in flight at once, over RUNPOD_MAX_CONCURRENCY=4"
    );
    assert!(max >= 2, "jobs ran concurrently (at most {max} at once)");
    let takes = platform.takes();
    assert!(
        takes.iter().any(|t| t.contains("batch_size=")),
        "batch takes: {takes:?}"
    );
    assert!(takes.iter().all(|t| t.contains("job_in_progress=")));
    let pings = platform.pings();
    assert!(
        pings.iter().all(|p| p.contains("runpod_version=")),
        "{pings:?}"
    );
    assert!(!pings.is_empty());
    // Every URL named this worker: $RUNPOD_POD_ID was substituted in all three templates.
    assert_eq!(platform.strangers(), Vec::<String>::new());
}

#[test]
fn sigterm_during_load_loses_no_taken_job() {
    let jobs: Vec<Value> = (0..24).map(|i| job(i * 4)).collect();
    let faults = Faults {
        post_delay: Duration::from_millis(700),
        ..Faults::default()
    };
    let platform = FakePlatform::start(jobs, faults);
    let mut server = worker(&platform, 4);
    // Wait until a first batch is in flight, then ask the worker to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while platform.handed_out().len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal_term();
    assert_eq!(
        server.wait_exit(Duration::from_secs(60)),
        Some(0),
        "clean exit"
    );
    let handed = platform.handed_out();
    assert!(
        handed.len() >= 4 && handed.len() < 24,
        "stopped taking: {}",
        handed.len()
    );
    let succeeded = platform.succeeded();
    for id in &handed {
        assert!(
            succeeded.contains(id),
            "{id} was taken but its result never posted"
        );
    }
    assert_eq!(
        platform.queued(),
        24 - handed.len(),
        "no job taken after SIGTERM is lost"
    );
}

#[test]
fn a_result_that_cannot_be_posted_is_logged_with_its_job_id() {
    let mut doomed = job(0);
    doomed["id"] = json!("doomed-job");
    let jobs = vec![doomed, job(4), job(8)];
    let faults = Faults {
        post_500_always: ["doomed-job".to_string()].into(),
        ..Faults::default()
    };
    let platform = FakePlatform::start(jobs, faults);
    let server = worker(&platform, 2);
    let line = server
        .wait_log(Duration::from_secs(60), |l| {
            l.contains("could not post") && l.contains("doomed-job")
        })
        .expect("the lost result is logged");
    let parsed: Value =
        serde_json::from_str(&line).expect("JSON log lines under RUNPOD_ENDPOINT_ID");
    assert_eq!(parsed["level"], "ERROR");
    assert_eq!(parsed["requestId"], "doomed-job");
    assert!(platform.wait_for_posts(2, Duration::from_secs(10)));
    let attempts = platform
        .posts()
        .iter()
        .filter(|p| p.job_id == "doomed-job")
        .count();
    assert!(
        attempts > 1,
        "5xx answers are retried ({attempts} attempts)"
    );
}
