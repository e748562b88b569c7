//! Where values come from: built-in defaults, then a TOML file, then the environment. Every
//! value is kept as written (a string) until `Settings::parse` checks it.

use super::{ConfigError, SETTINGS};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// The file read when `EMBER_CONFIG` is not set (if it exists).
pub const DEFAULT_FILE: &str = "config/default.toml";

/// Settings as written, by variable name, before parsing.
#[derive(Debug, Clone)]
pub struct RawSettings {
    values: BTreeMap<&'static str, String>,
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            values: SETTINGS.iter().map(|s| (s.var, s.default.into())).collect(),
        }
    }
}

impl RawSettings {
    /// Defaults, then the TOML file (`EMBER_CONFIG`, else `config/default.toml` if present),
    /// then the environment.
    pub fn load() -> Result<RawSettings, ConfigError> {
        let mut raw = RawSettings::default();
        let file = match std::env::var_os("EMBER_CONFIG") {
            Some(path) if !Path::new(&path).is_file() => {
                return Err(ConfigError(format!(
                    "invalid EMBER_CONFIG={:?}: no such file",
                    Path::new(&path).display()
                )))
            }
            Some(path) => Some(std::path::PathBuf::from(path)),
            None => Some(Path::new(DEFAULT_FILE).to_path_buf()).filter(|p| p.is_file()),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            raw.merge_toml(&text, &path.display().to_string())?;
        }
        raw.merge_env(|var| std::env::var_os(var))?;
        Ok(raw)
    }

    /// The value of a declared variable.
    pub fn get(&self, var: &str) -> &str {
        self.values.get(var).map_or("", String::as_str)
    }

    /// Sets a declared variable's value, as written.
    pub fn set(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        let slot = self
            .values
            .get_mut(var)
            .ok_or_else(|| ConfigError(format!("unknown setting {var}")))?;
        *slot = value.to_string();
        Ok(())
    }

    /// Takes every declared variable the environment sets, exactly as written (names are
    /// case-sensitive; an empty value counts as set).
    pub fn merge_env(
        &mut self,
        read: impl Fn(&str) -> Option<OsString>,
    ) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            if let Some(value) = read(setting.var) {
                let value = value.into_string().map_err(|v| {
                    ConfigError(format!(
                        "invalid {}={v:?}: the value is not valid UTF-8",
                        setting.var
                    ))
                })?;
                self.values.insert(setting.var, value);
            }
        }
        Ok(())
    }

    /// Takes the values of a TOML document whose keys are settings' lower-case names;
    /// numbers and booleans are taken as written, lists are joined with `;`. An unknown key is
    /// an error naming it (and the closest known key).
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("invalid configuration file {origin}: {e}")))?;
        for (key, value) in table {
            let Some(setting) = SETTINGS.iter().find(|s| s.key() == key) else {
                return Err(ConfigError(format!(
                    "invalid configuration file {origin}: unknown setting {key:?}{}",
                    closest(&key).map_or(String::new(), |k| format!(" (did you mean {k:?}?)"))
                )));
            };
            let written = as_written(&value).ok_or_else(|| {
                ConfigError(format!(
                    "invalid configuration file {origin}: {key} must be a string, number, \
                     boolean or list of them, not {}",
                    value.type_str()
                ))
            })?;
            self.values.insert(setting.var, written);
        }
        Ok(())
    }
}

/// A TOML value as the string an environment variable would carry.
fn as_written(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        // As figment wrote them: 8000.0 is "8000" (so whole-number settings take it), 0.5 "0.5".
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(as_written)
            .collect::<Option<Vec<_>>>()?
            .join(";"),
        toml::Value::Datetime(_) | toml::Value::Table(_) => return None,
    })
}

/// The known key nearest to a misspelt one, if any is near.
fn closest(key: &str) -> Option<String> {
    SETTINGS
        .iter()
        .map(|s| s.key())
        .map(|k| (strsim::levenshtein(key, &k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
