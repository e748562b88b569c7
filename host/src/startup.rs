//! Start-up: load the plugin, resolve and load every model, start the engines, serve.

use crate::api::{AppState, DeployedModel};
use crate::config::{ModelSettings, Settings};
use crate::engine::{Engine, EngineLimits, ModelRunner, Reload};
use crate::metrics::Metrics;
use crate::models::multi_vector::MultiVector;
use crate::models::{manifest, resolve};
use crate::plugin::Plugin;
use crate::readiness::{Gate, Phase, Progress};
use crate::runpod::jobs::JobStore;
use crate::runpod::router::{self, JobResult};
use crate::runpod::worker;
use crate::text::{LateEncoder, TextEncoder, Truncation};
use anyhow::{anyhow, Context};
use ember_plugin_api::{LoadRequest, Outputs};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A model resolved, understood, tokenizer loaded and loaded by the plugin.
pub struct Prepared {
    /// Where its files are.
    pub local: resolve::LocalModel,
    /// What the host read from its configuration.
    pub manifest: manifest::Manifest,
    /// Its tokenizer.
    pub encoder: TextEncoder,
    /// The plugin's handle.
    pub runner: ModelRunner,
    /// What the plugin was asked to load (to load it again after repeated failures).
    pub request: LoadRequest,
}

/// Resolves, reads and loads the model `m` with `plugin` (no engine yet).
pub async fn prepare(
    plugin: &Arc<Plugin>,
    m: &ModelSettings,
    settings: &Settings,
) -> anyhow::Result<Prepared> {
    prepare_reporting(plugin, m, settings, &|_| {}).await
}

