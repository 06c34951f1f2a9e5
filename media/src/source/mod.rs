//! Source names: normalisation, validation, and opening them with libavformat.

use ffmpeg_next as ffmpeg;

use crate::checked_open::{http_content_type, open_input, take_refused_url};
use crate::error::{from_ffmpeg, MediaError, Stage};

/// URL schemes accepted besides plain local paths (`v4l2://WORKER/dev/videoN`
/// is a capture device on the named worker: see [`device_source`]).
const ALLOWED_SCHEMES: &[&str] = &["file", "http", "https", "rtmp", "rtmps", "rtsp", "v4l2"];
const NETWORK_SCHEMES: &[&str] = &["http", "https", "rtmp", "rtmps", "rtsp"];
const ACCEPTED: &str =
    "use a local path, file://, http://, https://, rtmp://, rtmps://, rtsp:// or v4l2://";

/// Read/write timeout for HTTP sources, in microseconds: a stalled server must
/// not hang a decode forever.
const HTTP_RW_TIMEOUT_US: &str = "30000000";

/// The only FFmpeg protocols a source may use, by kind. A playlist (HLS) or
/// a `concat`/`ffconcat` list can name further URLs; FFmpeg checks
/// each against this list, so an HTTP playlist cannot make us read local
/// files, nor a local one make us fetch URLs.
const FILE_PROTOCOLS: &str = "file";
pub(crate) const HTTP_PROTOCOLS: &str = "http,https,tcp,tls,crypto,httpproxy";

/// Characters FFmpeg accepts in a protocol name (`URL_SCHEME_CHARS`).
fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-.".contains(c)
}

/// The `scheme` of `scheme://…`, lower-cased, if the source has that form.
pub(crate) fn url_scheme(source: &str) -> Option<String> {
    let (scheme, _rest) = source.split_once("://")?;
    let first = scheme.chars().next()?;
    if !first.is_ascii_alphabetic() || !scheme.chars().all(is_scheme_char) {
        return None;
    }
    Some(scheme.to_ascii_lowercase())
}

/// The protocol FFmpeg would pick for `source` if it were handed the name
/// as is, when that is not `file`: `concat:a|b` → `concat`, `data:…` →
/// `data`, `subfile,,start,0,end,9,,:x` → `subfile` (FFmpeg's own rule,
/// `url_find_protocol`: scheme characters followed by `:`, or by `,` options
/// and a later `:`). `None` for `/abs/path`, `./cam:1.mp4` and `clip.mp4`.
fn ffmpeg_protocol_prefix(source: &str) -> Option<String> {
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
fn normalize(source: &str) -> Result<String, MediaError> {
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

pub use panoptes_common::source_url::device_source;

/// Check a device source's path: a `/dev/` path, without `..`.
pub fn check_device_path(source: &str, path: &str) -> Result<(), MediaError> {
    if !path.starts_with("/dev/") || path.split('/').any(|c| c == "..") {
        return Err(MediaError::invalid(source, "a capture device is a path under /dev/, e.g. v4l2://WORKER/dev/video0"));
    }
    Ok(())
}

/// The libavdevice demuxer for Video4Linux2 devices.
fn v4l2_format() -> Option<ffmpeg::format::format::Input> {
    ffmpeg::device::register_all();
    ffmpeg::device::input::video().find_map(|f| match f {
        ffmpeg::Format::Input(i) if i.name().split(',').any(|n| n == "v4l2") => Some(i),
        _ => None,
    })
}

/// Demuxers that open URLs of their own without going through the
/// context's `io_open`, so past [`policy_io_open`]: FFmpeg's DASH reader
/// (`avio_open2` for each segment, in the FFmpeg this is built with). A
/// network source may not be read with them.
const UNCHECKED_DEMUXERS: &[&str] = &["dash"];

/// The `format_whitelist` of a network source: every demuxer this FFmpeg
/// has but [`UNCHECKED_DEMUXERS`] (computed once).
fn network_formats() -> &'static str {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let mut names: Vec<String> = Vec::new();
        let mut opaque: *mut std::ffi::c_void = std::ptr::null_mut();
        // SAFETY: av_demuxer_iterate walks libavformat's static table of
        // demuxers; the names are static NUL-terminated strings.
        unsafe {
            loop {
                let f = ffmpeg::ffi::av_demuxer_iterate(&mut opaque);
                if f.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*f).name).to_string_lossy();
                // A name may list several ("mov,mp4,m4a,3gp,3g2,mj2").
                names.extend(name.split(',').filter(|n| !UNCHECKED_DEMUXERS.contains(n)).map(String::from));
            }
        }
        names.join(",")
    })
}

