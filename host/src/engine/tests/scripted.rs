//! Scripted models that fail, hold or need reloading on cue.

use super::*;
use std::sync::Mutex;

/// What the scripted models of one test record, shared with the test.
#[derive(Default)]
struct Probe {
    /// Plugin calls made, held calls aside.
    calls: AtomicUsize,
    /// Rows of each call, in order, held calls aside.
    rows: Mutex<Vec<usize>>,
    /// `load N` and `drop N` of the model copies, in order (the first copy is 0).
    events: Mutex<Vec<String>>,
    /// Copies loaded so far.
    copies: AtomicUsize,
    /// Reloads asked of the engine's reload function.
    reloads: AtomicUsize,
    /// How many of the next reloads fail.
    failing_reloads: AtomicUsize,
}

impl Probe {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn rows(&self) -> Vec<usize> {
        self.rows.lock().unwrap().clone()
    }
}

/// A batch holding this token waits twice at the model's barrier: once to tell the test
/// that the worker is inside the call, once to be released.
const HOLD: i64 = 1000;
/// A batch holding this token fails as a whole with a device error.
const DEVICE_LOST: i64 = 13;
/// A batch holding this token runs out of memory when it has more than two rows.
const BIG: i64 = 88;
/// A batch holding this token runs out of memory whatever its size.
const HUGE: i64 = 77;

/// An in-process model driven by the tokens it gets (see the constants above; 666 is bad
/// input as for [`Echo`]), on a device of the test's choosing, that logs its loads and
/// drops; the vector of a row is [its length, its first token].
struct Scripted {
    copy: usize,
    device: &'static str,
    probe: Arc<Probe>,
    hold: Arc<std::sync::Barrier>,
}

impl Scripted {
    fn load(
        device: &'static str,
        probe: &Arc<Probe>,
        hold: &Arc<std::sync::Barrier>,
    ) -> ModelRunner {
        let copy = probe.copies.fetch_add(1, Ordering::SeqCst);
        probe.events.lock().unwrap().push(format!("load {copy}"));
        ModelRunner::new(into_model_box(Box::new(Scripted {
            copy,
            device,
            probe: probe.clone(),
            hold: hold.clone(),
        })))
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if let Ok(mut events) = self.probe.events.lock() {
            events.push(format!("drop {}", self.copy));
        }
    }
}

impl Model for Scripted {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: 2,
            device: self.device.into(),
            dtype: DType::Fp32,
            concurrent_calls: false,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let ids = batch.input_ids.as_slice();
        if ids.contains(&HOLD) {
            self.hold.wait();
            self.hold.wait();
        } else {
            self.probe.calls.fetch_add(1, Ordering::SeqCst);
            self.probe.rows.lock().unwrap().push(batch.rows as usize);
        }
        if ids.contains(&DEVICE_LOST) {
            return Err(PluginError::new(ErrorCode::Device, "device lost"));
        }
        if ids.contains(&HUGE) || (ids.contains(&BIG) && batch.rows > 2) {
            return Err(PluginError::new(ErrorCode::OutOfMemory, "out of memory"));
        }
        if ids.contains(&666) {
            return Err(PluginError::invalid_input("token 666 is not allowed"));
        }
        Echo.embed_tokens(batch)
    }
}

/// A scripted engine with its probe and barrier; reloads load a new scripted copy unless
/// the probe says they fail.
fn scripted(
    device: &'static str,
    batch_size: usize,
    queue_size: usize,
    retry_every: Duration,
) -> (Engine, Arc<Probe>, Arc<std::sync::Barrier>) {
    let probe = Arc::new(Probe::default());
    let hold = Arc::new(std::sync::Barrier::new(2));
    let runner = Scripted::load(device, &probe, &hold);
    let (p, h) = (probe.clone(), hold.clone());
    let reload: Reload = Box::new(move || {
        p.reloads.fetch_add(1, Ordering::SeqCst);
        let fail = p
            .failing_reloads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(PluginError::new(ErrorCode::Device, "no device memory left"));
        }
        Ok(Scripted::load(device, &p, &h))
    });
    let limits = EngineLimits {
        batch_size,
        max_batch_tokens: 1 << 20,
        queue_size,
        pad_id: 0,
    };
    let e = Engine::start_retrying(
        "scripted",
        runner,
        limits,
        Some(reload),
        retry_every,
        &Metrics::new(),
    )
    .unwrap();
    (e, probe, hold)
}

