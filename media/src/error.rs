//! Errors of the media layer. Every message names the source it is about and
//! says in plain words what went wrong; [`MediaError::kind`] lets callers
//! branch on the class of failure without parsing text.

use ffmpeg_next as ffmpeg;

/// The class of a [`MediaError`], for callers that need to react differently
/// (e.g. retry network errors, reject a job for a missing file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file (or the HTTP resource) does not exist.
    NotFound,
    /// The source opened but has no (usable) video stream.
    NotAVideo,
    /// The data is not a recognised container, is truncated or damaged, or
    /// uses a codec this FFmpeg cannot decode.
    Corrupt,
    /// Connection refused / reset / timed out, HTTP errors other than 404,
    /// host name resolution failures.
    Network,
    /// An error while decoding a frame after the source opened fine.
    Decode,
    /// A URL scheme (or FFmpeg protocol) that is not supported.
    Unsupported,
    /// Local I/O problems other than "not found": permission denied, a
    /// directory, read errors.
    Io,
    /// A bad argument (empty source, frame step 0, …).
    InvalidArgument,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The source does not exist (`reason` e.g. "No such file or directory",
    /// "Server returned 404 Not Found").
    #[error("cannot open '{input}': {reason}")]
    NotFound { input: String, reason: String },

    #[error("'{input}' is not a video: {reason}")]
    NotAVideo { input: String, reason: String },

    #[error("'{input}': corrupt or unsupported data ({reason})")]
    Corrupt { input: String, reason: String },

    #[error("'{input}': {reason}")]
    Network { input: String, reason: String },

    #[error("'{input}': error decoding frame {frame}: {reason}")]
    Decode {
        input: String,
        frame: u64,
        reason: String,
    },

    #[error("unsupported source '{input}': {reason}")]
    Unsupported { input: String, reason: String },

    #[error("'{input}': {reason}")]
    Io { input: String, reason: String },

    #[error("'{input}': {reason}")]
    InvalidArgument { input: String, reason: String },
}

