//! libavformat's open of a source with every URL it opens checked: the
//! source itself right before it connects, and each playlist, key and
//! segment an HLS playlist names (`policy_io_open`), each at the one address
//! the source policy checked (`policy::pin_nested`). The refusal that
//! explains a failed open is kept per thread (`take_refused_url`).
use ffmpeg_next as ffmpeg;

use crate::error::MediaError;
use crate::protocols::{url_scheme, HTTP_PROTOCOLS};

/// `avformat_open_input` with an optional explicit input format (a
/// device's demuxer) and an interrupt callback, then stream info. With
/// `checked_urls`, every URL libavformat opens for this input goes through
/// [`policy_io_open`] first: the source itself, right before it connects
/// (a second check, moments after the first), and every playlist, key and
/// segment an HLS playlist names, which the demuxer opens on its own (DASH
/// opens its segments past `io_open`: see [`UNCHECKED_DEMUXERS`]).
pub(crate) fn open_input(
    path: &str,
    format: Option<ffmpeg::format::format::Input>,
    options: ffmpeg::Dictionary,
    interrupted: impl FnMut() -> bool + Send + 'static,
    checked_urls: bool,
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    use ffmpeg::ffi;
    let cpath = std::ffi::CString::new(path).map_err(|_| ffmpeg::Error::InvalidData)?;
    crate::error::take_refused_url();
    // SAFETY: the context is allocated here and either handed to
    // `Input::wrap_with_interrupt` (which owns and closes it, and keeps the
    // callback's closure alive as long as the context) or freed by
    // avformat_open_input / avformat_close_input on failure; the options
    // dictionary is disowned for the call and owned again after it. The
    // `io_open` replaced is libavformat's default, kept in a static and
    // called by `policy_io_open` with the same arguments.
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(ffmpeg::Error::Other { errno: ffmpeg::error::ENOMEM });
        }
        let interrupt = ffmpeg::util::interrupt::new(Box::new(interrupted));
        (*ps).interrupt_callback = interrupt.interrupt;
        if checked_urls {
            // A fresh context's io_open is libavformat's default, the same
            // function for every context: the first one's is kept.
            let default = *DEFAULT_IO_OPEN.get_or_init(|| (*ps).io_open);
            if default.is_some() {
                (*ps).io_open = Some(policy_io_open);
            }
        }
        let fmt = format.map_or(std::ptr::null(), |f| f.as_ptr());
        let mut opts = options.disown();
        let res = ffi::avformat_open_input(&mut ps, cpath.as_ptr(), fmt as *mut _, &mut opts);
        ffmpeg::Dictionary::own(opts);
        if res < 0 {
            return Err(ffmpeg::Error::from(res));
        }
        let r = ffi::avformat_find_stream_info(ps, std::ptr::null_mut());
        if r < 0 {
            ffi::avformat_close_input(&mut ps);
            return Err(ffmpeg::Error::from(r));
        }
        Ok(ffmpeg::format::context::Input::wrap_with_interrupt(ps, interrupt.guard))
    }
}

type IoOpen = unsafe extern "C" fn(
    *mut ffmpeg::ffi::AVFormatContext,
    *mut *mut ffmpeg::ffi::AVIOContext,
    *const std::os::raw::c_char,
    std::os::raw::c_int,
    *mut *mut ffmpeg::ffi::AVDictionary,
) -> std::os::raw::c_int;

/// libavformat's own `io_open` (the same for every context), which
/// [`policy_io_open`] calls for every URL it lets through.
static DEFAULT_IO_OPEN: std::sync::OnceLock<Option<IoOpen>> = std::sync::OnceLock::new();

