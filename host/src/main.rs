//! `ember`: an embedding and reranking server with plugin backends.

use ember_host::cli::{self, Command, TestInput};
use ember_host::{config, startup};
use std::process::ExitCode;

const HELP: &str = "\
ember: embedding and reranking server (drop-in for worker-infinity-embedding)

Usage: ember [--rp_serve_api] [--rp_api_host HOST] [--rp_api_port PORT]
       ember --test-input [JSON | FILE]     run one job (default ./test_input.json), print it
       ember plugin check PLUGIN.so [--model DIR] [--device D] [--dtype T] [--skip-parity]
                                          check a backend plugin against the plugin contract
                                          (a model without reference.json fails parity unless
                                          --skip-parity; tolerances follow --dtype)
       ember --help | --version

Serves the OpenAI routes (/v1/embeddings, /v1/rerank, /v1/models) and the local RunPod API
(/run, /runsync, /status/ID, ...) over HTTP; when RUNPOD_WEBHOOK_GET_JOB is set it also takes
jobs from the RunPod platform. --test-input exits 0 when the job succeeds, 1 otherwise.

Settings come from environment variables, over config/default.toml (or the file named by
EMBER_CONFIG, whose keys are the same names in lower case):";

fn init_logging(default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // On RunPod (RUNPOD_ENDPOINT_ID set) logs are JSON lines, as the platform's SDK writes them.
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
        || std::env::var("RUNPOD_ENDPOINT_ID").is_ok_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn read_test_input(source: &TestInput) -> Result<serde_json::Value, String> {
    let text = match source {
        TestInput::Json(s) => s.clone(),
        TestInput::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the test input {}: {e}", path.display()))?,
    };
    serde_json::from_str(&text).map_err(|e| format!("the test input is not valid JSON: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ember: {e}");
            return ExitCode::from(2);
        }
    };
    match &command {
        Command::Help => {
            println!("{HELP}\n{}", config::render::help_text().trim_end());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!(
                "ember {} (plugin ABI {})",
                env!("CARGO_PKG_VERSION"),
                ember_plugin_api::ABI_VERSION
            );
            return ExitCode::SUCCESS;
        }
        Command::PluginCheck(args) => {
            // The report goes to stdout; plugin logs only when something is wrong.
            init_logging("warn");
            return ExitCode::from(ember_host::check::main(args));
        }
        _ => {}
    }
    init_logging("info");
    // Before any thread and any plugin: the driver reads these when it starts.
    ember_host::jit_cache::configure();
    let mut settings = match config::RawSettings::load().and_then(|r| r.validate()) {
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
    let outcome = match command {
        Command::TestInput(source) => match read_test_input(&source) {
            Ok(job) => runtime
                .block_on(startup::test_input(settings, job))
                .map(|ok| {
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }),
            Err(e) => {
                eprintln!("ember: {e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Serve { host, port } => {
            if let Some(h) = host {
                settings.host = h;
            }
            if let Some(p) = port {
                settings.port = p;
            }
            runtime
                .block_on(startup::run(settings))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Help | Command::Version | Command::PluginCheck(_) => {
            unreachable!("handled above")
        }
    };
    outcome.unwrap_or_else(|e| {
        tracing::error!("{e:#}");
        eprintln!("ember: {e:#}");
        ExitCode::FAILURE
    })
}
