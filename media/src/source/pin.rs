//! Pinning a local source: it is opened and checked here, and FFmpeg opens
//! exactly that file (through `/proc/self/fd`), not whatever the path names
//! by then.

use super::Source;
use crate::error::MediaError;

impl Source {
    /// A local source, opened here before FFmpeg sees it: without blocking
    /// (opening a FIFO for reading would wait for a writer, pinning a
    /// thread past any probe timeout), then checked on the open handle, not
    /// on the path: it must be a regular file (not a FIFO, device or socket)
    /// and, as it resolves now, inside `sources.file_dirs`. FFmpeg then
    /// opens exactly this file through `/proc/self/fd`, whatever happens to
    /// the path (a symlink swapped in) meanwhile. `None` for URLs.
    pub(super) fn pin_local(&self) -> Result<Option<std::fs::File>, MediaError> {
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
pub(super) struct Alias {
    pub(super) path: String,
    dir: Option<std::path::PathBuf>,
}

impl Alias {
    pub(super) fn new(f: &std::fs::File, name: &str) -> Alias {
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
