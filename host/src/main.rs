//! `ember`: an embedding and reranking server with plugin backends.

use ember_host::{config, startup};
use std::process::ExitCode;

const HELP: &str = "\
ember: embedding and reranking server (drop-in for worker-infinity-embedding)

Usage: ember [--help | --version]

Configuration comes from environment variables (and config/default.toml or EMBER_CONFIG):
  MODEL_NAMES      ;-separated Hugging Face ids or local directories (required)
  BACKEND          plugin to use: torch (default), optimum, ctranslate2
  BATCH_SIZES      per-model batch sizes (default 32)
  DTYPES           per-model precision: auto, fp32, fp16, bf16, fp8, int8 (default auto)
  DEVICE           auto, cpu, cuda or cuda:N (default auto)
  HOST, PORT       listen address (default 0.0.0.0:8000)
  PLUGIN_DIR       where libember_<backend>.so plugins are (default: next to the binary,
                   then /usr/local/lib/ember)
See config/default.toml for every setting.";

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("--help" | "-h") => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("--version" | "-V") => {
            println!(
                "ember {} (plugin ABI {})",
                env!("CARGO_PKG_VERSION"),
                ember_plugin_api::ABI_VERSION
            );
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("ember: unknown argument {other:?}; see ember --help");
            return ExitCode::from(2);
        }
    }
    init_logging();
    let settings = match config::RawSettings::load().and_then(|r| r.validate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ember: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ember: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(startup::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ember: {e:#}");
            ExitCode::FAILURE
        }
    }
}
