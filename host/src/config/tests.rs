use super::*;
use ember_plugin_api::DeviceKind;
use std::ffi::OsString;

fn raw(models: &str) -> RawSettings {
    let mut r = RawSettings::default();
    r.set("MODEL_NAMES", models).unwrap();
    r
}

fn with(models: &str, var: &str, value: &str) -> RawSettings {
    let mut r = raw(models);
    r.set(var, value).unwrap();
    r
}

#[test]
fn defaults_follow_the_seed_worker() {
    let s = raw("a/b").validate().unwrap();
    assert_eq!(s.backend, "torch");
    assert_eq!(s.queue_size, 48000);
    assert_eq!(s.runpod_max_concurrency, 300);
    assert_eq!(s.models[0].batch_size, 32);
    assert_eq!(s.models[0].dtype, DType::Auto);
    assert_eq!(s.device.kind, DeviceKind::Auto);
}

#[test]
fn prompt_names_are_per_model_with_a_dash_for_the_models_own() {
    let r = raw("a;b");
    assert_eq!(r.validate().unwrap().models[0].prompt_name, None);
    let s = with("a;b", "PROMPT_NAMES", "query;-").validate().unwrap();
    assert_eq!(s.models[0].prompt_name.as_deref(), Some("query"));
    assert_eq!(s.models[1].prompt_name, None);
    let e = with("a;b", "PROMPT_NAMES", "query")
        .validate()
        .unwrap_err()
        .0;
    assert!(
        e.contains("PROMPT_NAMES") && e.contains("MODEL_NAMES (2)"),
        "{e}"
    );
}

#[test]
fn per_model_lists_must_match_model_names() {
    let s = with("a;b", "BATCH_SIZES", "8;16;").validate().unwrap();
    assert_eq!(s.models[1].batch_size, 16);
    let e = with("a;b", "BATCH_SIZES", "8").validate().unwrap_err().0;
    assert!(
        e.contains("BATCH_SIZES") && e.contains("MODEL_NAMES (2)"),
        "{e}"
    );
    let e = with("a;b", "BATCH_SIZES", "8;0").validate().unwrap_err().0;
    assert!(
        e.contains("BATCH_SIZES=\"8;0\"") && e.contains("1 to 4096"),
        "{e}"
    );
}

#[test]
fn bad_values_name_variable_value_and_allowed() {
    let e = with("a", "DTYPES", "fp64").validate().unwrap_err().0;
    assert!(e.contains("DTYPES=\"fp64\"") && e.contains("fp16"), "{e}");
    let e = with("a", "DEVICE", "gpu").validate().unwrap_err().0;
    assert!(e.contains("cuda:N"), "{e}");
    let e = with("a", "INFINITY_QUEUE_SIZE", "0")
        .validate()
        .unwrap_err()
        .0;
    assert!(e.contains("INFINITY_QUEUE_SIZE"), "{e}");
    assert!(raw("")
        .validate()
        .unwrap_err()
        .0
        .contains("missing MODEL_NAMES"));
    let e = with("", "BATCH_SIZES", "8").validate().unwrap_err().0;
    assert!(e.contains("missing MODEL_NAMES"), "{e}");
    assert!(raw("a;a").validate().unwrap_err().0.contains("twice"));
    let e = with("a", "BACKEND", "../evil").validate().unwrap_err().0;
    assert!(e.contains("BACKEND") && e.contains("candle"), "{e}");
}