impl MediaError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MediaError::NotFound { .. } => ErrorKind::NotFound,
            MediaError::NotAVideo { .. } => ErrorKind::NotAVideo,
            MediaError::Corrupt { .. } => ErrorKind::Corrupt,
            MediaError::Network { .. } => ErrorKind::Network,
            MediaError::Decode { .. } => ErrorKind::Decode,
            MediaError::Unsupported { .. } => ErrorKind::Unsupported,
            MediaError::Io { .. } => ErrorKind::Io,
            MediaError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
        }
    }

    /// The source (as the user gave it, or normalised) the error is about.
    pub fn input(&self) -> &str {
        match self {
            MediaError::NotFound { input, .. }
            | MediaError::NotAVideo { input, .. }
            | MediaError::Corrupt { input, .. }
            | MediaError::Network { input, .. }
            | MediaError::Decode { input, .. }
            | MediaError::Unsupported { input, .. }
            | MediaError::Io { input, .. }
            | MediaError::InvalidArgument { input, .. } => input,
        }
    }

    /// What went wrong, without the source's name.
    pub fn reason(&self) -> &str {
        match self {
            MediaError::NotFound { reason, .. }
            | MediaError::NotAVideo { reason, .. }
            | MediaError::Corrupt { reason, .. }
            | MediaError::Network { reason, .. }
            | MediaError::Decode { reason, .. }
            | MediaError::Unsupported { reason, .. }
            | MediaError::Io { reason, .. }
            | MediaError::InvalidArgument { reason, .. } => reason,
        }
    }

    /// Network errors may go away on retry; the others will not.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Network
    }

    pub(crate) fn not_a_video(input: &str, reason: impl Into<String>) -> Self {
        MediaError::NotAVideo {
            input: input.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(input: &str, reason: impl Into<String>) -> Self {
        MediaError::Corrupt {
            input: input.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(input: &str, reason: impl Into<String>) -> Self {
        MediaError::InvalidArgument {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// Where an FFmpeg error happened; decides how an ambiguous code is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// avformat_open_input / avformat_find_stream_info.
    Open,
    /// av_read_frame.
    Read,
    /// Decoding frame `n` (the index the next frame would get).
    Decode(u64),
}

fn errno_reason(errno: i32) -> Option<&'static str> {
    use ffmpeg::error::*;
    Some(match errno {
        ECONNREFUSED => "connection refused",
        ECONNRESET => "connection reset by peer",
        ECONNABORTED => "connection aborted",
        ETIMEDOUT => "connection timed out",
        EHOSTUNREACH => "host unreachable",
        ENETUNREACH => "network unreachable",
        ENETDOWN => "network is down",
        EPIPE => "connection closed (broken pipe)",
        EADDRNOTAVAIL => "address not available",
        _ => return None,
    })
}

/// Translate an FFmpeg error into a [`MediaError`] about `input`.
pub(crate) fn from_ffmpeg(
    input: &str,
    network: bool,
    stage: Stage,
    e: ffmpeg::Error,
) -> MediaError {
    use ffmpeg::Error as E;
    // A URL the source led to was refused by the source policy on this
    // thread (a playlist's segment): that explains this error, whatever
    // FFmpeg made of the refusal.
    if let Some(refused) = take_refused_url() {
        return MediaError::invalid(input, refused);
    }
    let input_s = input.to_string();
    let text = e.to_string();
    match e {
        E::Other { errno } if errno == ffmpeg::error::ENOENT => MediaError::NotFound {
            input: input_s,
            reason: text,
        },
        E::HttpNotFound => MediaError::NotFound {
            input: input_s,
            reason: text,
        },
        E::HttpBadRequest
        | E::HttpUnauthorized
        | E::HttpForbidden
        | E::HttpOther4xx
        | E::HttpServerError => MediaError::Network {
            input: input_s,
            reason: text,
        },
        E::ProtocolNotFound => MediaError::Unsupported {
            input: input_s,
            reason: "protocol not supported by this FFmpeg build".into(),
        },
        E::DemuxerNotFound => MediaError::corrupt(input, "no demuxer for this format"),
        E::DecoderNotFound => MediaError::corrupt(input, "no decoder for this codec"),
        E::StreamNotFound => MediaError::not_a_video(input, "no video stream"),
        E::Exit => MediaError::Network {
            input: input_s,
            reason: "interrupted".into(),
        },
        E::Other { errno } if errno == ffmpeg::error::EACCES || errno == ffmpeg::error::EPERM => {
            MediaError::Io {
                input: input_s,
                reason: format!("cannot open: {text}"),
            }
        }
        E::Other { errno } if errno == ffmpeg::error::EISDIR => MediaError::Io {
            input: input_s,
            reason: "is a directory, not a regular file; give the path of a video file".into(),
        },
        E::Other { errno } if errno_reason(errno).is_some() => MediaError::Network {
            input: input_s,
            reason: errno_reason(errno).unwrap().to_string(),
        },
        E::Other { errno } if network && errno == ffmpeg::error::EIO && stage == Stage::Open => MediaError::Network {
            input: input_s,
            reason: "network I/O error (host name not resolved, or the connection failed)".into(),
        },
        // After the open: the transfer itself broke.
        E::Other { errno } if network && errno == ffmpeg::error::EIO => MediaError::Network {
            input: input_s,
            reason: "network I/O error while reading: the connection broke before the end of the video (the server closed it or stopped sending); try again, or check the server"
                .into(),
        },
        _ if network
            && stage != Stage::Open
            && !matches!(stage, Stage::Decode(_))
            && e != E::InvalidData =>
        {
            MediaError::Network {
                input: input_s,
                reason: format!("read failed ({text})"),
            }
        }
        _ => match stage {
            Stage::Decode(frame) => MediaError::Decode {
                input: input_s,
                frame,
                reason: text,
            },
            Stage::Read if matches!(e, E::Other { .. }) => MediaError::Io {
                input: input_s,
                reason: format!("read failed ({text})"),
            },
            _ => MediaError::Corrupt {
                input: input_s,
                reason: text,
            },
        },
    }
}

thread_local! {
    /// Why the source policy last refused a URL on this thread
    /// (`checked_open.rs`, `policy_io_open`): the open (or read) that failed
    /// on it reports this instead of FFmpeg's "permission denied".
    static REFUSED_URL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keep why a URL was refused on this thread; the first refusal is kept (it
/// explains the rest).
pub(crate) fn note_refused_url(why: impl FnOnce() -> String) {
    REFUSED_URL.with(|r| {
        r.borrow_mut().get_or_insert_with(why);
    });
}

/// The reason the last URL refused on this thread was refused, once.
pub(crate) fn take_refused_url() -> Option<String> {
    REFUSED_URL.with(|r| r.borrow_mut().take())
}
