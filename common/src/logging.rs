//! tracing set-up: text or JSON, level from `RUST_LOG` or the config.
use tracing_subscriber::{fmt, EnvFilter};

/// Install the global subscriber. `format` is `text` or `json`; `RUST_LOG`
/// overrides `level`. Logs go to stderr so stdout stays for results.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sled=warn,openraft=warn,h2=warn,tower=warn,hyper=warn")));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