/// Runs `queue` while the worker is held inside a call, so that everything it submits
/// is waiting when the worker next forms a window.
fn while_held<T>(e: &Engine, hold: &std::sync::Barrier, queue: impl FnOnce() -> T) -> T {
    let held = e.submit(vec![toks(HOLD, 1)]).unwrap();
    hold.wait();
    let out = queue();
    hold.wait();
    for rx in held {
        assert!(rx.blocking_recv().unwrap().is_ok());
    }
    out
}

/// Submits one item alone and waits for its result.
fn one(e: &Engine, payload: Payload) -> Result<Output, EngineError> {
    let rx = e.submit(vec![payload]).unwrap().pop().unwrap();
    rx.blocking_recv().unwrap()
}

fn code(result: Result<Output, EngineError>) -> ErrorCode {
    match result {
        Err(EngineError::Plugin(e)) => e.code,
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

#[test]
fn admission_is_all_or_nothing_within_the_queue_bound() {
    let (e, _, hold) = scripted("cpu", 4, 3, RETRY_LOAD_EVERY);
    let waiting = while_held(&e, &hold, || {
        // The held item and these two fill the queue of 3.
        let waiting = e.submit(vec![toks(1, 2), toks(2, 2)]).unwrap();
        let refused = e.submit(vec![toks(3, 2)]);
        assert!(
            matches!(
                refused,
                Err(EngineError::Overloaded {
                    queued: 3,
                    capacity: 3,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(e.queued(), 3, "a refused request leaves nothing queued");
        waiting
    });
    for rx in waiting {
        assert!(rx.blocking_recv().unwrap().is_ok());
    }
    assert_eq!(e.queued(), 0);
    assert!(e.submit((0..3).map(|_| toks(1, 2)).collect()).is_ok());
}

#[test]
fn a_request_larger_than_the_queue_is_too_large_not_overloaded() {
    let e = engine(3);
    let refused = e.submit((0..4).map(|_| toks(1, 2)).collect());
    let Err(err @ EngineError::TooLarge { .. }) = refused else {
        panic!("expected TooLarge, got {refused:?}");
    };
    assert!(matches!(
        err,
        EngineError::TooLarge {
            items: 4,
            capacity: 3,
            ..
        }
    ));
    assert_eq!(e.queued(), 0, "a refused request leaves nothing queued");
    let api = crate::api::ApiError::from(err);
    assert_eq!(api.status(), 413);
    assert!(
        api.message.contains("4 items") && api.message.contains("INFINITY_QUEUE_SIZE"),
        "{}",
        api.message
    );
    // A request that fits an empty queue is only ever refused as overload, with 429.
    let overloaded = EngineError::Overloaded {
        model: "m".into(),
        queued: 2,
        capacity: 3,
    };
    assert_eq!(crate::api::ApiError::from(overloaded).status(), 429);
    assert!(e.submit((0..3).map(|_| toks(1, 2)).collect()).is_ok());
}

#[test]
fn a_systemic_failure_fails_the_whole_batch_in_one_call() {
    let (e, probe, hold) = scripted("cpu", 32, 100, RETRY_LOAD_EVERY);
    let rxs = while_held(&e, &hold, || {
        e.submit((0..32).map(|i| toks(DEVICE_LOST, 1 + i % 3)).collect())
            .unwrap()
    });
    for rx in rxs {
        assert_eq!(code(rx.blocking_recv().unwrap()), ErrorCode::Device);
    }
    assert_eq!(probe.calls.load(Ordering::SeqCst), 1);
    assert_eq!(probe.rows(), vec![32]);
    let reason = e.health.status().unwrap_err();
    assert!(reason.contains("device lost"), "{reason}");
    // One failure counted, not one per row: no reload yet.
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 0);
    assert_eq!(e.queued(), 0);
}

#[test]
fn out_of_memory_splits_until_the_rows_fit() {
    let (e, probe, hold) = scripted("cpu", 8, 100, RETRY_LOAD_EVERY);
    let rxs = while_held(&e, &hold, || {
        e.submit((0..8).map(|_| toks(BIG, 4)).collect()).unwrap()
    });
    for rx in rxs {
        assert_eq!(
            rx.blocking_recv().unwrap().unwrap(),
            Output::Vector(vec![4.0, BIG as f32])
        );
    }
    // 8 fails, 4 fails, 2 and 2 fit; the other 4 fails, 2 and 2 fit.
    assert_eq!(probe.rows(), vec![8, 4, 2, 2, 4, 2, 2]);
    assert_eq!(probe.calls.load(Ordering::SeqCst), 7);
    assert!(e.health.status().is_ok());
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 0);
}

#[test]
fn a_bad_input_in_a_shared_batch_fails_only_its_own_request() {
    let (e, probe, hold) = scripted("cpu", 4, 100, RETRY_LOAD_EVERY);
    let (good1, bad, good2) = while_held(&e, &hold, || {
        (
            e.submit(vec![toks(1, 3), toks(2, 3)]).unwrap(),
            e.submit(vec![toks(666, 3)]).unwrap(),
            e.submit(vec![toks(3, 3)]).unwrap(),
        )
    });
    for rx in good1.into_iter().chain(good2) {
        assert!(matches!(rx.blocking_recv().unwrap(), Ok(Output::Vector(_))));
    }
    let bad = bad.into_iter().next().unwrap().blocking_recv().unwrap();
    let err = bad.as_ref().unwrap_err().to_string();
    assert!(err.contains("token 666"), "{err}");
    assert_eq!(code(bad), ErrorCode::InvalidInput);
    // 4 fails; [1, 2] fits; [666, 3] fails; [666] fails alone, [3] fits.
    assert_eq!(probe.rows(), vec![4, 2, 2, 1, 1]);
    assert!(e.health.status().is_ok());
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 0);
}

#[test]
fn a_failure_streak_reloads_the_model_once() {
    let (e, probe, _) = scripted("cpu", 4, 100, RETRY_LOAD_EVERY);
    for i in 0..10 {
        assert_eq!(
            code(one(&e, toks(DEVICE_LOST, 2))),
            ErrorCode::Device,
            "{i}"
        );
    }
    assert_eq!(probe.calls.load(Ordering::SeqCst), 10);
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
    assert_eq!(e.health.restarts(), 1);
    // A success ends the streak; the next one may reload again.
    assert!(one(&e, toks(1, 2)).is_ok());
    assert!(e.health.status().is_ok());
    for _ in 0..RELOAD_AFTER {
        assert!(one(&e, toks(DEVICE_LOST, 2)).is_err());
    }
    // Answered after the reload that follows the streak's last failure.
    assert!(one(&e, toks(1, 2)).is_ok());
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 2);
}

/// The load/drop log of a scripted model on `device` reloaded after failures on `token`.
fn reload_events(device: &'static str, token: i64) -> Vec<String> {
    let (e, probe, _) = scripted(device, 4, 100, RETRY_LOAD_EVERY);
    for _ in 0..RELOAD_AFTER {
        assert!(one(&e, toks(token, 2)).is_err());
    }
    // Answered after the reload.
    assert!(one(&e, toks(1, 2)).is_ok());
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
    probe.events()
}

#[test]
fn a_gpu_or_out_of_memory_model_is_freed_before_its_reload() {
    let freed_first = ["load 0", "drop 0", "load 1"];
    assert_eq!(reload_events("cuda:0", DEVICE_LOST), freed_first);
    assert_eq!(reload_events("cpu", HUGE), freed_first);
}

#[test]
fn a_cpu_model_loads_its_new_copy_before_dropping_the_old() {
    assert_eq!(
        reload_events("cpu", DEVICE_LOST),
        ["load 0", "load 1", "drop 0"]
    );
}

#[test]
fn a_failed_cpu_reload_keeps_the_loaded_copy_serving() {
    let (e, probe, _) = scripted("cpu", 4, 100, RETRY_LOAD_EVERY);
    probe.failing_reloads.store(1, Ordering::SeqCst);
    for _ in 0..RELOAD_AFTER {
        assert!(one(&e, toks(DEVICE_LOST, 2)).is_err());
    }
    assert!(one(&e, toks(1, 2)).is_ok());
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
    assert_eq!(probe.events(), ["load 0"]);
}

#[tokio::test]
async fn a_failed_reload_leaves_the_worker_answering_errors() {
    let (e, probe, _) = scripted("cuda:0", 4, 100, RETRY_LOAD_EVERY);
    probe.failing_reloads.store(usize::MAX, Ordering::SeqCst);
    let run = |payload| {
        let e = e.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), e.run(vec![payload]))
                .await
                .expect("the worker answers")
        }
    };
    for _ in 0..RELOAD_AFTER {
        assert!(run(toks(DEVICE_LOST, 2)).await.is_err());
    }
    for _ in 0..5 {
        let Err(EngineError::Plugin(err)) = run(toks(1, 2)).await else {
            panic!("a missing model answers an error");
        };
        assert_eq!(err.code, ErrorCode::Device);
        assert!(
            err.message.contains("not loaded") && err.message.contains("no device memory left"),
            "{}",
            err.message
        );
    }
    let reason = e.health.status().unwrap_err();
    assert!(
        reason.contains("not loaded") && reason.contains("no device memory left"),
        "{reason}"
    );
    // The old copy was freed, no new one came, the plugin was not called again, and the
    // load is not retried before its interval.
    assert_eq!(probe.events(), ["load 0", "drop 0"]);
    assert_eq!(probe.calls.load(Ordering::SeqCst), RELOAD_AFTER as usize);
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 1);
    assert_eq!(e.queued(), 0);
}

