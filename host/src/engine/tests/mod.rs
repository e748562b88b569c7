//! The engine's tests: an in-process model through the whole engine (here) and scripted
//! models for admission, failures and reloads (`scripted`).

mod scripted;

use super::*;
use crate::engine::reload::RELOAD_AFTER;
use ember_plugin_api::sdk::into_model_box;
use ember_plugin_api::{
    DType, EmbeddingBatch, ErrorCode, LoadedModel, Model, PairBatch, PixelBatch, ScoreBatch,
    TokenBatch,
};

/// An in-process model: the vector of a row is [its length, its first token]; a row
/// containing token 666 is rejected as invalid input, token 999 makes the plugin panic.
struct Echo;

impl Model for Echo {
    fn describe(&self) -> LoadedModel {
        LoadedModel {
            embedding_dim: 2,
            device: "cpu".into(),
            dtype: DType::Fp32,
            concurrent_calls: false,
        }
    }

    fn embed_tokens(&self, batch: &TokenBatch) -> Result<EmbeddingBatch, PluginError> {
        let s = batch.seq_len as usize;
        if batch.input_ids.contains(&999) {
            panic!("simulated plugin crash");
        }
        if batch.input_ids.contains(&666) {
            return Err(PluginError::invalid_input("token 666 is not allowed"));
        }
        let lens = batch.row_lengths();
        let values: Vec<f32> = (0..batch.rows as usize)
            .flat_map(|r| [lens[r] as f32, batch.input_ids[r * s] as f32])
            .collect();
        Ok(EmbeddingBatch {
            rows: batch.rows,
            dim: 2,
            values: values.into(),
        })
    }

    /// The score of a pair is minus its length.
    fn score_pairs(&self, batch: &PairBatch) -> Result<ScoreBatch, PluginError> {
        let scores: Vec<f32> = batch
            .tokens
            .row_lengths()
            .iter()
            .map(|l| -(*l as f32))
            .collect();
        Ok(ScoreBatch {
            scores: scores.into(),
        })
    }

    /// The vector of an image is [its first value, the batch's rows].
    fn embed_pixels(&self, batch: &PixelBatch) -> Result<EmbeddingBatch, PluginError> {
        let per = (batch.channels * batch.height * batch.width) as usize;
        let values: Vec<f32> = batch
            .values
            .chunks(per)
            .flat_map(|img| [img[0], batch.rows as f32])
            .collect();
        Ok(EmbeddingBatch {
            rows: batch.rows,
            dim: 2,
            values: values.into(),
        })
    }
}

fn engine(queue_size: usize) -> Engine {
    let runner = ModelRunner::new(into_model_box(Box::new(Echo)));
    let limits = EngineLimits {
        batch_size: 4,
        max_batch_tokens: 1024,
        queue_size,
        pad_id: 0,
    };
    Engine::start("echo", runner, limits, None, &Metrics::new()).unwrap()
}

fn toks(first: i64, len: usize) -> Payload {
    let mut ids = vec![first];
    ids.resize(len, 7);
    Payload::Tokens(Tokens {
        type_ids: vec![0; len],
        ids,
        unpooled: 0,
        unattended: 0,
    })
}

#[tokio::test]
async fn results_come_back_in_order_across_sorted_batches() {
    let e = engine(100);
    let payloads: Vec<Payload> = (0..10).map(|i| toks(i as i64 + 1, 10 - i)).collect();
    let out = e.run(payloads).await.unwrap();
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o, &Output::Vector(vec![(10 - i) as f32, (i + 1) as f32]));
    }
    assert_eq!(e.queued(), 0);
}