/// [`prepare`], telling `phase` when downloading and loading start.
pub async fn prepare_reporting(
    plugin: &Arc<Plugin>,
    m: &ModelSettings,
    settings: &Settings,
    phase: &(dyn Fn(Phase) + Sync),
) -> anyhow::Result<Prepared> {
    phase(Phase::Downloading);
    let local = resolve::resolve(&m.name, plugin, m.dtype).await?;
    phase(Phase::Loading);
    // Everything below reads files or calls into the plugin: blocking threads do it, never
    // the runtime's workers (which keep answering /health and the loading progress).
    let (name, dir) = (m.name.clone(), local.dir.clone());
    let mut manifest = tokio::task::spawn_blocking(move || manifest::read(&name, &dir)).await??;
    if let Some(p) = &m.prompt_name {
        if !manifest.prompts.contains_key(p) {
            let known: Vec<&str> = manifest.prompts.keys().map(String::as_str).collect();
            return Err(anyhow!(
                "model {}: PROMPT_NAMES names prompt {p:?}, which the model does not define \
                 (its prompts: {})",
                m.name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        manifest.default_prompt_name = Some(p.clone());
    }
    let kind = manifest.abi.kind;
    if !plugin.info.kinds.contains(&kind) {
        let kinds: Vec<&str> = plugin.info.kinds.iter().map(|k| k.as_str()).collect();
        return Err(anyhow!(
            "model {} is a {} model, which backend {} does not run (it runs: {})",
            m.name,
            kind.as_str(),
            plugin.info.name,
            kinds.join(", ")
        ));
    }
    let dir = local.dir.clone();
    let max_len = manifest.abi.max_input_tokens as usize;
    let template = manifest.pair_template.clone();
    let encoder = tokio::task::spawn_blocking(move || TextEncoder::load(&dir, max_len, template))
        .await?
        .with_context(|| format!("model {}", m.name))?;
    let request = LoadRequest {
        model_dir: local.dir.display().to_string().into(),
        files: local
            .backend_files
            .iter()
            .map(|f| f.as_str().into())
            .collect(),
        manifest: manifest.abi.clone(),
        dtype: m.dtype,
        device: settings.device,
        max_batch_size: m.batch_size,
        intra_op_threads: settings.intra_op_threads,
    };
    let p = plugin.clone();
    let req = request.clone();
    let runner = tokio::task::spawn_blocking(move || ModelRunner::load(&p, &req))
        .await?
        .map_err(|e| {
            anyhow!(
                "model {}: backend {} could not load it: {}",
                m.name,
                plugin.info.name,
                e.message
            )
        })?
        .with_head(manifest.head.clone())
        .map_err(|e| anyhow!("model {}: {e}", m.name))?
        .with_sparse(manifest.sparse);
    if manifest.sparse.is_some() && !runner.outputs.has(Outputs::SPARSE) {
        return Err(anyhow!(
            "model {} is a SPLADE model (its pipeline ends in SpladePooling), whose sparse \
             weights backend {} does not compute for it (BACKEND=torch computes them for \
             the BERT, DistilBERT, RoBERTa-family and MPNet *ForMaskedLM checkpoints)",
            m.name,
            plugin.info.name
        ));
    }
    let mut manifest = manifest;
    check_heads(&m.name, &mut manifest, &runner)?;
    if let Some(lexical) = manifest.lexical.as_mut() {
        lexical.resolve(|t| encoder.token_id(t));
    }
    if let Some(mv) = manifest.primary_multi_vector() {
        check_late(mv, &runner).map_err(|e| {
            anyhow!(
                "model {} is a multi-vector (ColBERT) model, {e}; backend {} offers {}",
                m.name,
                plugin.info.name,
                match runner.outputs.names().join(", ") {
                    o if o.is_empty() => "no outputs besides embeddings".to_string(),
                    o => o,
                }
            )
        })?;
    }
    Ok(Prepared {
        local,
        manifest,
        encoder,
        runner,
        request,
    })
}

/// Checks bge-m3's heads (lexical and multi-vector, made from token states) against what
/// `runner` offers: heads that read another width stop the start-up; without token states
/// they are dropped with a warning, and the model serves its dense embeddings.
fn check_heads(
    name: &str,
    manifest: &mut manifest::Manifest,
    runner: &ModelRunner,
) -> anyhow::Result<()> {
    let extra = manifest.multi_vector.as_ref().is_some_and(|mv| !mv.primary);
    if manifest.lexical.is_none() && !extra {
        return Ok(());
    }
    if !runner.outputs.has(Outputs::TOKEN_STATES) {
        tracing::warn!(
            model = name,
            "the model has bge-m3's sparse_linear.pt / colbert_linear.pt heads, which read token \
             states this backend does not offer; serving its dense embeddings only"
        );
        manifest.lexical = None;
        manifest.multi_vector = None;
        return Ok(());
    }
    // The width of the states the heads read (the dense embedding may be narrower, after
    // Dense modules).
    let hidden = match manifest.abi.hidden_size {
        0 => runner.described.embedding_dim as usize,
        h => h as usize,
    };
    if let Some(l) = manifest.lexical.as_ref().filter(|l| l.width() != hidden) {
        return Err(anyhow!(
            "model {name}: {} reads states of {} values, but the model's are {hidden} wide",
            crate::models::bge_m3::SPARSE_FILE,
            l.width()
        ));
    }
    if let Some(mv) = manifest.multi_vector.as_ref().filter(|mv| !mv.primary) {
        mv.head
            .check(hidden)
            .map_err(|e| anyhow!("model {name}: {e}"))?;
    }
    Ok(())
}

/// Why `runner` cannot serve the multi-vector pipeline `mv`, if it cannot: its vectors are
/// made from token states (with ColBERT's unattended query expansion, of positions attention
/// skips), of the width its Dense modules read.
fn check_late(mv: &MultiVector, runner: &ModelRunner) -> Result<(), String> {
    if !runner.outputs.has(Outputs::TOKEN_STATES) {
        return Err("whose vectors are made from token states".into());
    }
    let unattended = mv.spec.expansion.as_ref().is_some_and(|e| !e.attend);
    if unattended && !runner.outputs.has(Outputs::UNATTENDED_STATES) {
        return Err(
            "whose query expansion needs the states of tokens attention skips \
             (BACKEND=torch computes them for BERT-family and ModernBERT encoders, \
             optimum for BERT-family exports)"
                .into(),
        );
    }
    mv.head.check(runner.described.embedding_dim as usize)
}

/// What a model's warm-up batch computes: what its requests will ask for most.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Warm {
    /// The call of the model's kind (embeddings, scores, logits).
    Kind(ember_plugin_api::ModelKind),
    /// SPLADE weights.
    Sparse,
    /// Token states (multi-vector models).
    States,
}

impl Warm {
    fn of(manifest: &manifest::Manifest) -> Warm {
        if manifest.sparse.is_some() {
            Warm::Sparse
        } else if manifest.is_multi_vector() {
            Warm::States
        } else {
            Warm::Kind(manifest.abi.kind)
        }
    }
}

/// Runs one batch of `batch_size` inputs through a freshly loaded model so that the first
/// request does not pay for lazy initialisation (kernels, allocator, thread pools); returns
/// how long it took. A model that cannot run a batch stops the start-up here.
fn warm_up(
    runner: &ModelRunner,
    encoder: &TextEncoder,
    warm: Warm,
    batch_size: usize,
) -> anyhow::Result<std::time::Duration> {
    use ember_plugin_api::{ModelKind, PairBatch};
    let started = Instant::now();
    let text = "ember warms up the model with one batch of the configured size.".to_string();
    let texts = vec![text.clone(); batch_size.max(1)];
    let tokens = match warm {
        Warm::Kind(ModelKind::Rerank) => encoder.encode_pairs(&text, &texts, Truncation::Right)?,
        _ => encoder.encode(&texts)?,
    };
    let batch = crate::engine::pad(&tokens.iter().collect::<Vec<_>>(), encoder.pad_id);
    let result = match warm {
        Warm::Sparse => runner.sparse(&batch).map(|_| ()),
        Warm::States => runner.token_states(&batch).map(|_| ()),
        Warm::Kind(ModelKind::Rerank) => {
            runner.score_pairs(&PairBatch { tokens: batch }).map(|_| ())
        }
        Warm::Kind(ModelKind::Classify) => runner.classify_tokens(&batch).map(|_| ()),
        Warm::Kind(ModelKind::Embed | ModelKind::Clip) => runner.embed_tokens(&batch).map(|_| ()),
    };
    result.map_err(|e| anyhow!("warm-up batch failed: {}", e.message))?;
    Ok(started.elapsed())
}

/// Loads one model and starts its engine, reporting its phases to `progress`.
async fn deploy(
    plugin: &Arc<Plugin>,
    settings: &Settings,
    index: usize,
    progress: &Progress,
    metrics: &Metrics,
) -> anyhow::Result<DeployedModel> {
    let m = &settings.models[index];
    let started = Instant::now();
    let Prepared {
        local,
        manifest,
        encoder,
        runner,
        request,
    } = prepare_reporting(plugin, m, settings, &|phase| progress.set(index, phase)).await?;
    let kind = manifest.abi.kind;
    let described = runner.described.clone();
    // Sparse weights are answered for SPLADE pipelines only: a masked-language checkpoint
    // served as a dense embedder has the head, but no reduction of its logits is defined.
    let outputs = match manifest.sparse {
        Some(_) => runner.outputs,
        None => runner.outputs.without(Outputs::SPARSE),
    };
    progress.set(index, Phase::WarmingUp);
    let rows = m.batch_size as usize;
    let warm = Warm::of(&manifest);
    // A model that fails its warm-up is dropped on the blocking thread too.
    let (runner, encoder, warm) = tokio::task::spawn_blocking(move || {
        warm_up(&runner, &encoder, warm, rows).map(|warm| (runner, encoder, warm))
    })
    .await?
    .with_context(|| format!("model {}", m.name))?;
    tracing::info!(
        model = m.name,
        rows = m.batch_size,
        ms = warm.as_secs_f64() * 1e3,
        "model warmed up"
    );
    let reloader = plugin.clone();
    let head = manifest.head.clone();
    let sparse = manifest.sparse;
    let reload: Reload = Box::new(move || {
        ModelRunner::load(&reloader, &request).and_then(|runner| {
            runner
                .with_head(head.clone())
                .map(|r| r.with_sparse(sparse))
                .map_err(ember_plugin_api::PluginError::internal)
        })
    });
    let engine = Engine::start(
        &m.name,
        runner,
        EngineLimits {
            batch_size: m.batch_size as usize,
            max_batch_tokens: settings.max_batch_tokens,
            queue_size: settings.queue_size,
            pad_id: encoder.pad_id,
        },
        Some(reload),
        metrics,
    )?;
    progress.set(index, Phase::Ready);
    metrics
        .load_seconds
        .with_label_values(&[&m.name])
        .set(started.elapsed().as_secs_f64());
    tracing::info!(
        model = m.name,
        kind = kind.as_str(),
        dir = %local.dir.display(),
        files = local.backend_files.join(","),
        dim = described.embedding_dim,
        device = described.device.as_str(),
        dtype = described.dtype.as_str(),
        pooling = manifest.abi.pooling.as_str(),
        max_input_tokens = manifest.abi.max_input_tokens,
        batch_size = m.batch_size,
        ms = started.elapsed().as_millis() as u64,
        "model ready"
    );
    let alias = m
        .name
        .trim_end_matches('/')
        .rsplit('/')
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("/");
    let (encoder, late) = match manifest.primary_multi_vector() {
        Some(mv) => {
            // The model's tokenizer keeps the markers whole on every route (/embed_all with
            // the query prompt too), as sentence-transformers registers them on it.
            let markers = LateEncoder::markers(&encoder, &mv.spec);
            let encoder = match markers.is_empty() {
                true => encoder,
                false => encoder
                    .derived(encoder.max_len, &markers)
                    .with_context(|| format!("model {}", m.name))?,
            };
            let late = LateEncoder::new(&encoder, mv.spec.clone())
                .with_context(|| format!("model {}", m.name))?;
            (encoder, Some(Arc::new(late)))
        }
        None => (encoder, None),
    };
    let dim = match manifest.primary_multi_vector() {
        Some(mv) => mv.head.output_dim(described.embedding_dim as usize),
        None => described.embedding_dim as usize,
    };
    Ok(DeployedModel {
        id: m.name.clone(),
        alias,
        manifest,
        encoder: Arc::new(encoder),
        late,
        engine,
        dim,
        device: described.device.to_string(),
        outputs,
        calibration: tokio::sync::OnceCell::new(),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Finds and loads the plugin named by `BACKEND`.
pub fn load_plugin(settings: &Settings) -> anyhow::Result<Arc<Plugin>> {
    let path = crate::plugin::find(&settings.backend, settings.plugin_dir.as_deref())?;
    Ok(Arc::new(Plugin::load(&path)?))
}

/// Loads the plugin and every model, ready to serve, reporting each model's phase and
/// recording into `metrics`.
pub async fn build(
    settings: &Settings,
    progress: &Progress,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<AppState>> {
    // Loading the plugin opens its library and initialises its runtime: a blocking thread's
    // work.
    let plugin_settings = settings.clone();
    let plugin = tokio::task::spawn_blocking(move || load_plugin(&plugin_settings)).await??;
    tracing::info!(
        backend = plugin.info.name.as_str(),
        version = plugin.info.version.as_str(),
        runtime = plugin.info.runtime.as_str(),
        abi = %plugin.abi,
        path = %plugin.path.display(),
        "plugin loaded"
    );
    let mut models = Vec::with_capacity(settings.models.len());
    for i in 0..settings.models.len() {
        models.push(deploy(&plugin, settings, i, progress, &metrics).await?);
    }
    let images = Arc::new(crate::images::Images::new(&settings.images).map_err(|e| anyhow!(e))?);
    Ok(Arc::new(AppState {
        models,
        backend: plugin.info.name.to_string(),
        max_items: settings.max_items_per_request,
        max_request_bytes: settings.max_request_bytes,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        images,
        metrics,
    }))
}

/// Serves HTTP (OpenAI routes and the local RunPod API) and, when `RUNPOD_WEBHOOK_GET_JOB`
/// is set, takes jobs from the RunPod platform, until SIGTERM or Ctrl-C; then finishes every
/// accepted job before returning. The port is open from the start: until every model is
/// ready, every route answers 503 with the loading progress.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let addr = format!("{}:{}", settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HOST/PORT)"))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(addr = %local_addr, "listening; loading models");
    let progress = Progress::new(settings.models.iter().map(|m| m.name.clone()));
    let metrics = Arc::new(Metrics::new());
    let gate = Gate::new(
        progress.clone(),
        settings.api_key.as_deref(),
        metrics.clone(),
    );
    let mut stop = stop_rx.clone();
    let server = tokio::spawn(crate::server::serve(
        listener,
        gate.router(),
        settings.server.clone(),
        settings.max_request_bytes,
        metrics.clone(),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    let mut stopping = stop_rx.clone();
    let state = tokio::select! {
        state = build(&settings, &progress, metrics.clone()) => state?,
        _ = stopping.wait_for(|s| *s) => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let jobs = JobStore::new(settings.runpod_max_concurrency, settings.jobs.clone());
    let worker = worker::Platform::from_env(settings.runpod_max_concurrency)?
        .map(|p| tokio::spawn(worker::run(p, state.clone(), stop_rx.clone())));
    gate.open(crate::http::router(
        state,
        jobs.clone(),
        settings.api_key.as_deref(),
    ));
    metrics.ready.set(1);
    tracing::info!(
        addr = %local_addr,
        ms = started.elapsed().as_millis() as u64,
        runpod_worker = worker.is_some(),
        "ready"
    );
    server.await??;
    jobs.drain().await;
    if let Some(w) = worker {
        w.await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs one job (`{"input": ...}`, as in runpod's `test_input.json`), prints its result and
/// says whether it succeeded.
pub async fn test_input(settings: Settings, job: Value) -> anyhow::Result<bool> {
    let input = job.get("input").ok_or_else(|| {
        anyhow!("the test input has no \"input\" field (expected {{\"input\": {{...}}}})")
    })?;
    let id = job
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("local_test");
    let progress = Progress::new(settings.models.iter().map(|m| m.name.clone()));
    let state = build(&settings, &progress, Arc::new(Metrics::new())).await?;
    let result = router::run(&state, input).await;
    let ok = matches!(result, JobResult::Output(_));
    tracing::info!(requestId = id, ok, "test input finished");
    println!("{}", result.to_platform());
    Ok(ok)
}
