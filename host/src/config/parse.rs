//! Value parsers: each takes the variable's name and its value as written, and either returns
//! the typed value or an error naming the variable, the value and what is allowed.

use super::ConfigError;
use ember_plugin_api::{DType, DeviceKind, DeviceRequest};
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The error for a value that is not allowed.
pub fn bad(var: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError(format!("invalid {var}={value:?}: {allowed}"))
}

/// Any text, trimmed.
pub fn text(_var: &str, value: &str) -> Result<String, ConfigError> {
    Ok(value.trim().to_string())
}

/// Text that may be left empty (`None`), trimmed.
pub fn optional_text(_var: &str, value: &str) -> Result<Option<String>, ConfigError> {
    Ok(Some(value.trim().to_string()).filter(|v| !v.is_empty()))
}

/// A path that may be left empty (`None`).
pub fn optional_path(var: &str, value: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(optional_text(var, value)?.map(PathBuf::from))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case); empty is false.
pub fn boolean(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(var, value, "expected true or false")),
    }
}

/// A number of seconds > 0, fractions allowed.
pub fn seconds(var: &str, value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(t) if t > 0.0 && t.is_finite() => Ok(Duration::from_secs_f64(t)),
        _ => Err(bad(var, value, "expected a number of seconds > 0")),
    }
}

/// An integer no smaller than `min`.
pub fn at_least<T: FromStr + PartialOrd + Copy + Display>(
    min: T,
) -> impl Fn(&str, &str) -> Result<T, ConfigError> {
    move |var, value| match value.trim().parse::<T>() {
        Ok(v) if v >= min => Ok(v),
        _ => Err(bad(var, value, &format!("expected an integer >= {min}"))),
    }
}

/// A count where 0 means one per CPU core.
pub fn count_or_cores(var: &str, value: &str) -> Result<usize, ConfigError> {
    Ok(match at_least(0usize)(var, value)? {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    })
}

/// A finite number no smaller than 1.
pub fn ratio(var: &str, value: &str) -> Result<f64, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(r) if r >= 1.0 && r.is_finite() => Ok(r),
        _ => Err(bad(var, value, "expected a number >= 1")),
    }
}

/// A TCP port.
pub fn port(var: &str, value: &str) -> Result<u16, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(var, value, "expected a port number 0-65535"))
}

/// A listen address: an IPv4 or IPv6 address (IPv6 optionally in brackets), or a host name.
pub fn host(var: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    let ip = match v.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').unwrap_or(v),
        None => v,
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    // A name's last label is never all digits: `999.1.1.1` is a bad address, not a name.
    let is_name = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(label_ok)
        && !v
            .rsplit('.')
            .next()
            .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()));
    if ip.parse::<std::net::IpAddr>().is_ok() {
        Ok(ip.to_string())
    } else if is_name {
        Ok(v.to_string())
    } else {
        Err(bad(
            var,
            value,
            "expected an IP address (0.0.0.0, ::, 127.0.0.1) or a host name",
        ))
    }
}

/// A plugin name: letters, digits, `_` and `-`, lower-cased.
pub fn backend(var: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad(
            var,
            value,
            "expected a plugin name such as torch, optimum, ctranslate2 or candle",
        ));
    }
    Ok(v)
}

/// Parses `DEVICE`: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(value: &str) -> Result<DeviceRequest, ConfigError> {
    device("DEVICE", value)
}

/// A device: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn device(var: &str, value: &str) -> Result<DeviceRequest, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    let err = || bad(var, value, "expected auto, cpu, cuda or cuda:N");
    let (kind, ordinal) = match v.as_str() {
        "auto" | "" => (DeviceKind::Auto, 0),
        "cpu" => (DeviceKind::Cpu, 0),
        "cuda" => (DeviceKind::Cuda, 0),
        other => {
            let n = other.strip_prefix("cuda:").ok_or_else(err)?;
            (DeviceKind::Cuda, n.parse().map_err(|_| err())?)
        }
    };
    Ok(DeviceRequest { kind, ordinal })
}

/// Parses one `DTYPES` entry.
pub fn parse_dtype(value: &str) -> Result<DType, ConfigError> {
    dtype("DTYPES", value)
}

/// A precision: `auto`, `fp32`, `fp16`, `bf16`, `fp8`, `int8` (and the long names).
pub fn dtype(var: &str, value: &str) -> Result<DType, ConfigError> {
    let v = value.trim().to_ascii_lowercase();
    let v = match v.as_str() {
        "float32" => "fp32",
        "float16" | "half" => "fp16",
        "bfloat16" => "bf16",
        other => other,
    };
    DType::ALL
        .into_iter()
        .find(|d| d.as_str() == v)
        .ok_or_else(|| {
            let all: Vec<&str> = DType::ALL.iter().map(|d| d.as_str()).collect();
            bad(
                var,
                value,
                &format!("each entry must be one of {}", all.join(", ")),
            )
        })
}

/// A batch size from 1 to 4096.
pub fn batch_size(var: &str, value: &str) -> Result<u32, ConfigError> {
    match value.trim().parse::<u32>() {
        Ok(v) if (1..=4096).contains(&v) => Ok(v),
        _ => Err(bad(
            var,
            value,
            "each entry must be an integer from 1 to 4096",
        )),
    }
}

/// A prompt name; `-` stands for the model's own default (`None`).
pub fn prompt(_var: &str, value: &str) -> Result<Option<String>, ConfigError> {
    Ok(Some(value.trim().to_string()).filter(|p| p != "-"))
}

/// Splits a `;`-list, dropping empty entries as the seed worker does.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A `;`-separated list, each entry parsed by `entry`; an error names the whole value.
pub fn list<T>(
    entry: impl Fn(&str, &str) -> Result<T, ConfigError>,
) -> impl Fn(&str, &str) -> Result<Vec<T>, ConfigError> {
    move |var, value| {
        split_list(value)
            .iter()
            .map(|item| {
                entry(var, item).map_err(|e| {
                    // Name the whole value, as written, with the entry's reason.
                    let prefix = bad(var, item, "").0;
                    bad(var, value, e.0.strip_prefix(&prefix).unwrap_or(&e.0))
                })
            })
            .collect()
    }
}
