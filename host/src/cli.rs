//! Command-line arguments of `ember`, including the runpod SDK's local-testing flags.

use ember_plugin_api::DType;
use std::path::PathBuf;

/// What the process was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Serve (HTTP, and the RunPod worker loop when the platform's variables are set).
    Serve {
        /// `--rp_api_host`: overrides `HOST`.
        host: Option<String>,
        /// `--rp_api_port`: overrides `PORT`.
        port: Option<u16>,
    },
    /// Run one job and exit: the JSON given, or the file named (default `test_input.json`).
    TestInput(TestInput),
    /// `ember plugin check PLUGIN [--model DIR] [--device D] [--dtype T] [--skip-parity]`: the
    /// conformance checker.
    PluginCheck(crate::check::CheckArgs),
    /// Print the help.
    Help,
    /// Print the version.
    Version,
}

/// Where the one job of `--test-input` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TestInput {
    /// A JSON document given on the command line.
    Json(String),
    /// A file holding the JSON document.
    File(PathBuf),
}

/// Parses `plugin check PLUGIN [--model DIR] [--device D] [--dtype T] [--skip-parity]` (the words
/// after `plugin`).
fn parse_plugin(args: &[String]) -> Result<Command, String> {
    let usage = "usage: ember plugin check <path/to/libember_x.so> [--model DIR] [--device cpu|cuda|cuda:N] [--dtype auto|fp32|fp16|bf16|fp8|int8] [--skip-parity]";
    if args.first().map(String::as_str) != Some("check") {
        return Err(usage.into());
    }
    let mut plugin = None;
    let mut model = None;
    let mut device = crate::config::parse_device("cpu").map_err(|e| e.0)?;
    let mut dtype = DType::Auto;
    let mut skip_parity = false;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or(format!("{name} needs a value; {usage}"))
        };
        match name {
            "--skip-parity" if inline.is_none() => skip_parity = true,
            "--model" => model = Some(PathBuf::from(value()?)),
            "--device" => device = crate::config::parse_device(&value()?).map_err(|e| e.0)?,
            "--dtype" => dtype = crate::config::parse_dtype(&value()?).map_err(|e| e.0)?,
            flag if flag.starts_with("--") => {
                return Err(format!("unknown option {flag}; {usage}"))
            }
            path if plugin.is_none() => plugin = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra:?}; {usage}")),
        }
    }
    Ok(Command::PluginCheck(crate::check::CheckArgs {
        plugin: plugin.ok_or(usage)?,
        model,
        device,
        dtype,
        skip_parity,
    }))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.first().map(String::as_str) == Some("plugin") {
        return parse_plugin(&args[1..]);
    }
    let mut host = None;
    let mut port = None;
    let mut test = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        // The value of a flag: after `=`, or the next argument unless it is a flag.
        let mut value = |required: bool| -> Result<Option<String>, String> {
            if inline.is_some() {
                return Ok(inline.clone());
            }
            match args.get(i + 1) {
                Some(next) if !next.starts_with("--") => {
                    i += 1;
                    Ok(Some(next.clone()))
                }
                _ if required => Err(format!("{name} needs a value")),
                _ => Ok(None),
            }
        };
        match name {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            // The API is always served; the flag is accepted for docker-compose files
            // written for the worker (`--rp_serve_api --rp_api_host=0.0.0.0`).
            "--rp_serve_api" | "--rp-serve-api" => {}
            "--rp_api_host" | "--rp-api-host" => {
                let v = value(true)?.unwrap_or_default();
                // Checked as HOST is, so a bad address fails here and names the flag.
                host = Some(crate::config::parse_host(name, &v).map_err(|e| e.0)?);
            }
            "--rp_api_port" | "--rp-api-port" => {
                let v = value(true)?.unwrap_or_default();
                port = Some(
                    v.parse()
                        .map_err(|_| format!("{name} must be a port number, got {v:?}"))?,
                );
            }
            "--test-input" | "--test_input" => {
                test = Some(match value(false)? {
                    Some(v) if v.trim_start().starts_with('{') => TestInput::Json(v),
                    Some(path) => TestInput::File(path.into()),
                    None => TestInput::File("test_input.json".into()),
                });
            }
            other => return Err(format!("unknown argument {other:?}; see ember --help")),
        }
        i += 1;
    }
    Ok(match test {
        Some(t) => Command::TestInput(t),
        None => Command::Serve { host, port },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn forms() {
        assert_eq!(
            p(&[]).unwrap(),
            Command::Serve {
                host: None,
                port: None
            }
        );
        assert_eq!(
            p(&[
                "--rp_serve_api",
                "--rp_api_host=0.0.0.0",
                "--rp_api_port",
                "9000"
            ])
            .unwrap(),
            Command::Serve {
                host: Some("0.0.0.0".into()),
                port: Some(9000)
            }
        );
        assert_eq!(
            p(&["--test_input", "{\"input\": {}}"]).unwrap(),
            Command::TestInput(TestInput::Json("{\"input\": {}}".into()))
        );
        assert_eq!(
            p(&["--test-input"]).unwrap(),
            Command::TestInput(TestInput::File("test_input.json".into()))
        );
        assert_eq!(
            p(&["--test-input=job.json"]).unwrap(),
            Command::TestInput(TestInput::File("job.json".into()))
        );
        assert!(p(&["--rp_api_port", "x"]).unwrap_err().contains("port"));
        let e = p(&["--rp_api_host", "999.1.1.1"]).unwrap_err();
        assert!(e.contains("--rp_api_host"), "{e}");
        assert_eq!(
            p(&["--rp_api_host", "[::1]"]).unwrap(),
            Command::Serve {
                host: Some("::1".into()),
                port: None
            }
        );
        assert!(p(&["--bogus"]).unwrap_err().contains("unknown argument"));
        let Command::PluginCheck(c) = p(&["plugin", "check", "x.so", "--model=m"]).unwrap() else {
            panic!("expected plugin check")
        };
        assert_eq!((c.plugin, c.model), ("x.so".into(), Some("m".into())));
        assert!(!c.skip_parity, "parity is checked unless asked otherwise");
        let Command::PluginCheck(c) = p(&["plugin", "check", "--skip-parity", "x.so"]).unwrap()
        else {
            panic!("expected plugin check")
        };
        assert!(c.skip_parity);
        assert_eq!(c.plugin, PathBuf::from("x.so"));
        assert!(p(&["plugin", "check", "x.so", "--skip-parity=yes"]).is_err());
        assert!(p(&["plugin", "check"]).unwrap_err().contains("usage"));
        assert!(p(&["plugin", "check", "x.so", "--device", "gpu"]).is_err());
    }
}
