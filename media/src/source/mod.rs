//! Source names: normalisation, validation, and opening them with libavformat.
//!
//! This file holds [`Source`] and its opening; the rest is split by concern:
//! `name` (normalising and validating names), `whitelist` (the protocols
//! and demuxers FFmpeg may use), `pin` (pinning a local file before FFmpeg
//! opens it), `device` (capture devices), `explain` (what a failed network
//! open does not say) and `rtmp_key` (RTMP publishers with a wrong key).

use ffmpeg_next as ffmpeg;

use crate::checked_open::open_input;
use crate::error::take_refused_url;
use crate::error::{from_ffmpeg, MediaError, Stage};

mod device;
mod explain;
mod name;
mod pin;
pub(crate) mod rtmp_key;
#[cfg(test)]
mod tests;

pub use device::{check_device_path, device_source};
pub(crate) use crate::protocols::url_scheme;
pub use name::normalize_source;
use name::{normalize, NETWORK_SCHEMES};
use pin::Alias;
pub(crate) use crate::protocols::HTTP_PROTOCOLS;
use crate::protocols::{network_formats, FILE_PROTOCOLS, UNCHECKED_DEMUXERS};

/// Read/write timeout for HTTP sources, in microseconds: a stalled server must
/// not hang a decode forever.
const HTTP_RW_TIMEOUT_US: &str = "30000000";

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