/// The `io_open` of an input opened with `checked_urls`: a URL the source
/// policy refuses is not opened (`EACCES`); any other goes to libavformat's
/// own. A playlist on an allowed server can name segments anywhere; without
/// this, a public playlist could make the cluster read its own network.
unsafe extern "C" fn policy_io_open(
    s: *mut ffmpeg::ffi::AVFormatContext,
    pb: *mut *mut ffmpeg::ffi::AVIOContext,
    url: *const std::os::raw::c_char,
    flags: std::os::raw::c_int,
    options: *mut *mut ffmpeg::ffi::AVDictionary,
) -> std::os::raw::c_int {
    use crate::policy::Pin;
    // SAFETY: libavformat passes a NUL-terminated URL.
    let u = unsafe { std::ffi::CStr::from_ptr(url) }.to_string_lossy().into_owned();
    // Never unwind into C.
    let verdict = std::panic::catch_unwind(|| crate::policy::pin_nested(&u)).unwrap_or_else(|_| {
        Err(MediaError::invalid(&u, "the source policy check failed"))
    });
    let pin = match verdict {
        Ok(pin) => pin,
        Err(e) => {
            let shown = crate::policy::redact(&u);
            tracing::warn!(url = %shown, "not opened: {}", e.reason());
            // The first refusal is kept: it is the one that explains the rest.
            crate::error::note_refused_url(|| {
                format!("the source names '{shown}' (a playlist entry, or where the source leads), which is not opened: {}", e.reason())
            });
            return -libc::EACCES;
        }
    };
    let Some(open) = DEFAULT_IO_OPEN.get().copied().flatten() else { return -libc::ENOSYS };
    // SAFETY: `options` is libavformat's, a valid (possibly null) dictionary pointer.
    let mut opts = unsafe { DictRef::new(options) };
    for (k, v) in pinned_options(&u, &pin, opts.get("headers").as_deref(), opts.get("verifyhost").is_some()) {
        opts.set(k, &v);
    }
    match pin {
        // FFmpeg would resolve the name again: "host name not found", as its own.
        Pin::NotFound => -libc::EIO,
        // SAFETY: libavformat's own io_open, with the arguments it gave us.
        Pin::AsWritten => unsafe { open(s, pb, url, flags, options) },
        Pin::At(p) => match std::ffi::CString::new(p.url) {
            // SAFETY: as above, with the URL of the checked address (copied
            // by libavformat; ours lives past the call).
            Ok(at) => unsafe { open(s, pb, at.as_ptr(), flags, options) },
            Err(_) => -libc::EINVAL,
        },
    }
}

/// The options FFmpeg opens `url` with under the source policy, beside the
/// URL [`crate::policy::pin_nested`] gave: redirects off for every http(s)
/// URL (an HLS segment does not inherit the source's `max_redirects`, and a
/// redirect is followed without asking `io_open`); for a URL whose host name
/// was replaced by its address, the name where the protocol sends it: the
/// `Host` header (replacing any, e.g. the one a segment inherits from its
/// playlist) and TLS's server name and certificate name (`verifyhost`). An
/// https URL written with an address (an HLS segment relative to a pinned
/// playlist) takes its TLS name from the `Host` header it inherits, so a
/// CDN that routes by server name still serves it.
fn pinned_options(url: &str, pin: &crate::policy::Pin, headers: Option<&str>, has_verifyhost: bool) -> Vec<(&'static str, String)> {
    use crate::policy::Pin;
    let (_, inner) = crate::policy::unwrap_crypto(url);
    let scheme = url_scheme(inner).unwrap_or_default();
    let http = scheme == "http" || scheme == "https";
    let tls = scheme == "https" || scheme == "rtmps";
    let mut out = Vec::new();
    if http {
        out.extend(crate::policy::http_options().iter().map(|(k, v)| (*k, v.to_string())));
    }
    /// The value of a `Host: VALUE` header line.
    fn host_value(l: &str) -> Option<&str> {
        l.split_once(':').filter(|(name, _)| name.trim().eq_ignore_ascii_case("host")).map(|(_, v)| v.trim())
    }
    match pin {
        Pin::At(p) => {
            if http {
                let others: String = headers
                    .unwrap_or("")
                    .split("\r\n")
                    .filter(|l| !l.is_empty() && host_value(l).is_none())
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                out.push(("headers", format!("Host: {}\r\n{others}", p.authority)));
            }
            if tls {
                out.push(("verifyhost", p.host.clone()));
            }
        }
        Pin::AsWritten if scheme == "https" && !has_verifyhost => {
            let name = headers.and_then(|h| h.split("\r\n").find_map(host_value)).map(crate::policy::host_of);
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                out.push(("verifyhost", name.to_string()));
            }
        }
        _ => {}
    }
    out
}

