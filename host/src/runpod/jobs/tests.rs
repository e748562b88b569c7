use super::store::{Dropped, Entry};
use super::*;
use serde_json::json;
use std::time::Instant;

fn store(max_waiting: usize, max_waiting_bytes: usize, max_retained_bytes: usize) -> Arc<JobStore> {
    JobStore::new(
        1,
        JobLimits {
            max_waiting,
            max_waiting_bytes,
            max_retained_bytes,
        },
    )
}

/// A job input or output of about `n` bytes of JSON.
fn blob(n: usize) -> Value {
    json!({ "text": "x".repeat(n) })
}

/// `v` as JSON text, as answers reach the store.
fn raw(v: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(v).unwrap()
}

/// Accepts, starts and finishes a job with `output`; returns its id.
fn run_job(store: &JobStore, output: Value) -> String {
    let id = store.accept("", &json!({})).expect("accepted");
    assert!(store.lock().start(&id));
    store.finish(&id, JobResult::Output(raw(&output)));
    id.to_string()
}

/// Checks the store's sums against its entries.
fn check_sums(store: &JobStore) {
    let inner = store.lock();
    let kept: usize = inner.finished.iter().map(|k| k.bytes).sum();
    assert_eq!(inner.retained_bytes, kept);
    assert!(inner.retained_bytes <= inner.limits.max_retained_bytes);
    let queued: Vec<&Entry> = inner
        .jobs
        .values()
        .filter(|e| e.status == Status::InQueue)
        .collect();
    assert_eq!(inner.waiting, queued.len());
    assert_eq!(
        inner.waiting_bytes,
        queued.iter().map(|e| e.input_bytes).sum::<usize>()
    );
    let running = inner
        .jobs
        .values()
        .filter(|e| e.status == Status::InProgress)
        .count();
    assert_eq!(inner.running, running);
    for k in &inner.finished {
        let e = &inner.jobs[&k.id];
        let view = e.view(&k.id, Instant::now());
        assert_eq!(
            k.bytes,
            serde_json::to_vec(&view).unwrap().len(),
            "the size counted is the response's"
        );
    }
    assert_eq!(inner.dropped.len(), inner.dropped_order.len());
}

