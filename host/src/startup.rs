//! Start-up: load the plugin, resolve and load every model, start the engines, serve.

use crate::api::{AppState, DeployedModel};
use crate::config::{ModelSettings, Settings};
use crate::engine::{Engine, EngineLimits};
use crate::models::{manifest, resolve};
use crate::plugin::Plugin;
use crate::text::TextEncoder;
use anyhow::{anyhow, Context};
use ember_plugin_api::LoadRequest;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A model resolved, understood, tokenizer loaded and loaded by the plugin.
pub struct Prepared {
    /// Where its files are.
    pub local: resolve::LocalModel,
    /// What the host read from its configuration.
    pub manifest: manifest::Manifest,
    /// Its tokenizer.
    pub encoder: TextEncoder,
    /// The plugin's handle.
    pub runner: crate::plugin::ModelRunner,
}

/// Resolves, reads and loads the model `m` with `plugin` (no engine yet).
pub async fn prepare(
    plugin: &Arc<Plugin>,
    m: &ModelSettings,
    settings: &Settings,
) -> anyhow::Result<Prepared> {
    let local = resolve::resolve(&m.name, plugin, m.dtype).await?;
    let manifest = manifest::read(&m.name, &local.dir)?;
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
    let encoder = tokio::task::spawn_blocking(move || TextEncoder::load(&dir, max_len))
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
    let runner = tokio::task::spawn_blocking(move || p.load_model(&request))
        .await?
        .map_err(|e| {
            anyhow!(
                "model {}: backend {} could not load it: {}",
                m.name,
                plugin.info.name,
                e.message
            )
        })?;
    Ok(Prepared {
        local,
        manifest,
        encoder,
        runner,
    })
}

/// Loads one model and starts its engine.
async fn deploy(
    plugin: &Arc<Plugin>,
    settings: &Settings,
    index: usize,
) -> anyhow::Result<DeployedModel> {
    let m = &settings.models[index];
    let started = Instant::now();
    let Prepared {
        local,
        manifest,
        encoder,
        runner,
    } = prepare(plugin, m, settings).await?;
    let kind = manifest.abi.kind;
    let described = runner.described.clone();
    let engine = Engine::start(
        &m.name,
        runner,
        EngineLimits {
            batch_size: m.batch_size as usize,
            max_batch_tokens: settings.max_batch_tokens,
            queue_size: settings.queue_size,
            pad_id: encoder.pad_id,
        },
    )?;
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
    Ok(DeployedModel {
        id: m.name.clone(),
        alias,
        manifest,
        encoder: Arc::new(encoder),
        engine,
        dim: described.embedding_dim as usize,
        device: described.device.to_string(),
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

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let plugin = load_plugin(&settings)?;
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
        models.push(deploy(&plugin, &settings, i).await?);
    }
    let images = Arc::new(crate::images::Fetcher::new(&settings.images).map_err(|e| anyhow!(e))?);
    let state = Arc::new(AppState {
        models,
        backend: plugin.info.name.to_string(),
        max_items: settings.max_items_per_request,
        max_request_bytes: settings.max_request_bytes,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        images,
    });
    let app = crate::http::router(state);
    let addr = format!("{}:{}", settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HOST/PORT)"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}
