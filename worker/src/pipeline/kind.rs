//! What a shard reads ([`ShardKind`]), decided once when its assignment
//! arrives: the rest of the pipeline matches on it instead of reading flags,
//! URL schemes or sentinel values.
use panoptes_proto::worker::{shard_assignment::Kind, ShardAssignment};

#[derive(Clone, Debug, PartialEq)]
pub enum ShardKind {
    /// Frames `[start_frame, end_frame)` of a probed file or URL, decoded
    /// from `seek` (the last keyframe at or before the resume frame, as
    /// (frame, pts); none: from the start). `pts0` is frame 0's timestamp;
    /// `fps` the stream's rate (0 when unknown).
    File { seek: Option<(u64, i64)>, pts0: i64, fps: f64 },
    /// A live RTMP push: the worker listens on the source URL for its
    /// publisher. Frames are numbered in arrival order, their timestamps
    /// start at `resume_timestamp`.
    Push { resume_timestamp: f64 },
    /// A live source the worker opens itself (rtsp://, rtmp://) and reopens
    /// when it drops.
    Pull { resume_timestamp: f64 },
    /// A capture device of this worker's (`v4l2://WORKER/dev/videoN`), opened like a pull
    /// source.
    Device { resume_timestamp: f64 },
}

impl ShardKind {
    /// The kind `a` names; an assignment without one (a coordinator of an
    /// incompatible build) is refused.
    pub fn of(a: &ShardAssignment) -> Result<Self, String> {
        Ok(match &a.kind {
            Some(Kind::File(f)) => ShardKind::File { seek: f.seek.as_ref().map(|s| (s.frame, s.pts)), pts0: f.pts0, fps: f.fps },
            Some(Kind::Push(l)) => ShardKind::Push { resume_timestamp: l.resume_timestamp.max(0.0) },
            Some(Kind::Pull(l)) if panoptes_common::source_url::device_source(&a.source).is_some() => {
                ShardKind::Device { resume_timestamp: l.resume_timestamp.max(0.0) }
            }
            Some(Kind::Pull(l)) => ShardKind::Pull { resume_timestamp: l.resume_timestamp.max(0.0) },
            None => return Err("the assignment says no kind of shard (file, push or pull): is the coordinator of another build?".into()),
        })
    }

    /// A live stream (push, pull or device): unbounded, cannot be replayed.
    pub fn is_live(&self) -> bool {
        !matches!(self, ShardKind::File { .. })
    }

    /// Where a live stream's timestamps start (0 for a file).
    pub fn resume_timestamp(&self) -> f64 {
        match self {
            ShardKind::File { .. } => 0.0,
            ShardKind::Push { resume_timestamp } | ShardKind::Pull { resume_timestamp } | ShardKind::Device { resume_timestamp } => *resume_timestamp,
        }
    }

    /// The stream's frame rate, when known (files).
    pub fn fps(&self) -> f64 {
        match self {
            ShardKind::File { fps, .. } => *fps,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use panoptes_proto::worker::{FileShard, KeyframeSeek, LiveShard};

    use super::*;

    fn with(kind: Option<Kind>, source: &str) -> ShardAssignment {
        ShardAssignment { source: source.into(), kind, ..Default::default() }
    }

    #[test]
    fn each_assignment_kind_becomes_one_shard_kind() {
        let file = FileShard { seek: Some(KeyframeSeek { frame: 48, pts: 96_000 }), pts0: 12, fps: 25.0 };
        assert_eq!(ShardKind::of(&with(Some(Kind::File(file)), "/v.mp4")).unwrap(), ShardKind::File { seek: Some((48, 96_000)), pts0: 12, fps: 25.0 });
        let from_start = FileShard { seek: None, ..Default::default() };
        assert!(matches!(ShardKind::of(&with(Some(Kind::File(from_start)), "/v.mp4")).unwrap(), ShardKind::File { seek: None, .. }));
        let live = LiveShard { resume_timestamp: 7.5 };
        assert_eq!(ShardKind::of(&with(Some(Kind::Push(live.clone())), "rtmp://0.0.0.0:1935/live/k")).unwrap(), ShardKind::Push { resume_timestamp: 7.5 });
        assert_eq!(ShardKind::of(&with(Some(Kind::Pull(live.clone())), "rtsp://cam/1")).unwrap(), ShardKind::Pull { resume_timestamp: 7.5 });
        assert_eq!(ShardKind::of(&with(Some(Kind::Pull(live)), "v4l2://w1/dev/video0")).unwrap(), ShardKind::Device { resume_timestamp: 7.5 });
        assert!(ShardKind::of(&with(None, "/v.mp4")).unwrap_err().contains("no kind"));
    }

    #[test]
    fn live_kinds_are_live_and_files_are_not() {
        assert!(!ShardKind::File { seek: None, pts0: 0, fps: 0.0 }.is_live());
        for k in [ShardKind::Push { resume_timestamp: 1.0 }, ShardKind::Pull { resume_timestamp: 1.0 }, ShardKind::Device { resume_timestamp: 1.0 }] {
            assert!(k.is_live() && k.resume_timestamp() == 1.0 && k.fps() == 0.0);
        }
    }
}