/// A normalised source, ready to hand to libavformat.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The name used in error messages (normalised; a path or a URL).
    pub name: String,
    /// What libavformat is given (local paths get a `file:` prefix).
    pub url: String,
    pub network: bool,
    /// The URL scheme, lower-cased (`None` for a local path).
    scheme: Option<String>,
    /// The `protocol_whitelist` FFmpeg opens it with (`None`: not restricted yet,
    /// for the live-stream protocols).
    protocols: Option<&'static str>,
}

impl Source {
    pub fn new(source: &str) -> Result<Self, MediaError> {
        let name = normalize(source)?;
        match url_scheme(&name) {
            // Errors and logs name a URL without its credentials or stream key.
            Some(scheme) => Ok(Source {
                network: NETWORK_SCHEMES.contains(&scheme.as_str()),
                protocols: (scheme == "http" || scheme == "https").then_some(HTTP_PROTOCOLS),
                scheme: Some(scheme),
                url: name.clone(),
                name: crate::policy::redact(&name),
            }),
            // A local path always goes to FFmpeg as `file:PATH`, so that no
            // part of the name is ever read as a protocol (`concat:…`, `pipe:…`).
            None => Ok(Source {
                url: format!("file:{name}"),
                name,
                network: false,
                scheme: None,
                protocols: Some(FILE_PROTOCOLS),
            }),
        }
    }

    fn is_http(&self) -> bool {
        matches!(self.scheme.as_deref(), Some("http" | "https"))
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
                reason: "is a directory, not a regular file; give the path of a video file".into(),
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
        self.open_until(extra, None)
    }

    /// [`Source::open`] whose every blocking wait inside FFmpeg (the open,
    /// and every later read of the returned input) ends with an error once
    /// `deadline` has passed: FFmpeg's interrupt callback, which it checks
    /// before every read and, while waiting on a socket, every 100 ms. The
    /// read/write timeout of HTTP sources ends a server that goes silent,
    /// but not one that keeps sending a byte now and then; this does.
    pub fn open_until(
        &self,
        extra: &[(&str, &str)],
        deadline: Option<std::time::Instant>,
    ) -> Result<ffmpeg::format::context::Input, MediaError> {
        self.open_checked(extra, move || deadline.is_some_and(|d| std::time::Instant::now() >= d))
    }

