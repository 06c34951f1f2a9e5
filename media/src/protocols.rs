//! What FFmpeg may use to read a source: the protocols allowed by kind of
//! source, the demuxers allowed for network sources, and a URL's scheme as
//! FFmpeg reads it. Used by `source/` (what a source is opened with) and by
//! `checked_open.rs` (what each URL it opens may be).

use ffmpeg_next as ffmpeg;

/// The only FFmpeg protocols a source may use, by kind. A playlist (HLS) or
/// a `concat`/`ffconcat` list can name further URLs; FFmpeg checks
/// each against this list, so an HTTP playlist cannot make us read local
/// files, nor a local one make us fetch URLs.
pub(crate) const FILE_PROTOCOLS: &str = "file";
pub(crate) const HTTP_PROTOCOLS: &str = "http,https,tcp,tls,crypto,httpproxy";

/// Demuxers that open URLs of their own without going through the
/// context's `io_open`, so past `policy_io_open` (`checked_open.rs`): FFmpeg's DASH reader
/// (`avio_open2` for each segment, in the FFmpeg this is built with). A
/// network source may not be read with them.
pub(crate) const UNCHECKED_DEMUXERS: &[&str] = &["dash"];

/// The `format_whitelist` of a network source: every demuxer this FFmpeg
/// has but [`UNCHECKED_DEMUXERS`] (computed once).
pub(crate) fn network_formats() -> &'static str {
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

/// Characters FFmpeg accepts in a protocol name (`URL_SCHEME_CHARS`).
pub(crate) fn is_scheme_char(c: char) -> bool {
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