#[test]
fn host_must_be_an_address_or_a_host_name() {
    for ok in [
        "0.0.0.0",
        "::",
        "[::1]",
        "127.0.0.1",
        "localhost",
        "my-host.internal",
    ] {
        assert!(with("a", "HOST", ok).validate().is_ok(), "{ok}");
    }
    assert_eq!(with("a", "HOST", "[::1]").validate().unwrap().host, "::1");
    for bad in [
        "",
        "0.0.0.0:8000",
        "my host",
        "-x",
        "a..b",
        "http://x",
        "999.1.1.1",
        "1.2.3",
        "[::1",
    ] {
        let e = with("a", "HOST", bad).validate().unwrap_err().0;
        assert!(
            e.contains("HOST=") && e.contains("IP address"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn toml_numbers_and_lists_are_read_as_written() {
    let mut r = RawSettings::default();
    r.merge_toml(
        "model_names = [\"a/b\", \"c/d\"]\nbatch_sizes = [8, 16]\nport = 9000\n",
        "test.toml",
    )
    .unwrap();
    let s = r.validate().unwrap();
    assert_eq!(s.models.len(), 2);
    assert_eq!(s.models[1].batch_size, 16);
    assert_eq!(s.port, 9000);
    // Whole floats are whole numbers; fractions stay fractions.
    r.merge_toml("port = 9001.0\nhttp_header_timeout = 2.5\n", "test.toml")
        .unwrap();
    let s = r.validate().unwrap();
    assert_eq!(s.port, 9001);
    assert_eq!(
        s.server.header_timeout,
        std::time::Duration::from_millis(2500)
    );
}

#[test]
fn unknown_or_mistyped_toml_keys_are_refused_by_name() {
    let e = RawSettings::default()
        .merge_toml("batch_size = 8\n", "my.toml")
        .unwrap_err()
        .0;
    assert!(
        e.contains("my.toml") && e.contains("\"batch_size\"") && e.contains("\"batch_sizes\""),
        "{e}"
    );
    let e = RawSettings::default()
        .merge_toml("[images]\nmax = 1\n", "my.toml")
        .unwrap_err()
        .0;
    assert!(e.contains("\"images\""), "{e}");
    let e = RawSettings::default()
        .merge_toml("port = { a = 1 }\n", "my.toml")
        .unwrap_err()
        .0;
    assert!(e.contains("port must be") && e.contains("table"), "{e}");
}

#[test]
fn the_environment_is_taken_exactly_as_written() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |var: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let mut r = RawSettings::default();
    r.merge_env(env(&[
        ("MODEL_NAMES", "[a/b]"),
        ("API_KEY", "0123"),
        ("HTTP_CLIENT_USER_AGENT", "\"quoted\" agent"),
        ("backend", "optimum"),
    ]))
    .unwrap();
    let s = r.validate().unwrap();
    assert_eq!(s.api_key.as_deref(), Some("0123"));
    assert_eq!(s.model_names, vec!["[a/b]".to_string()]);
    assert_eq!(s.images.user_agent, "\"quoted\" agent");
    // Names are case-sensitive, as the shell's are.
    assert_eq!(s.backend, "torch");
}

#[test]
fn a_model_path_with_a_semicolon_is_one_model() {
    let model = ModelSettings {
        name: "/models/a;b".into(),
        batch_size: 8,
        dtype: DType::Fp32,
        prompt_name: None,
    };
    let s = Settings::for_models(vec![model.clone()]).unwrap();
    assert_eq!(s.models, vec![model]);
    assert_eq!(s.port, 8000);
}

#[test]
fn image_settings_follow_the_seed_worker() {
    let s = raw("a").validate().unwrap().images;
    assert!(s.user_agent.contains("Chrome/120"));
    assert_eq!(s.timeout, std::time::Duration::from_secs(10));
    assert_eq!((s.max_connections, s.max_keepalive), (50, 20));
    assert!(!s.allow_private);
    let e = with("a", "HTTP_CLIENT_TIMEOUT", "soon")
        .validate()
        .unwrap_err()
        .0;
    assert!(e.contains("HTTP_CLIENT_TIMEOUT"), "{e}");
    let e = with("a", "IMAGE_ALLOW_PRIVATE_URLS", "maybe")
        .validate()
        .unwrap_err()
        .0;
    assert!(e.contains("IMAGE_ALLOW_PRIVATE_URLS"), "{e}");
    let r = with("a", "IMAGE_ALLOW_PRIVATE_URLS", "TRUE");
    assert!(r.validate().unwrap().images.allow_private);
}

#[test]
fn device_forms() {
    assert_eq!(parse_device("cuda:2").unwrap().ordinal, 2);
    assert_eq!(parse_device("CPU").unwrap().kind, DeviceKind::Cpu);
    assert!(parse_device("cuda:x").is_err());
}

#[test]
fn every_setting_is_declared_once_with_a_default_that_parses() {
    let mut vars = std::collections::HashSet::new();
    for s in SETTINGS {
        assert!(vars.insert(s.var), "{} declared twice", s.var);
        assert!(!s.help.trim().is_empty(), "{} has no help", s.var);
        assert_eq!(s.var, s.var.to_ascii_uppercase());
    }
    Settings::parse(&RawSettings::default()).unwrap();
    let help = render::help_text();
    assert!(SETTINGS.iter().all(|s| help.contains(s.var)));
}

/// The repository's root (the host crate's parent).
fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Compares a generated file (or part of one) with the repository's; `EMBER_BLESS=1`
/// rewrites the repository's instead.
fn agrees(path: &str, current: &str, generated: &str, whole: &str) {
    if current == generated {
        return;
    }
    if std::env::var_os("EMBER_BLESS").is_some() {
        std::fs::write(repo_file(path), whole).unwrap();
        return;
    }
    panic!(
        "{path} is out of date with the settings declared in host/src/config/mod.rs; run \
         `EMBER_BLESS=1 cargo test -p ember-host config` to regenerate it"
    );
}

#[test]
fn config_default_toml_is_the_declared_defaults() {
    let current = std::fs::read_to_string(repo_file(DEFAULT_FILE)).unwrap();
    let generated = render::default_toml();
    agrees(DEFAULT_FILE, &current, &generated, &generated);
    let mut r = RawSettings::default();
    r.merge_toml(&current, DEFAULT_FILE).unwrap();
    let parsed = |r: &RawSettings| format!("{:?}", Settings::parse(r).unwrap());
    assert_eq!(parsed(&r), parsed(&RawSettings::default()));
}

#[test]
fn the_readme_settings_tables_are_the_declared_settings() {
    const BEGIN: &str = "<!-- settings: generated from host/src/config/mod.rs -->\n";
    const END: &str = "<!-- settings end -->";
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let start = readme.find(BEGIN).expect("README has the settings marker") + BEGIN.len();
    let end = start
        + readme[start..]
            .find(END)
            .expect("README has the end marker");
    let generated = render::readme_tables();
    let whole = format!("{}{generated}{}", &readme[..start], &readme[end..]);
    agrees("README.md", &readme[start..end], &generated, &whole);
}