    /// [`Source::open_until`] with any test for "past the deadline" (a
    /// deadline that moves: see `Decoder::open_with_stall_limit`).
    pub fn open_checked(
        &self,
        extra: &[(&str, &str)],
        past: impl Fn() -> bool + Clone + Send + 'static,
    ) -> Result<ffmpeg::format::context::Input, MediaError> {
        crate::init();
        if self.scheme.as_deref() == Some("v4l2") {
            return self.open_device(extra, || false);
        }
        crate::policy::enforce(&self.name)?;
        self.precheck()?;
        // Kept open until FFmpeg has opened the same file through it.
        let pinned = self.pin_local()?;
        #[cfg(test)]
        tests::AFTER_CHECK.with(|hook| {
            if let Some(f) = hook.take() {
                f()
            }
        });
        let alias = pinned.as_ref().filter(|_| cfg!(target_os = "linux")).map(|f| Alias::new(f, &self.name));
        let url = match &alias {
            Some(a) => format!("file:{}", a.path),
            None => self.url.clone(),
        };
        let mut opts = ffmpeg::Dictionary::new();
        if let Some(p) = self.protocols {
            opts.set("protocol_whitelist", p);
        }
        if self.network {
            opts.set("format_whitelist", network_formats());
        }
        if self.is_http() {
            opts.set("rw_timeout", HTTP_RW_TIMEOUT_US);
            for (k, v) in crate::policy::http_options() {
                opts.set(k, v);
            }
        }
        self.set_extra(&mut opts, extra);
        let input = open_input(&url, None, opts, past.clone(), self.network).map_err(|e| {
            // A refused URL explains the error first: before the EINVAL
            // below is read as a demuxer not allowed.
            if let Some(refused) = take_refused_url() {
                return MediaError::invalid(&self.name, refused);
            }
            if self.network && matches!(e, ffmpeg::Error::Other { errno } if errno == libc::EINVAL) {
                return MediaError::Unsupported {
                    input: self.name.clone(),
                    reason: format!(
                        "FFmpeg would read it with a demuxer not allowed for network sources ({}: it fetches segments without the source policy's check, e.g. a DASH manifest); give the URL of a video file or an HLS playlist",
                        UNCHECKED_DEMUXERS.join(", ")
                    ),
                };
            }
            let e = from_ffmpeg(&self.name, self.network, Stage::Open, e);
            // Past the deadline, no further request to explain it.
            if past() { e } else { self.explain(e) }
        });
        drop(alias);
        drop(pinned);
        input
    }