#[test]
fn a_missing_model_is_loaded_again_after_the_retry_interval() {
    let retry = Duration::from_millis(300);
    let (e, probe, _) = scripted("cuda:0", 4, 100, retry);
    probe.failing_reloads.store(1, Ordering::SeqCst);
    for _ in 0..RELOAD_AFTER {
        assert!(one(&e, toks(DEVICE_LOST, 2)).is_err());
    }
    std::thread::sleep(retry + Duration::from_millis(200));
    assert_eq!(one(&e, toks(1, 2)).unwrap(), Output::Vector(vec![2.0, 1.0]));
    assert!(e.health.status().is_ok());
    assert_eq!(probe.reloads.load(Ordering::SeqCst), 2);
    assert_eq!(probe.events(), ["load 0", "drop 0", "load 1"]);
}

#[tokio::test]
async fn reserved_places_count_until_used_or_dropped() {
    let e = engine(3);
    let places = e.reserve(2).unwrap();
    assert_eq!(e.queued(), 2);
    assert!(matches!(e.reserve(2), Err(EngineError::Overloaded { .. })));
    drop(places);
    assert_eq!(e.queued(), 0, "unused places are given back");
    let places = e.reserve(2).unwrap();
    assert!(
        places.submit(vec![toks(1, 2)]).is_err(),
        "one payload per place"
    );
    assert_eq!(e.queued(), 0);
    let out = e
        .reserve(2)
        .unwrap()
        .run(vec![toks(4, 2), toks(5, 3)])
        .await
        .unwrap();
    assert_eq!(out[1], Output::Vector(vec![3.0, 5.0]));
    assert_eq!(e.queued(), 0);
}
