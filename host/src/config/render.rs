//! The settings' documentation, rendered from their declarations: `config/default.toml`, the
//! README's settings tables and `ember --help`'s list. Tests keep the files equal to these.

use super::declare::Setting;
use super::{GROUPS, SETTINGS};

/// Settings of one group (empty name: the top level), in declaration order.
fn in_group(group: &str) -> impl Iterator<Item = &'static Setting> + '_ {
    SETTINGS.iter().filter(move |s| s.group == group)
}

/// Every group as (name, doc), the top level first.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("", "Models and serving.\n")];
    all.extend(GROUPS.iter().copied());
    all
}

/// The default as TOML: numbers and booleans bare, everything else quoted.
fn toml_value(default: &str) -> String {
    let bare = default.parse::<i64>().is_ok()
        || (default.parse::<f64>().is_ok() && default.contains('.'))
        || default == "true"
        || default == "false";
    if bare {
        default.to_string()
    } else {
        toml::Value::String(default.to_string()).to_string()
    }
}

/// `config/default.toml`: every setting with its help and default.
pub fn default_toml() -> String {
    let mut out = String::from(
        "# ember's settings with their defaults. Every key can be overridden by the environment\n\
         # variable of the same name in upper case (MODEL_NAMES, BACKEND, ...), which wins over\n\
         # this file; EMBER_CONFIG names another file to use instead of this one. Unknown keys\n\
         # are refused. Per-model settings are ';'-separated strings (or TOML lists) matching\n\
         # model_names in length.\n\
         #\n\
         # Generated from the declarations in host/src/config/mod.rs; to change it, change them\n\
         # and run `EMBER_BLESS=1 cargo test -p ember-host config`.\n",
    );
    for (group, doc) in groups() {
        out.push_str(&format!(
            "\n# --- {}\n",
            doc.lines().next().unwrap_or("").trim()
        ));
        for s in in_group(group) {
            out.push('\n');
            for line in s.help.lines() {
                out.push_str(format!("# {}", line.trim()).trim_end());
                out.push('\n');
            }
            out.push_str(&format!("{} = {}\n", s.key(), toml_value(s.default)));
        }
    }
    out
}

/// The default as the README shows it.
fn shown(s: &Setting) -> String {
    if s.shown != s.default {
        s.shown.to_string()
    } else if s.default.is_empty() {
        "empty".to_string()
    } else {
        format!("`{}`", s.default)
    }
}

/// The README's settings tables, one per group.
pub fn readme_tables() -> String {
    let mut out = String::new();
    for (group, doc) in groups() {
        out.push_str(&format!(
            "\n**{}**\n\n| Variable | Default | Meaning |\n|---|---|---|\n",
            doc.lines()
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches('.')
        ));
        for s in in_group(group) {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                s.var,
                shown(s),
                s.help_paragraph().replace('|', "\\|")
            ));
        }
    }
    out.push('\n');
    out
}

/// `ember --help`'s list of settings, wrapped for a terminal.
pub fn help_text() -> String {
    let mut out = String::new();
    for (group, doc) in groups() {
        out.push_str(&format!("\n{}\n", doc.lines().next().unwrap_or("").trim()));
        for s in in_group(group) {
            let default = shown(s).replace('`', "");
            out.push_str(&format!("  {} (default: {default})\n", s.var));
            let mut line = String::from("     ");
            for word in s.help_paragraph().replace('`', "").split_whitespace() {
                if line.len() + 1 + word.len() > 92 {
                    out.push_str(&line);
                    out.push('\n');
                    line = String::from("     ");
                }
                line.push(' ');
                line.push_str(word);
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