    /// A local source, opened here before FFmpeg sees it: without blocking
    /// (opening a FIFO for reading would wait for a writer, pinning a
    /// thread past any probe timeout), then checked on the open handle, not
    /// on the path: it must be a regular file (not a FIFO, device or socket)
    /// and, as it resolves now, inside `sources.file_dirs`. FFmpeg then
    /// opens exactly this file through `/proc/self/fd`, whatever happens to
    /// the path (a symlink swapped in) meanwhile. `None` for URLs.
    fn pin_local(&self) -> Result<Option<std::fs::File>, MediaError> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        if self.scheme.is_some() {
            return Ok(None);
        }
        let io = |e: std::io::Error| MediaError::Io { input: self.name.clone(), reason: format!("cannot open: {e}") };
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC).open(&self.name).map_err(io)?;
        let t = f.metadata().map_err(io)?.file_type();
        let kind = if t.is_file() {
            None
        } else if t.is_fifo() {
            Some("a FIFO (named pipe)")
        } else if t.is_char_device() {
            Some("a character device")
        } else if t.is_block_device() {
            Some("a block device")
        } else if t.is_socket() {
            Some("a socket")
        } else if t.is_dir() {
            Some("a directory")
        } else {
            Some("not a file")
        };
        if let Some(kind) = kind {
            return Err(MediaError::invalid(
                &self.name,
                format!("is {kind}, not a regular file; give the path of a video file (or an http(s), rtsp or rtmp URL; v4l2:// for a camera)"),
            ));
        }
        if cfg!(target_os = "linux") {
            // The policy again, on what the handle is (the path may have changed since).
            if let Ok(real) = std::fs::read_link(pinned_path(&f)) {
                crate::policy::enforce(&real.display().to_string())?;
            }
        }
        Ok(Some(f))
    }

    /// The caller's options into `opts`. For `rtsp://`, a `rw_timeout` is also
    /// set as `timeout` (µs), RTSP's own socket I/O timeout: the RTSP demuxer
    /// ignores `rw_timeout` (for RTMP `timeout` means something else: the
    /// listen timeout, in seconds).
    fn set_extra(&self, opts: &mut ffmpeg::Dictionary, extra: &[(&str, &str)]) {
        for (k, v) in extra {
            opts.set(k, v);
        }
        // Over UDP, FFmpeg sends RTP/RTCP to whatever address the server's
        // SETUP reply names (`source=`), which no policy check sees: under a
        // policy, a pulled RTSP stream is read over its TCP connection.
        if self.scheme.as_deref() == Some("rtsp")
            && crate::policy::installed()
            && !extra.iter().any(|(k, _)| *k == "rtsp_transport" || *k == "rtsp_flags")
        {
            opts.set("rtsp_transport", "tcp");
        }
        if self.scheme.as_deref() == Some("rtsp") && !extra.iter().any(|(k, _)| *k == "timeout") {
            if let Some((_, v)) = extra.iter().find(|(k, _)| *k == "rw_timeout") {
                opts.set("timeout", v);
            }
        }
    }

    /// Add what a failed open of a network source does not say by itself:
    /// that the host name does not resolve, or that the HTTP server sent
    /// something that is not a video (its Content-Type).
    fn explain(&self, e: MediaError) -> MediaError {
        match e {
            MediaError::Network { input, reason } if reason.starts_with("network I/O error") => {
                match self.unresolved_host() {
                    Some(why) => MediaError::Network { input, reason: why },
                    None if self.is_http() && !crate::policy::http_options().is_empty() => MediaError::Network {
                        input,
                        reason: format!("{reason} (HTTP redirects are not followed: submit the URL the redirect points to)"),
                    },
                    None => MediaError::Network { input, reason },
                }
            }
            MediaError::Corrupt { input, reason } if self.is_http() => {
                let reason = match http_content_type(&self.url) {
                    Some(t) if !t.starts_with("video/") && t != "application/octet-stream" => {
                        format!("{reason}; the server sent Content-Type '{t}', not a video")
                    }
                    Some(t) => format!("{reason}; the server sent Content-Type '{t}'"),
                    None => reason,
                };
                MediaError::Corrupt { input, reason }
            }
            e => e,
        }
    }

    /// Open a capture device (`v4l2://WORKER/dev/videoN`) with libavdevice's
    /// v4l2 demuxer; blocking waits end when `interrupted` returns true.
    fn open_device(
        &self,
        extra: &[(&str, &str)],
        interrupted: impl FnMut() -> bool + Send + 'static,
    ) -> Result<ffmpeg::format::context::Input, MediaError> {
        use std::os::unix::fs::FileTypeExt;
        let (worker, path) = device_source(&self.name).unwrap_or((None, String::new()));
        check_device_path(&self.name, &path)?;
        let here = worker.map(|w| format!(" on worker {w}")).unwrap_or_default();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MediaError::NotFound {
                    input: self.name.clone(),
                    reason: format!("no device {path}{here}: is the camera plugged in? (`ls /dev/video*` on that machine lists its devices)"),
                })
            }
            Err(e) => return Err(MediaError::Io { input: self.name.clone(), reason: format!("cannot open {path}{here}: {e}") }),
            Ok(m) if !m.file_type().is_char_device() => {
                return Err(MediaError::invalid(&self.name, &format!("{path}{here} is not a capture device")))
            }
            Ok(_) => {}
        }
        let format = v4l2_format().ok_or_else(|| MediaError::Unsupported {
            input: self.name.clone(),
            reason: "this FFmpeg build has no v4l2 input device (libavdevice)".into(),
        })?;
        let mut opts = ffmpeg::Dictionary::new();
        self.set_extra(&mut opts, extra);
        open_input(&path, Some(format), opts, interrupted, false)
            .map_err(|e| from_ffmpeg(&self.name, false, Stage::Open, e))
            .map_err(|e| match e {
                MediaError::Io { input, reason } | MediaError::Corrupt { input, reason } | MediaError::NotFound { input, reason } => {
                    MediaError::Io { input, reason: format!("cannot capture from {path}{here}: {reason}") }
                }
                e => e,
            })
    }

    /// "host name 'x' not found (...)" when the URL's host does not resolve.
    fn unresolved_host(&self) -> Option<String> {
        use std::net::ToSocketAddrs;
        let host = crate::policy::host_of(crate::policy::url_parts(&self.url)?.host_port);
        if host.is_empty() {
            return Some("the URL names no host".into());
        }
        match (host, 0).to_socket_addrs().map(|mut a| a.next().is_some()) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "host name '{host}' not found (it resolves to no address)"
            )),
            Err(e) => Some(format!("host name '{host}' not found ({e})")),
        }
    }

    /// [`Source::open`] whose blocking waits (a listen, a read) end with an
    /// error as soon as `interrupted` returns true.
    pub fn open_interruptible(
        &self,
        extra: &[(&str, &str)],
        interrupted: impl FnMut() -> bool + Send + 'static,
    ) -> Result<ffmpeg::format::context::Input, MediaError> {
        crate::init();
        if self.scheme.as_deref() == Some("v4l2") {
            return self.open_device(extra, interrupted);
        }
        // A listening ingest (RTMP push) opens no connection of its own.
        let listen = extra.iter().any(|(k, v)| *k == "listen" && *v != "0");
        if !listen {
            crate::policy::enforce(&self.name)?;
        }
        self.precheck()?;
        let mut opts = ffmpeg::Dictionary::new();
        if let Some(p) = self.protocols {
            opts.set("protocol_whitelist", p);
        }
        if self.is_http() {
            for (k, v) in crate::policy::http_options() {
                opts.set(k, v);
            }
        }
        if self.network && !listen {
            opts.set("format_whitelist", network_formats());
        }
        self.set_extra(&mut opts, extra);
        // `from_ffmpeg` reports a URL the policy refused, if one was.
        open_input(&self.url, None, opts, interrupted, self.network && !listen)
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

    thread_local! {
        /// Run by [`Source::open_until`] on this thread once the local file
        /// is checked and opened, right before FFmpeg opens it.
        pub(super) static AFTER_CHECK: std::cell::Cell<Option<Box<dyn FnOnce()>>> = const { std::cell::Cell::new(None) };
    }

    /// A path swapped for a symlink to another file after it was checked
    /// and before FFmpeg opens it changes nothing: FFmpeg reads the file
    /// that was checked (through the handle), not what the path names now.
    /// (Opening the path again, as FFmpeg did before, read the other file.)
    #[test]
    fn a_path_swapped_after_the_check_is_not_what_ffmpeg_reads() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, size: &str| {
            let path = dir.path().join(name);
            let st = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=10"), "-frames:v", "5", "-c:v", "mpeg4"])
                .arg(&path)
                .status()
                .expect("run ffmpeg");
            assert!(st.success());
            path
        };
        let checked = make("clip.mp4", "64x48");
        let other = make("other.mp4", "32x24");
        let (path, target) = (checked.clone(), other.clone());
        AFTER_CHECK.with(|hook| {
            hook.set(Some(Box::new(move || {
                std::fs::remove_file(&path).unwrap();
                std::os::unix::fs::symlink(&target, &path).unwrap();
            })))
        });
        let info = crate::probe(checked.to_str().unwrap()).unwrap();
        assert!(std::fs::symlink_metadata(&checked).unwrap().file_type().is_symlink(), "the hook did not run");
        assert_eq!((info.width, info.height), (64, 48), "FFmpeg read the file swapped in");
        // The path itself now leads to the other file.
        assert_eq!(crate::probe(checked.to_str().unwrap()).unwrap().width, 32);
    }

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
        assert_eq!(
            normalize_source("rtmps://h/app/key").unwrap(),
            "rtmps://h/app/key"
        );
        assert_eq!(
            normalize_source("v4l2:///dev/video0").unwrap(),
            "v4l2:///dev/video0"
        );
        assert_eq!(device_source("v4l2://w1/dev/video0"), Some((Some("w1".into()), "/dev/video0".into())));
        assert_eq!(device_source("v4l2:///dev/video2"), Some((None, "/dev/video2".into())));
        assert_eq!(device_source("rtsp://h/s"), None);
        assert!(check_device_path("v4l2://w/dev/video0", "/dev/video0").is_ok());
        for bad in ["/etc/passwd", "/dev/../etc/passwd", "", "dev/video0"] {
            assert!(check_device_path("v4l2://w", bad).is_err(), "{bad}");
        }
        // A local path always reaches FFmpeg as `file:`, whatever its name.
        assert_eq!(Source::new("a:b.mp4").unwrap().url, "file:a:b.mp4");
        assert_eq!(Source::new("/x.mp4").unwrap().url, "file:/x.mp4");
        assert_eq!(
            Source::new("concat:/a|/b").unwrap().url,
            "file:concat:/a|/b"
        );
        assert!(!Source::new("/x").unwrap().network);
        assert!(Source::new("http://h/x").unwrap().network);
        assert_eq!(
            Source::new("http://h/x").unwrap().protocols,
            Some(HTTP_PROTOCOLS)
        );
        assert_eq!(
            Source::new("x.mp4").unwrap().protocols,
            Some(FILE_PROTOCOLS)
        );
    }

    #[test]
    fn ffmpeg_protocols_and_other_schemes_are_refused() {
        for (s, proto) in [
            ("concat:/a.mp4|/b.mp4", "concat"),
            ("subfile,,start,0,end,100,,:/etc/passwd", "subfile"),
            ("pipe:0", "pipe"),
            ("data:video/mp4;base64,AAAA", "data"),
            ("javascript:alert(1)", "javascript"),
            ("crypto:/x.mp4", "crypto"),
            ("async:http://h/x.mp4", "async"),
            ("CONCAT:x", "concat"),
            ("file:/etc/passwd", "file"),
        ] {
            let e = normalize_source(s).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{s}");
            assert!(
                e.to_string()
                    .contains(&format!("'{proto}:' is a URL scheme or FFmpeg protocol")),
                "{e}"
            );
        }
        for s in ["ftp://h/x.mp4", "gopher://h/x", "sftp://h/x", "tcp://h:1"] {
            assert!(
                normalize_source(s)
                    .unwrap_err()
                    .to_string()
                    .contains("is not supported"),
                "{s}"
            );
        }
        // Plain names with a ':' further on are fine; so are these forms of the same file.
        for s in [
            "./cam:1.mp4",
            "/data/cam:1.mp4",
            "clips/cam:1.mp4",
            "clip.mp4",
            "a b.mp4",
        ] {
            assert_eq!(normalize_source(s).unwrap(), s);
        }
        assert_eq!(ffmpeg_protocol_prefix("x,y.mp4"), None);
    }

    /// A web page served as the video: the error says what the server sent.
    #[test]
    fn an_http_page_is_named_by_its_content_type() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/page.html", listener.local_addr().unwrap());
        // Answers a bounded number of requests (the probe, then the explanation).
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = "<html><body>not a video</body></html>\n".repeat(50);
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        let e = crate::probe(&url).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        assert!(
            e.to_string()
                .ends_with("; the server sent Content-Type 'text/html', not a video)"),
            "{e}"
        );
    }

    /// RTSP's demuxer ignores rw_timeout: the same value goes as its `timeout`.
    #[test]
    fn rtsp_gets_the_read_timeout_as_its_own_timeout() {
        let extra = [("rw_timeout", "3000000"), ("probesize", "500000")];
        let opts = |url: &str, extra: &[(&str, &str)]| {
            let mut d = ffmpeg::Dictionary::new();
            Source::new(url).unwrap().set_extra(&mut d, extra);
            d.get("timeout").map(str::to_string)
        };
        assert_eq!(opts("rtsp://127.0.0.1:1/cam", &extra).as_deref(), Some("3000000"));
        assert_eq!(opts("rtmp://127.0.0.1:1/live/cam", &extra), None, "RTMP's timeout is its listen timeout");
        assert_eq!(opts("rtsp://127.0.0.1:1/cam", &[("rw_timeout", "1"), ("timeout", "7")]).as_deref(), Some("7"), "an explicit timeout wins");
    }

    #[test]
    fn an_unknown_host_is_named() {
        let e = crate::probe("http://no-such-host.invalid/clip.mp4").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Network);
        assert!(e.to_string().starts_with("'http://no-such-host.invalid/clip.mp4': host name 'no-such-host.invalid' not found ("), "{e}");
    }
}

