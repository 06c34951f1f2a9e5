//! Environment overrides: every key of every section of `cluster.toml` can
//! be set as `PANOPTES_<SECTION>_<KEY>` (upper case: `PANOPTES_WORKER_CAPACITY=8`,
//! `PANOPTES_OBJECT_STORE_BUCKET=frames`, `PANOPTES_LIVE_DROP_POLICY=lag`).
//! They override the file (and the defaults); command-line flags override
//! them. The value is read as the key's type: text as is, numbers and
//! booleans (`true`/`false`, `1`/`0`, `yes`/`no`), lists as a TOML array
//! (`["/videos", "/srv"]`) or comma-separated text (`/videos,/srv`). An
//! empty value counts as not set. A variable that names a section but no key
//! of it is an error, as an unknown key in the file is; variables that name
//! no section (`PANOPTES_TOKEN`, `PANOPTES_COORDINATOR`) are the CLI's and
//! are left alone. `PANOPTES_MODELS_DIR` is kept as the older name of
//! `PANOPTES_WORKER_MODELS_DIR`.
use std::collections::BTreeMap;

use toml::{Table, Value};

use super::{Config, ConfigError};

/// The sections, as `Config` names them (the model registry is not one:
/// its tables are named by the user).
pub(super) const SECTIONS: &[&str] = &["cluster", "coordinator", "worker", "frames", "object_store", "live", "sources", "security", "log", "retention", "events", "alerts"];

/// An override found in the environment.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Override {
    pub var: String,
    pub section: &'static str,
    pub key: String,
}

/// The `PANOPTES_<SECTION>_<KEY>` variables of `env` that name a section.
pub(super) fn overrides(env: &BTreeMap<String, String>) -> Vec<(Override, &str)> {
    let mut out = Vec::new();
    for (var, raw) in env {
        if raw.is_empty() {
            continue;
        }
        let Some(rest) = var.strip_prefix("PANOPTES_") else { continue };
        // The longest section that the name starts with (none is a prefix of
        // another today, but `object_store` shows why the order matters).
        let found = SECTIONS
            .iter()
            .filter_map(|s| rest.strip_prefix(s.to_ascii_uppercase().as_str()).and_then(|k| k.strip_prefix('_')).map(|k| (*s, k)))
            .max_by_key(|(s, _)| s.len());
        let Some((section, key)) = found else { continue };
        if key.is_empty() {
            continue;
        }
        out.push((Override { var: var.clone(), section, key: key.to_ascii_lowercase() }, raw.as_str()));
    }
    if let Some(dir) = env.get("PANOPTES_MODELS_DIR").filter(|v| !v.is_empty()) {
        if env.get("PANOPTES_WORKER_MODELS_DIR").is_none_or(|v| v.is_empty()) {
            out.push((Override { var: "PANOPTES_MODELS_DIR".into(), section: "worker", key: "models_dir".into() }, dir.as_str()));
        }
    }
    out
}

/// Write the overrides of `env` into the file's `table`; their names, for
/// the messages of what fails afterwards.
pub(super) fn overlay(table: &mut Table, env: &BTreeMap<String, String>) -> Result<Vec<String>, ConfigError> {
    let found = overrides(env);
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let defaults = Table::try_from(Config::default()).expect("the defaults serialize");
    let mut applied = Vec::new();
    for (o, raw) in found {
        let default = defaults.get(o.section).and_then(|t| t.get(&o.key)).or_else(|| unset_type(o.section, &o.key));
        let value = read_value(raw, default).map_err(|m| ConfigError::Invalid(format!("{}: {m} ({}.{})", o.var, o.section, o.key)))?;
        let section = table.entry(o.section).or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(section) = section else {
            return Err(ConfigError::Invalid(format!("{}: `{}` in the config file is not a section", o.var, o.section)));
        };
        section.insert(o.key.clone(), value);
        applied.push(o.var);
    }
    Ok(applied)
}

/// `raw` as a value of the type the key's default has (or, for a key whose
/// default is "none", as TOML when it reads as such, else as text).
fn read_value(raw: &str, default: Option<&Value>) -> Result<Value, String> {
    let t = raw.trim();
    match default {
        Some(Value::String(_)) => Ok(Value::String(raw.to_string())),
        Some(Value::Integer(_)) => t.parse::<i64>().map(Value::Integer).map_err(|_| format!("expected a whole number, got '{t}'")),
        Some(Value::Float(_)) => t.parse::<f64>().map(Value::Float).map_err(|_| format!("expected a number, got '{t}'")),
        Some(Value::Boolean(_)) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got '{t}'")),
        },
        Some(Value::Array(_)) => Ok(as_toml(t).filter(Value::is_array).unwrap_or_else(|| {
            Value::Array(t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect())
        })),
        Some(Value::Table(_)) => as_toml(t).filter(Value::is_table).ok_or_else(|| format!("expected a TOML inline table, e.g. {{ key = \"value\" }}, got '{t}'")),
        Some(Value::Datetime(_)) | None => Ok(as_toml(t).unwrap_or_else(|| Value::String(raw.to_string()))),
    }
}

/// The type of the keys whose default is "none" (absent from the defaults'
/// TOML), by an example value.
fn unset_type(section: &str, key: &str) -> Option<&'static Value> {
    static STRING: Value = Value::String(String::new());
    static LIST: Value = Value::Array(Vec::new());
    match (section, key) {
        ("coordinator", "listen")
        | ("security", "tls_cert" | "tls_key" | "tls_ca" | "tokens_file" | "cluster_secret_file")
        | ("object_store", "url" | "endpoint" | "credentials_file")
        | ("worker", "onnxruntime_library")
        | ("events", "mqtt_url" | "webhook_secret_file") => Some(&STRING),
        ("sources", "file_dirs") => Some(&LIST),
        _ => None,
    }
}

fn as_toml(t: &str) -> Option<Value> {
    toml::from_str::<Table>(&format!("v = {t}")).ok().and_then(|mut v| v.remove("v"))
}

/// `message` with the overrides that were applied, named (never their
/// values: some are secrets).
pub(super) fn explain(message: String, applied: &[String]) -> String {
    if applied.is_empty() {
        message
    } else {
        format!("{} (environment overrides in effect: {})", message.trim_end().replace('\n', " "), applied.join(", "))
    }
}
