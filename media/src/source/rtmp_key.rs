//! Noticing an RTMP publisher that names the wrong stream key.
//!
//! RTMP listen mode (a live push) does not refuse a publisher that names
//! another stream key: libavformat only logs "Unexpected stream KEY,
//! expecting KEY" and goes on. To refuse it, FFmpeg's log callback notes that
//! message for the thread that logged it (the thread opening or reading the
//! live input); [`take_wrong_stream_key`] reads it. Every other message goes
//! to FFmpeg's default callback, as before.

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