/// RTMP listen mode (a live push) does not refuse a publisher that names
/// another stream key: libavformat only logs "Unexpected stream KEY,
/// expecting KEY" and goes on. To refuse it, FFmpeg's log callback notes that
/// message for the thread that logged it (the thread opening or reading the
/// live input); [`take_wrong_stream_key`] reads it. Every other message goes
/// to FFmpeg's default callback, as before.
pub(crate) mod rtmp_key {
    use std::cell::RefCell;
    use std::ffi::{c_char, c_int, c_void, CStr};

    use super::ffmpeg::ffi;

    thread_local! {
        static WRONG_KEY: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    const MARK: &[u8] = b"Unexpected stream ";

    /// Install the log callback (once per process).
    pub fn watch() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: `callback` matches av_log's callback signature and lives forever.
        ONCE.call_once(|| unsafe { ffi::av_log_set_callback(Some(callback)) });
    }

    unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: *mut ffi::__va_list_tag) {
        // Only the format string is looked at first: the arguments (`vl`) can
        // be consumed once, by the formatting below or by the default callback.
        if !fmt.is_null() && CStr::from_ptr(fmt).to_bytes().starts_with(MARK) {
            let mut line = [0 as c_char; 512];
            let mut prefix: c_int = 0;
            ffi::av_log_format_line2(avcl, level, fmt, vl, line.as_mut_ptr(), line.len() as c_int, &mut prefix);
            let text = CStr::from_ptr(line.as_ptr()).to_string_lossy().trim().to_string();
            WRONG_KEY.with(|k| {
                if let Ok(mut k) = k.try_borrow_mut() {
                    *k = Some(text);
                }
            });
            return;
        }
        ffi::av_log_default_callback(avcl, level, fmt, vl);
    }

    /// The wrong-stream-key message FFmpeg logged on this thread since the
    /// last call, if any.
    pub fn take_wrong_stream_key() -> Option<String> {
        WRONG_KEY.with(|k| k.try_borrow_mut().ok().and_then(|mut k| k.take()))
    }
}