#[tokio::test]
async fn a_bad_input_fails_only_its_own_request() {
    let e = engine(100);
    // Submitted together so they share batches.
    let good1 = e.submit(vec![toks(1, 3), toks(2, 3)]).unwrap();
    let bad = e.submit(vec![toks(666, 3)]).unwrap();
    let good2 = e.submit(vec![toks(3, 3)]).unwrap();
    for rx in good1.into_iter().chain(good2) {
        assert!(matches!(rx.await.unwrap(), Ok(Output::Vector(_))));
    }
    let err = bad.into_iter().next().unwrap().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("token 666"), "{err}");
    assert!(
        e.health.status().is_ok(),
        "bad input does not make the model unhealthy"
    );
    assert_eq!(e.queued(), 0);
}

#[tokio::test]
async fn a_plugin_panic_is_an_error_and_marks_health() {
    let e = engine(100);
    let err = e.run(vec![toks(999, 2)]).await.unwrap_err();
    assert!(err.to_string().contains("simulated plugin crash"), "{err}");
    assert!(e
        .health
        .status()
        .unwrap_err()
        .contains("simulated plugin crash"));
    // The worker survives and recovers on the next good call.
    assert!(e.run(vec![toks(1, 2)]).await.is_ok());
    assert!(e.health.status().is_ok());
}

#[tokio::test]
async fn repeated_failures_reload_the_model_and_health_recovers() {
    let reloads = Arc::new(AtomicUsize::new(0));
    let counter = reloads.clone();
    let reload: Reload = Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(ModelRunner::new(into_model_box(Box::new(Echo))))
    });
    let limits = EngineLimits {
        batch_size: 4,
        max_batch_tokens: 1024,
        queue_size: 100,
        pad_id: 0,
    };
    let runner = ModelRunner::new(into_model_box(Box::new(Echo)));
    let e = Engine::start("echo", runner, limits, Some(reload), &Metrics::new()).unwrap();
    for i in 1..RELOAD_AFTER {
        assert!(e.run(vec![toks(999, 2)]).await.is_err());
        assert_eq!(reloads.load(Ordering::SeqCst), 0, "after {i} failures");
    }
    assert!(e.run(vec![toks(999, 2)]).await.is_err());
    // The failing item is answered first; the reload follows on the worker.
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.health.restarts() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reloads.load(Ordering::SeqCst), 1);
    let reason = e.health.status().unwrap_err();
    assert!(reason.contains("model reloaded"), "{reason}");
    assert_eq!(e.health.restarts(), 1);
    // Bad input is the caller's fault: it never counts towards a reload.
    for _ in 0..RELOAD_AFTER {
        assert!(e.run(vec![toks(666, 2)]).await.is_err());
    }
    assert_eq!(reloads.load(Ordering::SeqCst), 1);
    assert!(e.run(vec![toks(1, 2)]).await.is_ok());
    assert!(e.health.status().is_ok());
    assert_eq!(e.queued(), 0);
}

#[tokio::test]
async fn texts_pairs_and_images_are_batched_by_call() {
    let e = engine(100);
    let image = |v: f32| Payload::Pixels {
        height: 1,
        width: 1,
        values: vec![v; 3],
    };
    let pair = |len: usize| {
        let Payload::Tokens(t) = toks(5, len) else {
            unreachable!()
        };
        Payload::Pair(t)
    };
    let out = e
        .run(vec![
            toks(1, 3),
            pair(4),
            image(7.0),
            toks(2, 2),
            image(8.0),
            pair(6),
        ])
        .await
        .unwrap();
    assert_eq!(out[0], Output::Vector(vec![3.0, 1.0]));
    assert_eq!(out[1], Output::Score(-4.0));
    // A request's items reach the worker together: the two images make one call of two
    // rows, images only; the two texts one call of their own.
    assert_eq!(out[2], Output::Vector(vec![7.0, 2.0]));
    assert_eq!(out[3], Output::Vector(vec![2.0, 2.0]));
    assert_eq!(out[4], Output::Vector(vec![8.0, 2.0]));
    assert_eq!(out[5], Output::Score(-6.0));
    assert_eq!(e.queued(), 0);
}