/// A libavformat dictionary owned by the caller (`AVDictionary **`).
struct DictRef(*mut *mut ffmpeg::ffi::AVDictionary);

impl DictRef {
    /// # Safety
    /// `p` is null or points to a valid (possibly null) dictionary pointer
    /// that outlives the `DictRef`.
    unsafe fn new(p: *mut *mut ffmpeg::ffi::AVDictionary) -> DictRef {
        DictRef(p)
    }

    fn get(&self, key: &str) -> Option<String> {
        let k = std::ffi::CString::new(key).ok()?;
        if self.0.is_null() {
            return None;
        }
        // SAFETY: a valid dictionary pointer (null is an empty one); the
        // value is copied before the dictionary can change.
        unsafe {
            let e = ffmpeg::ffi::av_dict_get(*self.0, k.as_ptr(), std::ptr::null(), 0);
            (!e.is_null()).then(|| std::ffi::CStr::from_ptr((*e).value).to_string_lossy().into_owned())
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        let (Ok(k), Ok(v)) = (std::ffi::CString::new(key), std::ffi::CString::new(value)) else { return };
        if self.0.is_null() {
            return;
        }
        // SAFETY: av_dict_set copies key and value into the caller's dictionary.
        unsafe {
            ffmpeg::ffi::av_dict_set(self.0, k.as_ptr(), v.as_ptr(), 0);
        }
    }
}

/// The Content-Type an HTTP server gives for `url`: a second request, made
/// only to explain why the first one's data is no video. `None` if it cannot
/// be had within a few seconds.
pub(crate) fn http_content_type(url: &str) -> Option<String> {
    use std::ffi::{CStr, CString};
    use std::ptr;
    // The same address and options as the open it explains: this request
    // goes through no `io_open`.
    let pin = crate::policy::pin_nested(url).ok()?;
    let c_url = match &pin {
        crate::policy::Pin::NotFound => return None,
        crate::policy::Pin::AsWritten => CString::new(url).ok()?,
        crate::policy::Pin::At(p) => CString::new(p.url.as_str()).ok()?,
    };
    let mut opts = ffmpeg::Dictionary::new();
    opts.set("protocol_whitelist", HTTP_PROTOCOLS);
    opts.set("rw_timeout", "5000000");
    for (k, v) in pinned_options(url, &pin, None, false) {
        opts.set(k, &v);
    }
    let mut opts = unsafe { opts.disown() };
    // SAFETY: plain libavformat calls; every pointer is either null or made
    // by libavformat, and freed here exactly once.
    unsafe {
        let mut io: *mut ffmpeg::ffi::AVIOContext = ptr::null_mut();
        let r = ffmpeg::ffi::avio_open2(
            &mut io,
            c_url.as_ptr(),
            ffmpeg::ffi::AVIO_FLAG_READ as _,
            ptr::null(),
            &mut opts,
        );
        ffmpeg::ffi::av_dict_free(&mut opts);
        if r < 0 || io.is_null() {
            return None;
        }
        let mut out: *mut u8 = ptr::null_mut();
        let got = ffmpeg::ffi::av_opt_get(
            io.cast(),
            c"mime_type".as_ptr(),
            ffmpeg::ffi::AV_OPT_SEARCH_CHILDREN as _,
            &mut out,
        );
        let mime = (got >= 0 && !out.is_null()).then(|| {
            CStr::from_ptr(out.cast())
                .to_string_lossy()
                .trim()
                .to_string()
        });
        ffmpeg::ffi::av_free(out.cast());
        ffmpeg::ffi::avio_closep(&mut io);
        mime.filter(|m| !m.is_empty())
    }
}
