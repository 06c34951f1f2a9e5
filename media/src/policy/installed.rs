//! The policy this process enforces, installed once at start-up: checking
//! a source against it, and the libavformat options an http(s) source is
//! opened with under it (no redirects).

use std::sync::RwLock;

use super::SourcePolicy;
use crate::error::MediaError;

/// libavformat options for opening an http(s) source under a policy:
/// FFmpeg follows redirects itself, without asking us, so a public URL could
/// redirect to `http://127.0.0.1/`; with `max_redirects = 0` a redirect is an
/// error instead.
pub const FFMPEG_HTTP_OPTIONS: &[(&str, &str)] = &[("max_redirects", "0")];

/// The policy this process enforces when it opens a source (see
/// [`install`]); none until installed.
pub(super) static INSTALLED: RwLock<Option<SourcePolicy>> = RwLock::new(None);

/// Make `policy` the one [`enforce`] checks against (call once at start-up,
/// with the process's `[sources]` config).
pub fn install(policy: SourcePolicy) {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(policy);
}

/// Whether a policy is installed (a node of a cluster; `panoptes analyze`
/// reads what its user names, with none).
pub fn installed() -> bool {
    INSTALLED.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Check `source` (normalised) against the installed policy, if any: what
/// the code that opens a source calls right before handing it to FFmpeg.
/// Blocking (may resolve a host name).
pub fn enforce(source: &str) -> Result<(), MediaError> {
    let policy = INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone();
    match policy {
        Some(p) => p.check(source),
        None => Ok(()),
    }
}

/// The extra libavformat options an http(s) source is opened with in this
/// process: [`FFMPEG_HTTP_OPTIONS`] (no redirects) once a policy is
/// installed, none otherwise.
pub fn http_options() -> &'static [(&'static str, &'static str)] {
    if installed() {
        FFMPEG_HTTP_OPTIONS
    } else {
        &[]
    }
}
