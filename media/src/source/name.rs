//! Source names: normalising them (`file://` URLs to paths) and refusing
//! URL schemes and FFmpeg protocol prefixes that are not video sources.

#[cfg(doc)]
use super::{device_source, Source};
use crate::error::MediaError;
use crate::protocols::{is_scheme_char, url_scheme};

/// URL schemes accepted besides plain local paths (`v4l2://WORKER/dev/videoN`
/// is a capture device on the named worker: see [`device_source`]).
const ALLOWED_SCHEMES: &[&str] = &["file", "http", "https", "rtmp", "rtmps", "rtsp", "v4l2"];
pub(super) const NETWORK_SCHEMES: &[&str] = &["http", "https", "rtmp", "rtmps", "rtsp"];
const ACCEPTED: &str =
    "use a local path, file://, http://, https://, rtmp://, rtmps://, rtsp:// or v4l2://";


/// The protocol FFmpeg would pick for `source` if it were handed the name
/// as is, when that is not `file`: `concat:a|b` → `concat`, `data:…` →
/// `data`, `subfile,,start,0,end,9,,:x` → `subfile` (FFmpeg's own rule,
/// `url_find_protocol`: scheme characters followed by `:`, or by `,` options
/// and a later `:`). `None` for `/abs/path`, `./cam:1.mp4` and `clip.mp4`.
pub(super) fn ffmpeg_protocol_prefix(source: &str) -> Option<String> {
    let len = source
        .find(|c: char| !is_scheme_char(c))
        .unwrap_or(source.len());
    let (prefix, rest) = source.split_at(len);
    if prefix.is_empty() {
        return None;
    }
    if rest.starts_with(':') || (rest.starts_with(',') && rest[1..].contains(':')) {
        return Some(prefix.to_ascii_lowercase());
    }
    None
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Normalise a user source: `file:///a/b.mp4` → `/a/b.mp4` (percent-escapes
/// decoded, `file://localhost/…` accepted); local paths are returned as given;
/// `http(s)://`, `rtmp(s)://`, `rtsp://` and `v4l2://` URLs as given. Any other
/// `scheme://` is refused with [`MediaError::Unsupported`].
///
/// So is a name that FFmpeg would read as one of its own protocols
/// (`concat:a|b`, `subfile,,start,0,end,9,,:x`, `pipe:0`, `data:…`,
/// `crypto:…`, `javascript:…`): those read other files, pipes or inline data,
/// and are never a video source. A local file whose name really starts like
/// that is given as `./concat:a.mp4` or by its absolute path.
pub fn normalize_source(source: &str) -> Result<String, MediaError> {
    let name = normalize(source)?;
    if url_scheme(&name).is_none() {
        if let Some(proto) = ffmpeg_protocol_prefix(&name) {
            return Err(MediaError::Unsupported {
                input: source.to_string(),
                reason: format!(
                    "'{proto}:' is a URL scheme or FFmpeg protocol, not a video source ({ACCEPTED}; \
                     a local file whose name starts with '{proto}:' is given as './{source}' or by its absolute path)"
                ),
            });
        }
    }
    Ok(name)
}

/// [`normalize_source`] without the check for FFmpeg protocol prefixes: what
/// [`Source::new`] uses, so that any local name (even `concat:a|b`) is opened
/// as a file, never as a protocol.
pub(super) fn normalize(source: &str) -> Result<String, MediaError> {
    if source.trim().is_empty() {
        return Err(MediaError::invalid(source, "empty source name"));
    }
    let Some(scheme) = url_scheme(source) else {
        return Ok(source.to_string());
    };
    if !ALLOWED_SCHEMES.contains(&scheme.as_str()) {
        return Err(MediaError::Unsupported {
            input: source.to_string(),
            reason: format!("URL scheme '{scheme}://' is not supported ({ACCEPTED})"),
        });
    }
    if scheme != "file" {
        return Ok(source.to_string());
    }
    // file://[host]/path
    let rest = &source["file://".len()..];
    let path = if rest.starts_with('/') {
        rest
    } else if let Some(p) = rest.strip_prefix("localhost") {
        if !p.starts_with('/') {
            return Err(MediaError::invalid(
                source,
                "malformed file:// URL (expected file:///absolute/path)",
            ));
        }
        p
    } else {
        return Err(MediaError::Unsupported {
            input: source.to_string(),
            reason: "file:// URLs naming a remote host are not supported (expected file:///absolute/path)".into(),
        });
    };
    let path = percent_decode(path)
        .ok_or_else(|| MediaError::invalid(source, "malformed percent-escape in file:// URL"))?;
    Ok(path)
}