#[test]
fn json_len_is_the_serialized_length() {
    for v in [
        json!(null),
        blob(10),
        json!({"a": [1, 2.5, "é\"\n"], "b": {}}),
    ] {
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}

#[test]
fn the_waiting_count_is_bounded() {
    let s = store(2, 1 << 20, 1 << 20);
    let a = s.accept("", &blob(10)).unwrap();
    s.accept("", &blob(10)).unwrap();
    let refused = s.accept("", &blob(10)).unwrap_err();
    assert!(refused.0.contains("2 jobs waiting"), "{}", refused.0);
    assert!(refused.0.contains("JOBS_MAX_WAITING)"), "{}", refused.0);
    assert_eq!(s.counts()["jobs"]["inQueue"], 2);
    assert_eq!(*s.idle.borrow(), 2, "a refused job is not counted");
    // A job that starts leaves the queue and makes room.
    assert!(s.lock().start(&a));
    s.accept("", &blob(10)).unwrap();
    assert!(s.accept("", &blob(10)).is_err());
    check_sums(&s);
    let counts = s.counts();
    assert_eq!(counts["jobs"]["inQueue"], 2);
    assert_eq!(counts["jobs"]["inProgress"], 1);
    assert_eq!(counts["workers"], json!({"idle": 0, "running": 1}));
}

#[test]
fn the_waiting_input_bytes_are_bounded() {
    let s = store(100, 1024, 1 << 20);
    let input = blob(400);
    let n = json_len(&input);
    let a = s.accept("", &input).unwrap();
    let b = s.accept("", &input).unwrap();
    assert_eq!(s.lock().waiting_bytes, 2 * n);
    let refused = s.accept("", &input).unwrap_err();
    assert!(
        refused.0.contains("JOBS_MAX_WAITING_BYTES=1024"),
        "{}",
        refused.0
    );
    // A small one still fits.
    s.accept("", &blob(10)).unwrap();
    // Cancelling a queued job and starting one both give their bytes back.
    s.cancel(&a).unwrap();
    assert!(s.lock().start(&b));
    check_sums(&s);
    assert_eq!(s.lock().waiting_bytes, json_len(&blob(10)));
    s.accept("", &input).unwrap();
    check_sums(&s);
}

#[test]
fn an_input_bigger_than_the_budget_waits_alone() {
    let s = store(100, 1024, 1 << 20);
    let big = blob(5000);
    let id = s.accept("", &big).unwrap();
    assert!(s.accept("", &blob(10)).is_err(), "nothing joins it");
    assert!(s.accept("", &big).is_err());
    assert!(s.lock().start(&id));
    s.accept("", &big).unwrap();
    check_sums(&s);
}

#[test]
fn the_oldest_outputs_are_dropped_first_within_the_byte_budget() {
    let out = blob(1000);
    // The size of one finished job's status response.
    let probe = store(10, 1 << 20, 1 << 20);
    run_job(&probe, out.clone());
    let one = probe.lock().retained_bytes;
    assert!(one > 1000 && one < 1200, "{one}");

    let s = store(10, 1 << 20, 3 * one + one / 2);
    let ids: Vec<String> = (0..6).map(|_| run_job(&s, out.clone())).collect();
    check_sums(&s);
    for (i, id) in ids.iter().enumerate() {
        match s.view(id).map(|v| v.to_value()) {
            Ok(v) if i >= 3 => {
                assert_eq!(v["status"], "COMPLETED");
                assert_eq!(v["output"], out);
            }
            Err(Missing::Dropped(msg)) if i < 3 => {
                assert!(msg.contains(id.as_str()), "{msg}");
                assert!(msg.contains("JOBS_MAX_RETAINED_BYTES"), "{msg}");
            }
            other => panic!("job {i}: {other:?}"),
        }
    }
    assert_eq!(s.view("no-such-job"), Err(Missing::Unknown));
    assert_eq!(s.cancel(&ids[0]), s.view(&ids[0]));
    let counts = s.counts();
    assert_eq!(counts["jobs"]["completed"], 6, "dropped jobs still count");
    assert_eq!(counts["jobs"]["inQueue"], 0);
    assert_eq!(*s.idle.borrow(), 0);
}

#[test]
fn byte_sums_never_pass_the_budget() {
    let budget = 20_000;
    let s = store(1000, 1 << 20, budget);
    let mut seed: u64 = 42;
    let mut ids = Vec::new();
    for _ in 0..500 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = (seed >> 33) as usize % 9000;
        let id = s.accept("", &blob(n)).unwrap();
        if n.is_multiple_of(3) {
            s.cancel(&id).unwrap();
        } else {
            assert!(s.lock().start(&id));
            let result = if n.is_multiple_of(7) {
                JobResult::Failed("boom".repeat(n / 4))
            } else {
                JobResult::Output(raw(&blob(n * 3)))
            };
            s.finish(&id, result);
        }
        ids.push(id);
        check_sums(&s);
    }
    // What is kept is the newest: every job after the oldest kept one is kept too,
    // unless it was too big to keep at all.
    let inner = s.lock();
    let first = ids
        .iter()
        .position(|id| inner.jobs.contains_key(&**id))
        .unwrap();
    for id in &ids[first..] {
        assert!(
            inner.jobs.contains_key(&**id) || inner.dropped.contains_key(&**id),
            "{id}"
        );
    }
    for id in &ids[..first] {
        assert_eq!(inner.dropped.get(&**id), Some(&Dropped::Bytes));
    }
}

#[tokio::test]
async fn an_output_bigger_than_the_budget_reaches_its_waiter_then_is_dropped() {
    let s = store(10, 1 << 20, 5000);
    let small = run_job(&s, blob(100));
    let id = s.accept("sync-", &json!({})).unwrap();
    let waiter = {
        let s = s.clone();
        let id = id.clone();
        tokio::spawn(async move { s.wait(&id, Duration::from_secs(10)).await })
    };
    while s.lock().jobs[&*id].done.receiver_count() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(s.lock().start(&id));
    s.finish(&id, JobResult::Output(raw(&blob(10_000))));
    let got = waiter.await.unwrap().unwrap().to_value();
    assert_eq!(got["status"], "COMPLETED");
    assert_eq!(got["output"], blob(10_000));
    match s.view(&id) {
        Err(Missing::Dropped(msg)) => assert!(msg.contains("JOBS_MAX_RETAINED_BYTES")),
        other => panic!("{other:?}"),
    }
    // It did not push out the older, smaller job.
    assert_eq!(s.view(&small).unwrap().to_value()["output"], blob(100));
    check_sums(&s);
    // A waiter that comes after the end gets the kept response at once.
    let got = s
        .wait(&small, Duration::from_secs(10))
        .await
        .unwrap()
        .to_value();
    assert_eq!(got["output"], blob(100));
}