/// `/proc/self/fd/N` of an open file: opening it opens that same file.
fn pinned_path(f: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", f.as_raw_fd())
}


/// The name FFmpeg opens a pinned file by: a symlink to `/proc/self/fd/N`
/// in a private directory (mode 0700), named with the source's extension,
/// which FFmpeg's format detection weighs (`x.bin` is read as text art, the
/// same bytes without the name as corrupt data). Nobody else can change it;
/// it is removed once FFmpeg has opened the file. Where it cannot be made,
/// `/proc/self/fd/N` itself.
struct Alias {
    path: String,
    dir: Option<std::path::PathBuf>,
}

impl Alias {
    fn new(f: &std::fs::File, name: &str) -> Alias {
        use std::os::unix::fs::DirBuilderExt;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let target = pinned_path(f);
        let dir = std::env::temp_dir().join(format!("panoptes-src-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let ext = std::path::Path::new(name).extension().and_then(|e| e.to_str()).filter(|e| e.len() <= 16 && e.chars().all(|c| c.is_ascii_alphanumeric()));
        let link = dir.join(match ext {
            Some(e) => format!("source.{e}"),
            None => "source".to_string(),
        });
        let made = std::fs::DirBuilder::new().mode(0o700).create(&dir).and_then(|()| std::os::unix::fs::symlink(&target, &link));
        match made {
            Ok(()) => Alias { path: link.display().to_string(), dir: Some(dir) },
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
                Alias { path: target, dir: None }
            }
        }
    }
}

impl Drop for Alias {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(dir);
        }
    }
}
