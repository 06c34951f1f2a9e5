//! Capture devices (`v4l2://WORKER/dev/videoN`): checking the path and
//! opening the device with libavdevice.

use ffmpeg_next as ffmpeg;

use super::Source;
use crate::checked_open::open_input;
use crate::error::{from_ffmpeg, MediaError, Stage};

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

impl Source {
    /// Open a capture device (`v4l2://WORKER/dev/videoN`) with libavdevice's
    /// v4l2 demuxer; blocking waits end when `interrupted` returns true.
    pub(super) fn open_device(
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
}