#[tokio::test]
async fn a_zero_budget_keeps_nothing_but_answers_waiters_and_cancels() {
    let s = store(10, 1 << 20, 0);
    let id = s.accept("", &json!({})).unwrap();
    let cancelled = s.cancel(&id).unwrap().to_value();
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(matches!(s.view(&id), Err(Missing::Dropped(_))));
    let id = s.accept("sync-", &json!({})).unwrap();
    assert!(s.lock().start(&id));
    s.finish(&id, JobResult::Failed("boom".into()));
    assert!(matches!(
        s.wait(&id, Duration::from_secs(1)).await,
        Err(Missing::Dropped(_))
    ));
    let counts = s.counts();
    assert_eq!(counts["jobs"]["failed"], 1);
    assert_eq!(counts["jobs"]["completed"], 0);
    check_sums(&s);
}

#[test]
fn counts_follow_every_transition() {
    let s = store(10, 1 << 20, 1 << 20);
    let ids: Vec<Arc<str>> = (0..5).map(|_| s.accept("", &blob(10)).unwrap()).collect();
    assert!(s.lock().start(&ids[0]));
    assert!(s.lock().start(&ids[1]));
    s.finish(&ids[0], JobResult::Output(raw(&blob(1))));
    s.finish(&ids[1], JobResult::Failed("boom".into()));
    assert!(s.lock().start(&ids[2]));
    let counts = s.counts();
    assert_eq!(
        counts["jobs"],
        json!({"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 2, "retried": 0})
    );
    assert_eq!(*s.idle.borrow(), 3);
    assert_eq!(s.purge_queue(), 2);
    assert_eq!(s.view(&ids[3]).unwrap().status(), "CANCELLED");
    // A job that already ended is neither cancelled nor counted again.
    assert_eq!(s.cancel(&ids[0]).unwrap().status(), "COMPLETED");
    assert!(s.end(&ids[0], Status::Failed, None).is_none());
    s.cancel(&ids[2]).unwrap();
    let counts = s.counts();
    assert_eq!(
        counts["jobs"],
        json!({"completed": 1, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0})
    );
    assert_eq!(counts["workers"], json!({"idle": 1, "running": 0}));
    assert_eq!(*s.idle.borrow(), 0);
    assert!(!s.lock().start(&ids[4]), "a cancelled job never starts");
    check_sums(&s);
}

#[test]
fn at_most_max_finished_jobs_are_kept() {
    let s = store(10, 1 << 20, usize::MAX);
    let first = run_job(&s, json!(1));
    for _ in 0..MAX_FINISHED {
        run_job(&s, json!(1));
    }
    assert_eq!(s.lock().finished.len(), MAX_FINISHED);
    match s.view(&first) {
        Err(Missing::Dropped(msg)) => assert!(msg.contains("at most 10000"), "{msg}"),
        other => panic!("{other:?}"),
    }
    check_sums(&s);
}

#[test]
fn expired_jobs_are_dropped_and_say_so() {
    let s = store(10, 1 << 20, 1 << 20);
    let id = run_job(&s, json!(1));
    let later = Instant::now() + KEEP_FINISHED;
    s.lock().forget_old(later);
    match s.view(&id) {
        Err(Missing::Dropped(msg)) => assert!(msg.contains("30 minutes ago"), "{msg}"),
        other => panic!("{other:?}"),
    }
    check_sums(&s);
}

#[test]
fn the_dropped_ids_are_bounded_oldest_first() {
    let mut inner = Inner::new(JobLimits {
        max_waiting: 1,
        max_waiting_bytes: 1024,
        max_retained_bytes: 0,
    });
    for i in 0..MAX_DROPPED + 5 {
        inner.remember_dropped(format!("job-{i}").into(), Dropped::Bytes);
    }
    assert_eq!(inner.dropped.len(), MAX_DROPPED);
    assert_eq!(inner.dropped_order.len(), MAX_DROPPED);
    assert_eq!(inner.missing("job-4"), Missing::Unknown);
    assert!(matches!(inner.missing("job-5"), Missing::Dropped(_)));
    let last = format!("job-{}", MAX_DROPPED + 4);
    assert!(matches!(inner.missing(&last), Missing::Dropped(_)));
}
