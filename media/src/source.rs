//! Source names: normalisation, validation, and opening them with libavformat.

use ffmpeg_next as ffmpeg;

use crate::error::{from_ffmpeg, MediaError, Stage};

/// URL schemes accepted besides plain local paths.
const ALLOWED_SCHEMES: &[&str] = &["file", "http", "https", "rtmp", "rtsp"];
const NETWORK_SCHEMES: &[&str] = &["http", "https", "rtmp", "rtsp"];

/// Read/write timeout for HTTP sources, in microseconds: a stalled server must
/// not hang a decode forever.
const HTTP_RW_TIMEOUT_US: &str = "30000000";

/// The `scheme` of `scheme://…`, lower-cased, if the source has that form.
fn url_scheme(source: &str) -> Option<String> {
    let (scheme, rest) = source.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let _ = rest;
    Some(scheme.to_ascii_lowercase())
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
/// `http(s)://`, `rtmp://` and `rtsp://` URLs as given. Any other `scheme://`
/// is refused with [`MediaError::Unsupported`].
///
/// A string without `://` is always a local path, even if it contains a colon
/// (`clip:1.mp4`, `concat:a|b`): it is opened as a file, never as one of
/// FFmpeg's other protocols.
pub fn normalize_source(source: &str) -> Result<String, MediaError> {
    if source.trim().is_empty() {
        return Err(MediaError::invalid(source, "empty source name"));
    }
    let Some(scheme) = url_scheme(source) else {
        return Ok(source.to_string());
    };
    if !ALLOWED_SCHEMES.contains(&scheme.as_str()) {
        return Err(MediaError::Unsupported {
            input: source.to_string(),
            reason: format!(
                "URL scheme '{scheme}://' is not supported (use a local path, file://, http://, https://, rtmp:// or rtsp://)"
            ),
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

/// A normalised source, ready to hand to libavformat.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The name used in error messages (normalised; a path or a URL).
    pub name: String,
    /// What libavformat is given (local paths with a `:` get a `file:` prefix).
    pub url: String,
    pub network: bool,
}

impl Source {
    pub fn new(source: &str) -> Result<Self, MediaError> {
        let name = normalize_source(source)?;
        match url_scheme(&name) {
            Some(scheme) => Ok(Source {
                network: NETWORK_SCHEMES.contains(&scheme.as_str()),
                url: name.clone(),
                name,
            }),
            None => {
                let url = if name.contains(':') {
                    format!("file:{name}")
                } else {
                    name.clone()
                };
                Ok(Source {
                    name,
                    url,
                    network: false,
                })
            }
        }
    }

    fn is_http(&self) -> bool {
        let lower = self.url.to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    }

    /// Check a local file before FFmpeg sees it, for clear messages on the
    /// common mistakes (missing, directory, empty).
    fn precheck(&self) -> Result<(), MediaError> {
        if self.network {
            return Ok(());
        }
        match std::fs::metadata(&self.name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MediaError::NotFound {
                input: self.name.clone(),
                reason: "No such file or directory".into(),
            }),
            Err(e) => Err(MediaError::Io {
                input: self.name.clone(),
                reason: format!("cannot open: {e}"),
            }),
            Ok(m) if m.is_dir() => Err(MediaError::Io {
                input: self.name.clone(),
                reason: "is a directory, not a video file".into(),
            }),
            Ok(m) if m.is_file() && m.len() == 0 => {
                Err(MediaError::corrupt(&self.name, "empty file, 0 bytes"))
            }
            Ok(_) => Ok(()),
        }
    }

    /// Open with libavformat (and read stream info), with `extra` options
    /// layered over our defaults.
    pub fn open(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<ffmpeg::format::context::Input, MediaError> {
        crate::init();
        self.precheck()?;
        let mut opts = ffmpeg::Dictionary::new();
        if self.is_http() {
            opts.set("rw_timeout", HTTP_RW_TIMEOUT_US);
        }
        for (k, v) in extra {
            opts.set(k, v);
        }
        ffmpeg::format::input_with_dictionary(&self.url, opts)
            .map_err(|e| from_ffmpeg(&self.name, self.network, Stage::Open, e))
    }
}

/// Index of the first video stream (attached pictures such as cover art do
/// not count).
///
/// FFmpeg's text-art "video" demuxers (tty for `.ans`/`.nfo`, bintext for
/// `.bin`/`.adf`/`.idf`/`.xbin`) accept almost any bytes by file extension and
/// render them as text; such a stream is not a video, and the source is
/// refused as [`MediaError::NotAVideo`].
pub(crate) fn first_video_stream(
    input: &ffmpeg::format::context::Input,
    name: &str,
) -> Result<usize, MediaError> {
    let mut saw_cover = false;
    for stream in input.streams() {
        if stream.parameters().medium() != ffmpeg::media::Type::Video {
            continue;
        }
        if stream
            .disposition()
            .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
        {
            saw_cover = true;
            continue;
        }
        use ffmpeg::codec::Id;
        let id = stream.parameters().id();
        if matches!(id, Id::ANSI | Id::BINTEXT | Id::XBIN | Id::IDF) {
            return Err(MediaError::not_a_video(
                name,
                format!(
                    "no video stream (FFmpeg reads the data as '{}' text art)",
                    id.name()
                ),
            ));
        }
        return Ok(stream.index());
    }
    let what = if input.streams().count() == 0 {
        "no streams at all".to_string()
    } else if saw_cover {
        "no video stream (only an attached cover picture)".to_string()
    } else {
        let kinds: Vec<String> = input
            .streams()
            .map(|s| format!("{:?}", s.parameters().medium()).to_lowercase())
            .collect();
        format!("no video stream (streams: {})", kinds.join(", "))
    };
    Err(MediaError::not_a_video(name, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise() {
        assert_eq!(normalize_source("file:///a/b.mp4").unwrap(), "/a/b.mp4");
        assert_eq!(
            normalize_source("file://localhost/a/b%20c.mp4").unwrap(),
            "/a/b c.mp4"
        );
        assert_eq!(normalize_source("rel/x.mp4").unwrap(), "rel/x.mp4");
        assert_eq!(normalize_source("/abs/x.mp4").unwrap(), "/abs/x.mp4");
        assert_eq!(
            normalize_source("http://h/x.mp4").unwrap(),
            "http://h/x.mp4"
        );
        assert_eq!(
            normalize_source("HTTPS://h/x.mp4").unwrap(),
            "HTTPS://h/x.mp4"
        );
        assert_eq!(
            normalize_source("rtmp://h/app/key").unwrap(),
            "rtmp://h/app/key"
        );
        assert_eq!(normalize_source("rtsp://h/s").unwrap(), "rtsp://h/s");
        let e = normalize_source("gopher://x").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(e.to_string().contains("'gopher://'"), "{e}");
        assert!(normalize_source("file://otherhost/x").is_err());
        assert!(normalize_source("").is_err());
        assert_eq!(Source::new("a:b.mp4").unwrap().url, "file:a:b.mp4");
        assert!(!Source::new("/x").unwrap().network);
        assert!(Source::new("http://h/x").unwrap().network);
    }
}
