//! tracing set-up: text or JSON, level from `RUST_LOG` or the config.
//!
//! JSON lines are flat objects: `timestamp`, `level`, `message`, the event's
//! own fields and the fields of every span it happened in (e.g. a worker's
//! shard span gives `job_id` and `shard`), so `jq 'select(.job_id == "job-3")'`
//! finds everything about a job. An event's own field wins over a span's
//! field of the same name.
use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{fmt as tfmt, EnvFilter};

/// Install the global subscriber. `format` is `text` or `json`; `RUST_LOG`
/// overrides `level`. Logs go to stderr so stdout stays for results.
pub fn init(format: crate::config::LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sled=warn,openraft=warn,h2=warn,tower=warn,hyper=warn")));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tfmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let _ = if format == crate::config::LogFormat::Json {
        builder.fmt_fields(JsonFields::new()).event_format(FlatJson).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// One JSON object per event, with span fields flattened into it (see the
/// module doc). Spans' fields must be recorded with [`JsonFields`].
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut obj = Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        obj.insert("timestamp".into(), Value::String(ts));
        obj.insert("level".into(), Value::String(event.metadata().level().to_string()));
        // Outermost span first, so inner spans' fields win over outer ones.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else { continue };
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields.as_str()) {
                    obj.extend(m);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut obj));
        let line = serde_json::to_string(&Value::Object(obj)).map_err(|_| fmt::Error)?;
        writeln!(w, "{line}")
    }
}

/// Records an event's fields into a JSON object (numbers and booleans as
/// such, everything else as text).
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        let v = serde_json::Number::from_f64(v).map(Value::Number).unwrap_or_else(|| Value::String(v.to_string()));
        self.0.insert(f.name().into(), v);
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), v.to_string().into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_event_and_span_fields_at_the_top_level() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tfmt()
            .with_writer(move || out.clone())
            .with_max_level(tracing::Level::DEBUG)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let shard = tracing::info_span!("shard", job_id = "job-7", shard = 3u32);
            let _g = shard.enter();
            tracing::debug!(frame = 12u64, model = "colors", seconds = 0.5, ok = true, "frame analysed");
            let inner = tracing::info_span!("inner", shard = 4u32);
            let _h = inner.enter();
            tracing::warn!(error = %"boom", "inner event");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let a = &lines[0];
        assert_eq!(a["message"], "frame analysed");
        assert_eq!(a["level"], "DEBUG");
        assert_eq!((a["job_id"].as_str(), a["shard"].as_u64(), a["frame"].as_u64()), (Some("job-7"), Some(3), Some(12)), "{a}");
        assert_eq!((a["model"].as_str(), a["seconds"].as_f64(), a["ok"].as_bool()), (Some("colors"), Some(0.5), Some(true)));
        assert!(a["timestamp"].as_str().is_some_and(|t| !t.is_empty()));
        // The innermost span's field wins.
        let b = &lines[1];
        assert_eq!((b["job_id"].as_str(), b["shard"].as_u64(), b["error"].as_str()), (Some("job-7"), Some(4), Some("boom")), "{b}");
    }
}
